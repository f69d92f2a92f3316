"""The sample app as seeded into GitLab: manifests, pipelines, Dockerfile and the seeding order."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from components import versions
from components.app_manifests import (
    GIT_COMMIT_PLACEHOLDER,
    PIPELINE_PATH,
    SKIP_CI,
    AppSpec,
    app_files,
    deployment,
    deployment_yaml,
    manifest_files,
    pipeline,
    pipeline_template,
    render_pipeline,
    seed_content,
    seed_plan,
    service,
)
from components.config import SUPPORTED_KUBERNETES_MINORS
from components.gitlab_config import RUNNER_JOB_IMAGE

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "apps" / "shark-app"
VENV_BIN = Path(sys.executable).parent
SPEC = AppSpec(
    app_name="shark-app",
    node_port=30000,
    image_repository="ec2-198-51-100-7.compute-1.amazonaws.com:5050/operator/shark-application",
    initial_tag="main",
    image_policy="flux:shark-app",
    pull_secret=False,
)


def _tool(name: str) -> str:
    path = VENV_BIN / name
    return str(path) if path.exists() else (shutil.which(name) or pytest.fail(f"{name} is not installed"))


@pytest.mark.parametrize("minor", SUPPORTED_KUBERNETES_MINORS)
@pytest.mark.parametrize("mode", ["pull", "push"])
def test_manifests_pass_the_kubernetes_schema_strictly(minor: str, mode: str) -> None:
    for path, text in manifest_files(SPEC, mode).items():
        document = yaml.safe_load(text)
        # Raises ValidationError naming the offending field; returns the schema version used.
        assert kubernetes_validate.validate(document, f"{minor}.0", strict=True).startswith(minor), path


def test_service_is_the_tutorials_node_port() -> None:
    ports = service(SPEC)["spec"]["ports"]
    assert service(SPEC)["spec"]["type"] == "NodePort"
    assert [(p["nodePort"], p["port"], p["targetPort"]) for p in ports] == [(30000, 80, 8080)]
    assert service(SPEC)["spec"]["selector"] == {"app": "shark-app"}


def test_deployment_pulls_from_this_projects_registry_on_5050() -> None:
    container = deployment(SPEC, "main")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ec2-198-51-100-7.compute-1.amazonaws.com:5050/operator/shark-application:main"
    assert container["ports"][0]["containerPort"] == 8080
    assert container["resources"]["limits"] and container["resources"]["requests"]
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_private_project_pulls_with_the_deploy_token_secret() -> None:
    private = AppSpec(**{**SPEC.__dict__, "pull_secret": True})
    assert deployment(private, "main")["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "gitlab-registry"}]
    assert "imagePullSecrets" not in deployment(SPEC, "main")["spec"]["template"]["spec"]


def test_pull_mode_image_line_carries_the_image_policy_marker() -> None:
    text = deployment_yaml(SPEC, "pull")
    image_lines = [line.strip() for line in text.splitlines() if line.strip().startswith("image:")]
    assert image_lines == [f'image: {SPEC.image_repository}:main # {{"$imagepolicy": "flux:shark-app"}}']
    # The marker is a YAML comment: the manifest still parses to the same Deployment.
    assert yaml.safe_load(text) == deployment(SPEC, "main")


def test_push_mode_template_is_rendered_by_the_pipeline() -> None:
    files = manifest_files(SPEC, "push")
    assert set(files) == {"kubernetes/deployment.tpl", "kubernetes/service.yml"}
    assert f"{SPEC.image_repository}:{GIT_COMMIT_PLACEHOLDER}" in files["kubernetes/deployment.tpl"]
    assert "$imagepolicy" not in files["kubernetes/deployment.tpl"]


@pytest.mark.parametrize("mode", ["pull", "push"])
def test_seeding_starts_exactly_one_pipeline(mode: str) -> None:
    plan = seed_plan(mode)
    without_skip = [seed for seed in plan if SKIP_CI not in seed.commit_message]
    assert [seed.path for seed in without_skip] == [PIPELINE_PATH]
    assert plan[-1].path == PIPELINE_PATH, "the pipeline is committed after every other file"
    assert len({seed.path for seed in plan}) == len(plan)


def test_seeded_files_are_the_app_and_its_manifests() -> None:
    paths = {seed.path for seed in seed_plan("pull")}
    assert {"package.json", "package-lock.json", "Dockerfile", "server.js", "src/app.js"} <= paths
    assert {"kubernetes/deployment.yml", "kubernetes/service.yml", ".gitlab-ci.yml"} <= paths
    assert not any(path.startswith(("node_modules/", "ci/")) for path in paths)
    assert seed_content(SPEC, "pull", ".gitlab-ci.yml") == pipeline("pull")
    assert seed_content(SPEC, "push", "server.js") == app_files()["server.js"]


# Top-level keywords of a GitLab CI file that are not jobs (docs.gitlab.com/ci/yaml).
GLOBAL_KEYWORDS = {"default", "include", "stages", "variables", "workflow"}


def _jobs(mode: str) -> dict:
    document = yaml.safe_load(pipeline(mode))
    return {
        name: job
        for name, job in document.items()
        if isinstance(job, dict) and not name.startswith(".") and name not in GLOBAL_KEYWORDS
    }


@pytest.mark.parametrize(("mode", "integration"), [("pull", "agent"), ("push", "agent"), ("push", "certificate")])
def test_pipelines_pass_the_gitlab_ci_schema(tmp_path: Path, mode: str, integration: str) -> None:
    """The seeded file as GitLab reads it: push mode with the deployment job of each integration."""
    seeded = tmp_path / ".gitlab-ci.yml"
    seeded.write_text(pipeline(mode, integration))  # type: ignore[arg-type]
    result = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", str(seeded)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("integration", ["agent", "certificate"])
def test_push_pipeline_deploys_through_the_integrations_access(integration: str) -> None:
    document = yaml.safe_load(pipeline("push", integration))  # type: ignore[arg-type]
    assert document["stages"] == ["build", "test", "push", "deployment"]
    deploy = document["deployment"]
    script = "\n".join(deploy["script"])
    if integration == "certificate":
        for variable in ("$KUBE_URL", "$KUBE_CA_PEM_FILE", "$KUBE_TOKEN"):
            assert variable in script
    else:
        assert "KUBECONFIG" in script and "$GITLAB_CA_PEM_FILE" in script and "KUBE_TOKEN" not in script
    assert "GIT_COMMIT" in script and "$CI_COMMIT_SHA" in script
    assert script.endswith("kubectl apply -f kubernetes")
    assert deploy["environment"]["name"] == "test"
    assert deploy["image"]["name"] == versions.KUBECTL_IMAGE


def test_pull_pipeline_has_no_deployment_and_no_kubectl() -> None:
    assert yaml.safe_load(pipeline("pull"))["stages"] == ["build", "test", "push"]
    assert "kubectl" not in pipeline("pull")
    assert "deployment" not in _jobs("pull")


@pytest.mark.parametrize("mode", ["pull", "push"])
def test_pipelines_run_on_the_default_branch_with_pinned_images(mode: str) -> None:
    text = pipeline(mode)
    assert "only:" not in text and "CI_BUILD_REF" not in text
    for name, job in _jobs(mode).items():
        assert job["rules"] == [{"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"}], name
    document = yaml.safe_load(text)
    images = []
    for job in document.values():
        if isinstance(job, dict):
            image = job.get("image")
            images.append(image["name"] if isinstance(image, dict) else image)
            images += [s["name"] if isinstance(s, dict) else s for s in job.get("services", [])]
    images = [image for image in images if image]
    assert len(images) >= 2, "the pipeline names its images"
    for image in images:
        name, _, tag = image.partition(":")
        assert tag and tag not in ("latest", "stable", "dind") and tag[0].isdigit(), image


@pytest.mark.parametrize("mode", ["pull", "push"])
def test_pipelines_use_exactly_the_pinned_images(mode: str) -> None:
    """Every image a seeded pipeline names comes from components/versions.py, one Docker release."""
    document = yaml.safe_load(pipeline(mode))
    jobs = {name: job for name, job in document.items() if isinstance(job, dict) and name not in GLOBAL_KEYWORDS}
    images = set()
    for job in jobs.values():
        image = job.get("image")
        if image:
            images.add(image["name"] if isinstance(image, dict) else image)
        images |= {s["name"] if isinstance(s, dict) else s for s in job.get("services", [])}
    expected = {versions.NODE_IMAGE, versions.DOCKER_CLI_IMAGE, versions.DOCKER_DIND_IMAGE}
    if mode == "push":
        expected.add(versions.KUBECTL_IMAGE)
    assert images == expected
    assert versions.CURL_IMAGE in pipeline(mode)
    assert not re.search(r"@@[A-Z0-9_]+@@", pipeline(mode)), "every token is filled in"
    # The template itself holds no pin: it names them, versions.py holds them.
    template = pipeline_template(mode)
    for image in versions.PIPELINE_IMAGES.values():
        assert image not in template


def test_one_docker_release_for_client_daemon_and_the_runners_default_image() -> None:
    docker = {versions.DOCKER_CLI_IMAGE, versions.DOCKER_DIND_IMAGE, RUNNER_JOB_IMAGE}
    assert {image.split(":")[1].rsplit("-", 1)[0] for image in docker} == {versions.DOCKER_VERSION}
    assert versions.DOCKER_CLI_IMAGE.endswith("-cli") and versions.DOCKER_DIND_IMAGE.endswith("-dind")


def test_an_unknown_pipeline_token_is_an_error_not_a_literal() -> None:
    with pytest.raises(ValueError, match="@@DOCKER_IMAGE@@ names no image"):
        render_pipeline('image: "@@DOCKER_IMAGE@@"\n')
    assert render_pipeline("image: @@NODE_IMAGE@@", {"NODE_IMAGE": "node:1"}) == "image: node:1"


@pytest.mark.parametrize("mode", ["pull", "push"])
def test_the_apps_own_tests_run_before_any_image_is_built(mode: str) -> None:
    document = yaml.safe_load(pipeline(mode))
    job = _jobs(mode)["unit-test"]
    # .pre is GitLab's built-in first stage: the tutorial's stages stay as they were.
    assert job["stage"] == ".pre"
    assert ".pre" not in document["stages"]
    assert job["image"] == versions.NODE_IMAGE
    assert job["script"] == ["npm ci --no-audit --no-fund", "npm test"]
    package = json.loads((APP / "package.json").read_text())
    assert package["scripts"]["test"] == "node --test"
    # Seeded with the app, so the job finds its tests.
    assert "test/app.test.js" in {seed.path for seed in seed_plan(mode)}


@pytest.mark.parametrize("mode", ["pull", "push"])
def test_each_pipeline_builds_its_own_throwaway_image(mode: str) -> None:
    document = yaml.safe_load(pipeline(mode))
    assert document["variables"]["TMP_IMAGE"] == "$CI_REGISTRY_IMAGE:tmp-$CI_PIPELINE_ID"
    jobs = _jobs(mode)
    assert 'docker build --pull -t "$TMP_IMAGE" .' in jobs["build"]["script"]
    assert 'docker push "$TMP_IMAGE"' in jobs["build"]["script"]
    for name in ("test", "push"):
        assert 'docker pull "$TMP_IMAGE"' in jobs[name]["script"], name
    # No job touches a shared :tmp tag any more.
    assert ':tmp"' not in pipeline(mode) and ":tmp " not in pipeline(mode)


def test_dockerfile_builds_on_the_pinned_node_image() -> None:
    lines = [line for line in (APP / "Dockerfile").read_text().splitlines() if line.startswith("FROM ")]
    assert lines == [f"FROM {versions.NODE_IMAGE}"]


def test_test_job_fetches_the_sentence_and_always_cleans_up() -> None:
    job = _jobs("pull")["test"]
    assert any("Are you ready to learn about sharks?" in line for line in job["script"])
    assert any("docker rm -f shark-app" in line for line in job["after_script"])


def test_pushed_tags_include_sha_branch_and_sortable_tag() -> None:
    script = "\n".join(_jobs("pull")["push"]["script"])
    for tag in ("$CI_COMMIT_SHA", "$CI_COMMIT_REF_NAME", "$CI_COMMIT_REF_SLUG-$CI_COMMIT_SHORT_SHA-$CI_PIPELINE_IID"):
        assert f'docker push "$CI_REGISTRY_IMAGE:{tag}"' in script


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([_tool("hadolint"), str(APP / "Dockerfile")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (APP / "Dockerfile").read_text()
    assert "npm ci --omit=dev" in text and "EXPOSE 8080" in text and "HEALTHCHECK" in text
    assert ":latest" not in text and "USER 1000" in text
