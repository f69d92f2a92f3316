"""The offline render: what a reviewer reads before `pulumi up`, and what the validators check."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.conftest import ADMIN, system_tool
from tools import render
from tools.harness import FIXTURE_STACKS, ROOT, run_fixture_stack

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module", params=["dev", "prod"])
def rendered(request, tmp_path_factory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp(f"render-{request.param}")
    render.render(run_fixture_stack(request.param, ADMIN), out)
    return request.param, out


def test_render_writes_every_kind_of_artifact(rendered) -> None:
    stack, out = rendered
    assert (out / "resources.md").read_text().startswith(f"# Resources of stack `{stack}`")
    assert (out / "index.md").read_text().startswith(f"# Render of stack `{stack}`")
    workers = 3 if stack == "prod" else 2
    control_planes = 3 if stack == "prod" else 1  # prod's control plane is highly available
    # GitLab, the control-plane nodes, workers, the runner manager, and the CI job VMs' launch template.
    assert len(list((out / "userdata").glob("*.yaml"))) == 1 + control_planes + workers + 2
    assert (out / "userdata" / "runners-job-vm.yaml").read_text().startswith("#cloud-config\n")
    assert (out / "steps" / "gitops-k8s-master-init.sh").exists()
    # A step's delete too (it drains a worker before its instance goes), with its own parameters.
    drain = (out / "steps" / "gitops-k8s-worker1-membership.delete.sh").read_text()
    assert "kubectl drain" in drain and drain.startswith("#!/usr/bin/env bash")
    assert "NODE_NAME=worker1\n" in (out / "steps" / "gitops-k8s-worker1-membership.delete.env").read_text()
    assert (out / "gitlab" / ".gitlab-ci.yml").exists()
    assert (out / "gitlab" / "kubernetes" / "deployment.yml").exists()
    assert list((out / "kubernetes").glob("*.yaml"))


def test_render_shows_the_runner_managers_config_toml(rendered) -> None:
    stack, out = rendered
    config = tomllib.loads((out / "runners" / "config.toml").read_text())
    [runner] = config["runners"]
    assert runner["executor"] == "docker-autoscaler"
    assert runner["token"] == "@@RUNNER_TOKEN@@", "the token is never rendered"
    group = run_fixture_stack(stack, ADMIN).one("aws:autoscaling/group:Group")
    assert runner["autoscaler"]["plugin_config"]["name"] == group.state["name"]


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
    assert [step for step in steps if step.name.endswith(".delete.sh")], "the steps' delete scripts too"
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
    stack_dir = ["--stack-dir", str(FIXTURE_STACKS)]
    assert render.main(["--stack", "dev", *stack_dir, "--out", str(tmp_path), "--set", "workerCount=0"]) == 1
    assert "workerCount: got 0" in capsys.readouterr().err
    assert render.main(["--stack", "dev", *stack_dir, "--out", str(tmp_path), "--set", "workerCount=3"]) == 0
    assert (tmp_path / "userdata" / "gitops-k8s-worker3.yaml").exists()


def _users_stack(tmp_path: Path, values: dict) -> Path:
    """A user's edited Pulumi.dev.yaml: the fixture's values plus theirs."""
    document = yaml.safe_load((FIXTURE_STACKS / "Pulumi.dev.yaml").read_text())
    document["config"].update(values)
    stack_dir = tmp_path / "stack"
    stack_dir.mkdir()
    (stack_dir / "Pulumi.dev.yaml").write_text(yaml.safe_dump(document))
    return stack_dir


def test_render_shows_the_users_stack_not_stand_ins(tmp_path: Path, capsys) -> None:
    stack_dir = _users_stack(
        tmp_path,
        {
            "aws:region": "eu-west-3",
            "gitops:adminCidrs": ["198.51.100.0/24"],
            "gitops:workerCount": 3,
            "gitops:projectVisibility": "private",
        },
    )
    out = tmp_path / "render"
    assert render.main(["--stack", "dev", "--stack-dir", str(stack_dir), "--out", str(out)]) == 0
    assert "stand-in" not in capsys.readouterr().out
    index = (out / "index.md").read_text()
    assert "no stand-in" in index
    assert '| `gitops:adminCidrs` | `["198.51.100.0/24"]` | Pulumi.dev.yaml |' in index
    assert "| `aws:region` | `eu-west-3` | Pulumi.dev.yaml |" in index
    resources = (out / "resources.md").read_text()
    assert '"cidrIpv4": "198.51.100.0/24"' in resources and "203.0.113.7" not in resources
    assert '"availabilityZone": "eu-west-3a"' in resources and "us-east-1" not in resources
    assert (out / "userdata" / "gitops-k8s-worker3.yaml").exists()
    assert ".eu-west-3.compute.amazonaws.com" in (out / "outputs.json").read_text()


def test_render_names_each_stand_in_in_its_index(tmp_path: Path, capsys) -> None:
    stack_dir = _users_stack(tmp_path, {})
    document = yaml.safe_load((stack_dir / "Pulumi.dev.yaml").read_text())
    del document["config"]["aws:region"]
    (stack_dir / "Pulumi.dev.yaml").write_text(yaml.safe_dump(document))
    out = tmp_path / "render"
    assert render.main(["--stack", "dev", "--stack-dir", str(stack_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "stand-in for gitops:adminCidrs" in printed and "stand-in for aws:region" in printed
    index = (out / "index.md").read_text()
    assert "**Stand-ins**" in index
    assert '- `gitops:adminCidrs` = `["203.0.113.7/32"]`' in index
    assert '- `aws:region` = `"us-east-1"`' in index
    assert "| `gitops:workerCount` | `2` | default (Pulumi.yaml) |" in index


def test_render_leaves_no_stale_file(tmp_path: Path) -> None:
    out = tmp_path / "render"
    render.render(run_fixture_stack("dev", {**ADMIN, "workerCount": 3}), out)
    assert (out / "userdata" / "gitops-k8s-worker3.yaml").exists()
    render.render(run_fixture_stack("dev", ADMIN), out)
    assert not (out / "userdata" / "gitops-k8s-worker3.yaml").exists(), "a worker removed from the stack"
    listed = {line[3:-1] for line in (out / "index.md").read_text().splitlines() if line.startswith("- `")}
    on_disk = {str(path.relative_to(out)) for path in out.rglob("*") if path.is_file()}
    assert listed >= on_disk


def test_render_refuses_to_empty_a_directory_it_did_not_write(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert render.main(["--stack", "dev", "--stack-dir", str(FIXTURE_STACKS), "--out", str(tmp_path)]) == 1
    assert "not emptying it" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_render_never_touches_the_real_ca_file(tmp_path: Path) -> None:
    real = ROOT / "build" / "gitlab-ca-dev.pem"
    before = real.read_bytes() if real.exists() else None
    assert render.main(["--stack", "dev", "--stack-dir", str(FIXTURE_STACKS), "--out", str(tmp_path / "r")]) == 0
    assert (real.read_bytes() if real.exists() else None) == before
    assert "build/gitlab-ca-dev.pem" in (tmp_path / "r" / "index.md").read_text()


@pytest.mark.parametrize(
    ("delivery", "integration"), [("push", "agent"), ("push", "certificate"), ("pull", "certificate")]
)
def test_every_delivery_and_integration_renders_and_passes_the_validators(
    tmp_path: Path, delivery: str, integration: str
) -> None:
    """The fixture stacks render pull + agent; the other three combinations, through the same validators."""
    run = run_fixture_stack("dev", {**ADMIN, "delivery": delivery, "clusterIntegration": integration})
    out = tmp_path / "render"
    render.render(run, out)
    pipeline = out / "gitlab" / ".gitlab-ci.yml"
    result = subprocess.run(
        [str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", str(pipeline)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    minor = run.config["gitops:kubernetesVersion"]
    for path in [*(out / "kubernetes").glob("*.yaml"), *(out / "gitlab" / "kubernetes").glob("*")]:
        document = yaml.safe_load(path.read_text())
        if "fluxcd.io" in document["apiVersion"] or document["kind"] == "ConfigFile":
            continue
        kubernetes_validate.validate(document, f"{minor}.0", strict=True)
    steps = sorted((out / "steps").glob("*.sh"))
    result = subprocess.run([str(VENV_BIN / "shellcheck"), *map(str, steps)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    agent_files = [out / "gitlab/.gitlab/agents/k8s-cluster/config.yaml", out / "charts/gitlab-k8s-agentk.yaml"]
    if integration == "agent":
        assert all(path.exists() for path in agent_files)
        chart = yaml.safe_load((out / "charts/gitlab-k8s-agentk.yaml").read_text())
        assert chart["values"]["config"]["secretName"] == "gitlab-agent-token"
        assert (out / "steps/gitlab-k8s-agent-connected.sh").exists()
        assert "kubectl config use-context" in pipeline.read_text()
        token = run.one("gitlab:index/clusterAgentToken:ClusterAgentToken").state["token"]
        text = "\n".join(path.read_text() for path in out.rglob("*") if path.is_file())
        assert token not in text, "the agent token is never written"
    else:
        assert not any(path.exists() for path in agent_files)
        assert (out / "kubernetes/gitlab-k8s-token.yaml").exists()


def test_the_rendered_default_stack_shows_agentks_chart(rendered) -> None:
    _, out = rendered
    chart = yaml.safe_load((out / "charts" / "gitlab-k8s-agentk.yaml").read_text())
    assert chart["chart"] == "gitlab-agent" and chart["namespace"] == "kube-system"
    assert chart["values"]["serviceAccount"] == {"create": False, "name": "gitlab-admin"}
    config = yaml.safe_load((out / "gitlab/.gitlab/agents/k8s-cluster/config.yaml").read_text())
    assert config["ci_access"]["projects"][0]["environments"] == ["test"]
