"""The shark-app's Kubernetes manifests and the files seeded into its GitLab project, as pure data.

The same dicts are committed to GitLab (as YAML under ``kubernetes/``) and validated by the tests
with kubernetes-validate, so what Flux or the push pipeline applies is what was reviewed here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from components import versions

APP_SOURCE = Path(__file__).resolve().parent.parent / "apps" / "shark-app"
PIPELINES = APP_SOURCE / "ci"
# Not seeded: local artefacts, and the pipelines (one of them becomes .gitlab-ci.yml).
# push.gitlab-ci.yml ends before its `deployment` job: deployment-<clusterIntegration>.gitlab-ci.yml
# holds it, one per way the job reaches the cluster.
NOT_SEEDED = ("node_modules", "ci")
CONTAINER_PORT = 8080
SERVICE_PORT = 80
APP_NAMESPACE = "default"  # the tutorial's namespace
PULL_SECRET_NAME = "gitlab-registry"
# The push pipeline replaces this word with the commit SHA (the tutorial's deployment.tpl).
GIT_COMMIT_PLACEHOLDER = "GIT_COMMIT"
SKIP_CI = "[skip ci]"
# The pipelines build one throwaway image per pipeline, tmp-<CI_PIPELINE_ID> (the tutorial's `tmp`,
# made unique so two pipelines never race on one tag). Flux's tag pattern never matches it
# (components/flux.py tag_pattern); the project's registry cleanup policy deletes it.
THROWAWAY_TAG_REGEX = "tmp-[0-9]+"
# @@NAME@@ in apps/shark-app/ci/*.gitlab-ci.yml: an image pinned in components/versions.py.
_PIN_TOKEN = re.compile(r"@@([A-Z0-9_]+)@@")


@dataclass(frozen=True)
class AppSpec:
    """What the manifests need to know about the app and where its image lives."""

    app_name: str
    node_port: int
    image_repository: str  # <registry_host>/<namespace>/<project>
    initial_tag: str  # the tag the first pipeline pushes (the default branch name)
    image_policy: str  # "<namespace>:<name>" of Flux's ImagePolicy (pull mode marker)
    pull_secret: bool  # private project: pull with the deploy-token Secret


def deployment(spec: AppSpec, tag: str) -> dict[str, Any]:
    """Deployment shark-app: one replica, probes, limits, non-root with a read-only root filesystem."""
    labels = {"app": spec.app_name}
    pod_spec: dict[str, Any] = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,  # the image's `node` user (USER 1000:1000 in the Dockerfile)
            "runAsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "automountServiceAccountToken": False,  # the app never calls the Kubernetes API
        "containers": [
            {
                "name": spec.app_name,
                "image": f"{spec.image_repository}:{tag}",
                "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5},
                "livenessProbe": {
                    "httpGet": {"path": "/healthz", "port": "http"},
                    "initialDelaySeconds": 10,
                    "periodSeconds": 10,
                },
                "resources": {
                    "requests": {"cpu": "50m", "memory": "64Mi"},
                    "limits": {"cpu": "250m", "memory": "128Mi"},
                },
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,  # the app writes nothing to disk
                    "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
    }
    if spec.pull_secret:
        pod_spec["imagePullSecrets"] = [{"name": PULL_SECRET_NAME}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": spec.app_name, "namespace": APP_NAMESPACE, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def service(spec: AppSpec) -> dict[str, Any]:
    """Service shark-app: NodePort <nodePort> -> port 80 -> targetPort 8080, as in the tutorial."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": spec.app_name, "namespace": APP_NAMESPACE, "labels": {"app": spec.app_name}},
        "spec": {
            "type": "NodePort",
            "selector": {"app": spec.app_name},
            "ports": [
                {
                    "name": "http",
                    "protocol": "TCP",
                    "port": SERVICE_PORT,
                    "targetPort": CONTAINER_PORT,
                    "nodePort": spec.node_port,
                }
            ],
        },
    }


def image_policy_marker(spec: AppSpec) -> str:
    """Flux's setter marker: the image line it rewrites (image-automation-controller, Setters)."""
    return "# " + json.dumps({"$imagepolicy": spec.image_policy})


def dump(document: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(document), sort_keys=False)


def deployment_yaml(spec: AppSpec, mode: Literal["pull", "push"]) -> str:
    """deployment.yml (pull: image line carries Flux's marker) or deployment.tpl (push: GIT_COMMIT)."""
    if mode == "push":
        return dump(deployment(spec, GIT_COMMIT_PLACEHOLDER))
    text = dump(deployment(spec, spec.initial_tag))
    image_line = f"image: {spec.image_repository}:{spec.initial_tag}"
    if text.count(image_line) != 1:
        raise ValueError(f"expected exactly one image line {image_line!r} in the Deployment")
    return text.replace(image_line, f"{image_line} {image_policy_marker(spec)}")


def manifest_files(spec: AppSpec, mode: Literal["pull", "push"]) -> dict[str, str]:
    """The project's kubernetes/ directory for a delivery mode."""
    name = "deployment.yml" if mode == "pull" else "deployment.tpl"
    return {f"kubernetes/{name}": deployment_yaml(spec, mode), "kubernetes/service.yml": dump(service(spec))}


def app_files() -> dict[str, str]:
    """The app's source as committed to GitLab: every file of apps/shark-app but local artefacts."""
    files = {}
    for path in sorted(APP_SOURCE.rglob("*")):
        relative = path.relative_to(APP_SOURCE)
        if path.is_file() and relative.parts[0] not in NOT_SEEDED:
            files[relative.as_posix()] = path.read_text()
    return files


Integration = Literal["agent", "certificate"]


def pipeline_template(mode: Literal["pull", "push"], integration: Integration = "agent") -> str:
    """apps/shark-app/ci/<mode>.gitlab-ci.yml as written, with its @@NAME@@ image tokens; in push mode
    followed by the deployment job of the cluster integration (deployment-<integration>.gitlab-ci.yml)."""
    template = (PIPELINES / f"{mode}.gitlab-ci.yml").read_text()
    if mode == "push":
        template += "\n" + (PIPELINES / f"deployment-{integration}.gitlab-ci.yml").read_text()
    return template


def render_pipeline(template: str, images: Mapping[str, str] = versions.PIPELINE_IMAGES) -> str:
    """Fill every @@NAME@@ token from ``images``; an unknown token is an error, never left in place."""

    def image(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in images:
            raise ValueError(f"pipeline token @@{name}@@ names no image in components/versions.py PIPELINE_IMAGES")
        return images[name]

    return _PIN_TOKEN.sub(image, template)


def pipeline(mode: Literal["pull", "push"], integration: Integration = "agent") -> str:
    """The .gitlab-ci.yml seeded for a delivery mode (and, in push mode, a cluster integration), its
    images pinned from components/versions.py."""
    return render_pipeline(pipeline_template(mode, integration))


@dataclass(frozen=True)
class SeedFile:
    path: str
    commit_message: str


PIPELINE_PATH = ".gitlab-ci.yml"


def seed_plan(mode: Literal["pull", "push"]) -> list[SeedFile]:
    """Every file of the initial project, in commit order: the pipeline last, alone without [skip ci].

    GitLab runs no pipeline for a commit whose message contains [skip ci], and none for commits
    made before .gitlab-ci.yml exists; committing the pipeline last, on its own, makes the seeding
    start exactly one pipeline, with every file already in place. The list of paths does not
    depend on any output, so the resources can be declared before the registry host is known.
    """
    deployment_name = "deployment.yml" if mode == "pull" else "deployment.tpl"
    paths = [*app_files(), f"kubernetes/{deployment_name}", "kubernetes/service.yml"]
    plan = [SeedFile(path, f"{SKIP_CI} Seed {path}") for path in paths]
    return [*plan, SeedFile(PIPELINE_PATH, f"Add the {mode} delivery pipeline")]


def seed_content(spec: AppSpec, mode: Literal["pull", "push"], path: str, integration: Integration = "agent") -> str:
    """The content committed at ``path``."""
    if path == PIPELINE_PATH:
        return pipeline(mode, integration)
    manifests = manifest_files(spec, mode)
    if path in manifests:
        return manifests[path]
    return app_files()[path]
