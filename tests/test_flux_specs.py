"""Flux's objects as data: the image policy only ever selects the pipeline's sortable tags."""

from __future__ import annotations

import re

import pytest
import yaml

from components import flux
from components.app_manifests import AppSpec, deployment_yaml, pipeline

SHA = "3f2c9a1be47d05c6a9e1f0b2d3c4e5f60718293a"


def _pipeline_tag(branch_slug: str, sha: str, iid: int) -> str:
    """The push job's sortable tag template, filled in the way GitLab fills its variables."""
    script = "\n".join(yaml.safe_load(pipeline("pull"))["push"]["script"])
    template = re.search(r'docker push "\$CI_REGISTRY_IMAGE:(\$CI_COMMIT_REF_SLUG-[^"]+)"', script).group(1)
    return (
        template.replace("$CI_COMMIT_REF_SLUG", branch_slug)
        .replace("$CI_COMMIT_SHORT_SHA", sha[:8])
        .replace("$CI_PIPELINE_IID", str(iid))
    )


@pytest.mark.parametrize("branch", ["main", "master", "release/2026.11"])
def test_policy_accepts_the_pipelines_tag_and_extracts_the_iid(branch: str) -> None:
    pattern = re.compile(flux.tag_pattern(branch))
    tag = _pipeline_tag(flux.ref_slug(branch), SHA, 42)
    match = pattern.match(tag)
    assert match, f"{tag!r} must match {pattern.pattern!r}"
    assert match.group("iid") == "42"
    assert flux.image_policy("shark-app", branch)["filterTags"] == {
        "pattern": flux.tag_pattern(branch),
        "extract": "$iid",
    }


@pytest.mark.parametrize(
    "tag", ["tmp", SHA, "main", "latest", "main-3f2c9a1b", "feature-3f2c9a1b-42", "main-XYZ12345-3"]
)
def test_policy_never_selects_tmp_or_other_tags(tag: str) -> None:
    assert not re.match(flux.tag_pattern("main"), tag)


def test_newest_pipeline_wins_numerically() -> None:
    assert flux.image_policy("shark-app", "main")["policy"] == {"numerical": {"order": "asc"}}
    tags = [_pipeline_tag("main", SHA, iid) for iid in (9, 10, 100)]
    extracted = [int(re.match(flux.tag_pattern("main"), tag).group("iid")) for tag in tags]
    assert max(extracted) == 100, "numerical, not alphabetical: 100 > 9"


def test_ref_slug_matches_gitlab() -> None:
    assert flux.ref_slug("Release/2026.11_Final") == "release-2026-11-final"
    assert flux.ref_slug("-main-") == "main"
    assert len(flux.ref_slug("x" * 100)) == 63


def test_commits_by_flux_skip_ci_and_use_changed() -> None:
    template = flux.MESSAGE_TEMPLATE
    assert "[ci skip]" in template
    assert ".Changed" in template and ".Updated" not in template
    automation = flux.image_update_automation("shark-app", "main")
    assert automation["git"]["commit"]["messageTemplate"] == template
    assert automation["git"]["checkout"]["ref"] == {"branch": "main"}
    assert automation["git"]["push"] == {"branch": "main"}
    assert automation["update"] == {"path": "./kubernetes", "strategy": "Setters"}
    assert automation["git"]["commit"]["author"]["name"] == "Flux"


def test_deployment_marker_names_this_image_policy() -> None:
    spec = AppSpec(
        "shark-app", 30000, "gitlab.example.test:5050/operator/shark-application", "main", "flux:shark-app", False
    )
    line = next(line for line in deployment_yaml(spec, "pull").splitlines() if "image:" in line)
    marker = re.search(r'# \{"\$imagepolicy": "([^"]+)"\}', line).group(1)
    assert marker == f"{flux.NAMESPACE}:shark-app"


def test_sync_objects() -> None:
    repository = flux.git_repository(
        "shark-app", "ssh://git@gitlab.example.test:2222/operator/shark-application.git", "main"
    )
    assert repository["secretRef"] == {"name": "flux-git-deploy"}
    assert repository["url"].startswith("ssh://git@") and ":2222/" in repository["url"]
    kustomization = flux.kustomization("shark-app")
    assert kustomization["path"] == "./kubernetes" and kustomization["prune"] is True
    assert kustomization["sourceRef"] == {"kind": "GitRepository", "name": "shark-app"}
    assert flux.image_repository("r:5050/p", private=False) == {
        "image": "r:5050/p",
        "interval": flux.INTERVAL,
        "certSecretRef": {"name": "gitlab-ca"},
    }
    assert flux.image_repository("r:5050/p", private=True)["secretRef"] == {"name": "gitlab-registry"}


def test_install_manifest_is_the_pinned_release_asset() -> None:
    assert (
        flux.install_manifest_url("v2.10.0") == "https://github.com/fluxcd/flux2/releases/download/v2.10.0/install.yaml"
    )
