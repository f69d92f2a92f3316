"""Every pinned artifact lives in components/versions.py, is used from there, and is sourced in REFERENCE.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from components import versions
from components.config import KEYS, gitlab_version

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = (ROOT / "REFERENCE.md").read_text()
PINS = {
    "GitLab CE": f"gitlab/gitlab-ce:{versions.GITLAB_CE_TAG}",
    "GitLab Runner": f"gitlab-runner={versions.GITLAB_RUNNER_VERSION}-1",
    "fleeting plugin for AWS": f"aws:{versions.FLEETING_PLUGIN_AWS_VERSION}",
    "Docker CLI": versions.DOCKER_CLI_IMAGE,
    "Docker daemon": versions.DOCKER_DIND_IMAGE,
    "curl": versions.CURL_IMAGE,
    "kubectl": versions.KUBECTL_IMAGE,
    "Node.js": versions.NODE_IMAGE,
    "repository CI Python": versions.CI_PYTHON_IMAGE,
    "repository CI Pulumi": versions.CI_PULUMI_IMAGE,
    "Flux": versions.FLUX_VERSION,
    "Flannel": versions.FLANNEL_VERSION,
    "AWS CLI": f"awscli=={versions.AWS_CLI_VERSION}",
    "GitLab agent chart": f"{versions.GITLAB_AGENT_CHART}-{versions.GITLAB_AGENT_CHART_VERSION}.tgz",
    "agentk": f"{versions.AGENTK_IMAGE_REPOSITORY}:{versions.AGENTK_TAG}",
}


def _reference_section(number: int) -> str:
    match = re.search(rf"^## {number}\. .*?(?=^## \d+\. )", REFERENCE, flags=re.MULTILINE | re.DOTALL)
    assert match, f"REFERENCE.md has no section {number}"
    return match.group(0)


@pytest.mark.parametrize(("what", "pin"), PINS.items(), ids=list(PINS))
def test_every_pin_is_recorded_with_its_source_in_reference_section_1(what: str, pin: str) -> None:
    pinned = _reference_section(1)
    rows = [line for line in pinned.splitlines() if line.startswith("|") and f"`{pin}`" in line]
    assert rows, f"REFERENCE.md section 1 has no row for {what} `{pin}`"
    # A source: a repository path/commit, a pull request or a URL, not just the value.
    assert re.search(r"(github|gitlab|docs\.|/|#\d+)", rows[0].split(f"`{pin}`", 1)[1]), rows[0]


# Pinned to a release series, not a patch, on purpose (the newest of the series is installed and held).
SERIES = {
    "Kubernetes (minor)": versions.KUBERNETES_MINOR,
    "containerd.io (series)": versions.CONTAINERD_SERIES,
}


@pytest.mark.parametrize(("what", "series"), SERIES.items(), ids=list(SERIES))
def test_every_series_pin_is_recorded_with_its_source_in_reference_section_1(what: str, series: str) -> None:
    assert re.fullmatch(r"\d+\.\d+", series), f"{what}: {series} is not a major.minor series"
    rows = [line for line in _reference_section(1).splitlines() if line.startswith(f"| {what} | `{series}`")]
    assert rows, f"REFERENCE.md section 1 has no row for {what} `{series}`"
    assert re.search(r"(github|kubernetes\.io|docker/|#\d+)", rows[0]), rows[0]


def test_the_cluster_reads_its_pins_from_versions() -> None:
    """The nodes' containerd series and the Kubernetes minors: one place, sourced in REFERENCE.md."""
    from components import config, kubeadm

    defaults = {key.name: key.default for key in KEYS}
    assert defaults["kubernetesVersion"] == versions.KUBERNETES_MINOR
    assert versions.KUBERNETES_MINOR in versions.SUPPORTED_KUBERNETES_MINORS
    assert config.SUPPORTED_KUBERNETES_MINORS is versions.SUPPORTED_KUBERNETES_MINORS
    assert kubeadm.CONTAINERD_SERIES == versions.CONTAINERD_SERIES
    node_env = kubeadm.node_cloud_config(
        hostname="worker1", kubernetes_minor="1.36", kubernetes_patch=None, operator_ssh_public_key=None
    )
    assert f"CONTAINERD_SERIES={versions.CONTAINERD_SERIES}" in yaml.safe_dump(node_env)
    for source in (ROOT / "components").glob("*.py"):
        if source.name != "versions.py":
            assert not re.search(r'CONTAINERD_SERIES = "', source.read_text()), source.name


def test_no_pin_is_latest_or_floating() -> None:
    for what, pin in PINS.items():
        tag = pin.rsplit(":", 1)[-1].rsplit("==", 1)[-1]
        assert re.search(r"\d+\.\d+\.\d+", tag), f"{what}: {pin} is not pinned to a patch release"
        assert "latest" not in tag and "stable" not in tag


def test_config_defaults_come_from_versions() -> None:
    defaults = {key.name: key.default for key in KEYS}
    assert defaults["gitlabImageTag"] == versions.GITLAB_CE_TAG
    assert defaults["gitlabRunnerVersion"] == versions.GITLAB_RUNNER_VERSION
    assert defaults["fluxVersion"] == versions.FLUX_VERSION
    assert defaults["flannelVersion"] == versions.FLANNEL_VERSION


def test_gitlab_and_runner_share_major_and_minor() -> None:
    major, minor, _ = gitlab_version(versions.GITLAB_CE_TAG)
    assert re.fullmatch(rf"{major}\.{minor}\.\d+", versions.GITLAB_RUNNER_VERSION)
    assert (major, minor) >= versions.GITLAB_OLDEST_SUPPORTED and major < versions.GITLAB_FIRST_UNSUPPORTED_MAJOR


@pytest.mark.parametrize(
    ("gitlab", "agentk"), [("19.4.1-ce.0", "v19.4.1"), ("18.11.11-ce.0", "v18.11.11"), ("19.11.9-ce.1", "v19.11.9")]
)
def test_agentk_runs_the_release_of_gitlab_that_serves_its_kas(gitlab: str, agentk: str) -> None:
    assert versions.agentk_tag(gitlab) == agentk


@pytest.mark.parametrize("tag", ["latest", "19.4-ce.0", "ce.0"])
def test_agentk_tag_refuses_what_is_not_a_release(tag: str) -> None:
    with pytest.raises(ValueError, match="is not a gitlab/gitlab-ce tag"):
        versions.agentk_tag(tag)


def test_repository_pipeline_uses_the_pinned_images() -> None:
    pipeline = yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())
    images = set()
    for job in pipeline.values():
        if isinstance(job, dict) and "image" in job:
            images.add(job["image"]["name"] if isinstance(job["image"], dict) else job["image"])
    assert images == {versions.CI_PYTHON_IMAGE, versions.CI_PULUMI_IMAGE}


@pytest.mark.parametrize(("stop", "tags"), versions.GITLAB_UPGRADE_STOP_TAGS.items(), ids=str)
def test_each_pinned_upgrade_stop_is_a_stop_with_its_runner_and_an_upstream_source(
    stop: tuple[int, int], tags: tuple[str, str]
) -> None:
    image_tag, runner_version = tags
    assert stop in versions.gitlab_upgrade_stops()
    assert gitlab_version(image_tag)[:2] == stop
    assert re.fullmatch(rf"{stop[0]}\.{stop[1]}\.\d+", runner_version)
    # Walked through below the default: never above what the program itself installs.
    assert gitlab_version(image_tag) < gitlab_version(versions.GITLAB_CE_TAG)
    # The README's upgrade section names the pair an operator would set to stop there by hand.
    upgrades = (ROOT / "README.md").read_text().split("## GitLab versions and upgrades", 1)[1]
    assert f"**{image_tag}**" in upgrades and f"`{runner_version}`" in upgrades
    pinned = _reference_section(1)
    for pin in (f"gitlab/gitlab-ce:{image_tag}", f"gitlab-runner={runner_version}-1"):
        rows = [line for line in pinned.splitlines() if line.startswith("|") and f"`{pin}`" in line]
        assert rows, f"REFERENCE.md section 1 has no row for the upgrade stop's `{pin}`"
        # An upstream release tag, not third-party pins: the step runs it without anyone choosing it.
        assert re.search(r"(omnibus-gitlab tag|gitlab-runner tag)", rows[0]), rows[0]


def test_the_readmes_doctor_sample_shows_the_default_gitlab() -> None:
    readme = (ROOT / "README.md").read_text()
    version = ".".join(map(str, gitlab_version(versions.GITLAB_CE_TAG)))
    assert f"PASS  gitlab-api       GitLab {version} answers at" in readme


def test_upgrade_stops_follow_gitlab_and_its_documented_rule() -> None:
    stops = versions.gitlab_upgrade_stops()
    assert stops[: len(versions.GITLAB_UPGRADE_STOPS_CITED)] == versions.GITLAB_UPGRADE_STOPS_CITED
    assert stops[len(versions.GITLAB_UPGRADE_STOPS_CITED) :] == ((19, 5), (19, 8), (19, 11))
    assert list(stops) == sorted(set(stops))
    # The stop before 19.x is 18.11, the oldest release the program accepts.
    assert max(stop for stop in stops if stop[0] == 18) == versions.GITLAB_OLDEST_SUPPORTED
    # Each cited stop is in REFERENCE.md with its source.
    behaviour = _reference_section(2)
    assert "upgrade_check.rb" in behaviour and "upgrade_path.yml" in behaviour
