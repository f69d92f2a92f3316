"""The offline render: what a reviewer reads before `pulumi up`, and what the validators check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.conftest import ADMIN, system_tool
from tools import render
from tools.harness import run_fixture_stack

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module", params=["dev", "prod"])
def rendered(request, tmp_path_factory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp(f"render-{request.param}")
    render.render(run_fixture_stack(request.param, ADMIN), out)
    return request.param, out


def test_render_writes_every_kind_of_artifact(rendered) -> None:
    stack, out = rendered
    assert (out / "resources.md").read_text().startswith(f"# Resources of stack `{stack}`")
    workers = 3 if stack == "prod" else 2
    assert len(list((out / "userdata").glob("*.yaml"))) == 2 + workers  # GitLab, master, workers
    assert (out / "steps" / "gitops-k8s-master-init.sh").exists()
    assert (out / "gitlab" / ".gitlab-ci.yml").exists()
    assert (out / "gitlab" / "kubernetes" / "deployment.yml").exists()
    assert list((out / "kubernetes").glob("*.yaml"))


def test_render_never_writes_a_secret(rendered) -> None:
    stack, out = rendered
    run = run_fixture_stack(stack, ADMIN)
    secrets = [run.outputs[key] for key in run.secret_outputs]
    assert len(secrets) >= 4
    text = "\n".join(path.read_text() for path in out.rglob("*") if path.is_file())
    for value in secrets:
        assert str(value) not in text
    assert "PRIVATE KEY-----\nM" not in text and "BEGIN OPENSSH PRIVATE KEY-----\nb3" not in text


def test_rendered_user_data_passes_cloud_init_schema(rendered) -> None:
    _, out = rendered
    cloud_init = system_tool("cloud-init", "apt-get install --no-install-recommends cloud-init")
    for path in sorted((out / "userdata").glob("*.yaml")):
        result = subprocess.run([cloud_init, "schema", "--config-file", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{path.name}: {result.stdout}{result.stderr}"


def test_rendered_steps_pass_shellcheck(rendered) -> None:
    _, out = rendered
    steps = sorted((out / "steps").glob("*.sh"))
    assert len(steps) >= 8
    result = subprocess.run([str(VENV_BIN / "shellcheck"), *map(str, steps)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_rendered_manifests_pass_the_kubernetes_schema(rendered) -> None:
    stack, out = rendered
    minor = run_fixture_stack(stack, ADMIN).config["gitops:kubernetesVersion"]
    paths = [*(out / "kubernetes").glob("*.yaml"), *(out / "gitlab" / "kubernetes").glob("*")]
    checked = 0
    for path in paths:
        document = yaml.safe_load(path.read_text())
        if "fluxcd.io" in document["apiVersion"] or document["kind"] == "ConfigFile":
            continue  # custom resources: not in the Kubernetes schemas (tests/test_flux.py checks them)
        kubernetes_validate.validate(document, f"{minor}.0", strict=True)
        checked += 1
    assert checked >= 6


def test_rendered_pipeline_passes_the_gitlab_ci_schema(rendered) -> None:
    _, out = rendered
    result = subprocess.run(
        [
            str(VENV_BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.gitlab-ci",
            str(out / "gitlab" / ".gitlab-ci.yml"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_render_command_reports_bad_config(tmp_path: Path, capsys) -> None:
    assert render.main(["--stack", "dev", "--out", str(tmp_path), "--set", "workerCount=0"]) == 1
    assert "workerCount: got 0" in capsys.readouterr().err
    assert render.main(["--stack", "dev", "--out", str(tmp_path), "--set", "workerCount=3"]) == 0
    assert (tmp_path / "userdata" / "gitops-k8s-worker3.yaml").exists()
