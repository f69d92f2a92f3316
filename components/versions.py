"""Every artifact this product pins, in one place.

The config defaults (components/config.py), the pipelines seeded into the app project
(apps/shark-app/ci/*.gitlab-ci.yml, whose ``@@NAME@@`` tokens are filled from ``PIPELINE_IMAGES``),
the runner's default job image, the runner manager's packages and the tests read these values. Each
one was found in an upstream source: REFERENCE.md section 1 names it. Bump a pin here, find its source, record it there.
"""

from __future__ import annotations

# ---- GitLab -------------------------------------------------------------------------------------
# GitLab CE in Docker. 19.4 is a maintained minor on 2026-11-30 (security fixes go to the current
# and two previous monthly releases: 19.6, 19.5, 19.4); 19.4.1 is the newest 19.4 patch found, and
# only in third-party pins (REFERENCE.md section 1): a later 19.4.x patch may exist; bump to it.
# Certificate-based clusters stay until 20.0.
GITLAB_CE_TAG = "19.4.1-ce.0"
# gitlab-runner release matching GitLab's major.minor (docs.gitlab.com/runner: keep them in step),
# installed on the runner manager from GitLab's apt repository as `gitlab-runner=<version>-1` with
# `gitlab-runner-helper-images` of the same version (gitlab-runner docs/install/linux-repository.md).
GITLAB_RUNNER_VERSION = "19.4.1"
# The AWS fleeting plugin the docker-autoscaler executor drives the job VMs' Auto Scaling group
# with, as `[runners.autoscaler] plugin`: registry.gitlab.com/gitlab-org/fleeting/plugins/aws at an
# exact version (gitlab-runner docs/fleet_scaling/fleeting.md, "plugin formats"; an exact
# MAJOR.MINOR.PATCH constraint installs and runs that release only).
FLEETING_PLUGIN_AWS_VERSION = "1.1.0"
# Versions the program accepts (config validation): 18.11.x, the required upgrade stop before 19.x,
# and 19.x. GitLab 20 is not released yet (GitLab majors ship in May): its required upgrade stops and
# PostgreSQL minimum are unknown, so the install step could not walk to it safely.
GITLAB_OLDEST_SUPPORTED = (18, 11)
GITLAB_FIRST_UNSUPPORTED_MAJOR = 20
# GitLab's stated removal of the certificate-based cluster integration (clusterIntegration
# certificate): "deprecated, due for removal in GitLab 20.0" (pulumi-gitlab 10.4 project_cluster.py,
# terraform-provider-gitlab docs of its v19.0.0 release). A moving target: it was 17.0, then 18.0.
CERTIFICATE_CLUSTERS_REMOVED_MAJOR = 20
# Required upgrade stops (major, minor) as GitLab itself enforces them: omnibus-gitlab
# files/gitlab-ctl-commands/lib/gitlab_ctl/upgrade_check.rb MIN_VERSION at each release tag, and
# gitlabhq config/upgrade_path.yml. The Docker image refuses to start across one (init-container
# runs `gitlab-ctl upgrade-check`); the install step refuses before it stops anything.
GITLAB_UPGRADE_STOPS_CITED: tuple[tuple[int, int], ...] = (
    (17, 3),
    (17, 5),
    (17, 8),
    (17, 11),
    (18, 2),
    (18, 5),
    (18, 8),
    (18, 11),
    (19, 2),
)
# "In GitLab 17.5 and later, required upgrade stops occur at versions x.2.z, x.5.z, x.8.z and
# x.11.z" (gitlabhq doc/update/upgrade_paths.md): the stops after the last cited one follow it.
GITLAB_UPGRADE_STOP_MINORS = (2, 5, 8, 11)
# The release the install step upgrades to at each required stop it walks through on its own
# (gitlabImageTag across one or more stops: one `pulumi up` goes old -> stop -> ... -> new), with the
# runner release of the same major.minor for an operator who stops there by hand (gitlabRunnerVersion).
# Only releases proven by an upstream release tag (REFERENCE.md section 1): omnibus-gitlab
# `X.Y.Z+ce.0` is the Docker tag `X.Y.Z-ce.0`; gitlab-runner tag `vX.Y.Z` is the release X.Y.Z. A
# stop without an entry here is refused, with the path to take by hand. GitLab advises the latest patch of a stop: a later one may exist.
GITLAB_UPGRADE_STOP_TAGS: dict[tuple[int, int], tuple[str, str]] = {
    (18, 11): ("18.11.11-ce.0", "18.11.4"),
    (19, 2): ("19.2.4-ce.0", "19.2.2"),
}

# ---- Docker (one version for the pipelines' client and daemon and the runner's default image) ----
DOCKER_VERSION = "29.7.2"
DOCKER_CLI_IMAGE = f"docker:{DOCKER_VERSION}-cli"
DOCKER_DIND_IMAGE = f"docker:{DOCKER_VERSION}-dind"

# ---- images the app's pipelines use ----------------------------------------------------------------
CURL_IMAGE = "curlimages/curl:8.21.0"
# Alpine with bash, sed and kubectl; tagged by kubectl version, within one minor of every
# supported cluster minor (1.35-1.37).
KUBECTL_IMAGE = "alpine/k8s:1.36.4"
# The app's base image (apps/shark-app/Dockerfile) and its unit-test job: Node.js 24 LTS on Debian 12.
NODE_IMAGE = "node:24.19.0-bookworm-slim"

# What the seeded pipelines' @@NAME@@ tokens stand for (components/app_manifests.py render_pipeline).
PIPELINE_IMAGES: dict[str, str] = {
    "DOCKER_CLI_IMAGE": DOCKER_CLI_IMAGE,
    "DOCKER_DIND_IMAGE": DOCKER_DIND_IMAGE,
    "CURL_IMAGE": CURL_IMAGE,
    "KUBECTL_IMAGE": KUBECTL_IMAGE,
    "NODE_IMAGE": NODE_IMAGE,
}

# ---- this repository's own pipeline (.gitlab-ci.yml) ----------------------------------------------
CI_PYTHON_IMAGE = "python:3.12.13-bookworm"
CI_PULUMI_IMAGE = "pulumi/pulumi-python-3.12:3.272.0"
# The e2e cleanup job's AWS CLI (PyPI `awscli`, in its own venv: the Pulumi image has none).
AWS_CLI_VERSION = "1.46.2"

# ---- the cluster's nodes (config defaults, components/kubeadm.py, userdata/cluster/) -----------------
# Kubernetes minors the program accepts (kubernetesVersion) and the default: kubelet, kubeadm and
# kubectl come from pkgs.k8s.io's repository of the minor, at its newest patch unless kubernetesPatch
# pins one. 1.35-1.37 are the minors upstream supports on 2026-11-30 (kubernetes.io/releases).
KUBERNETES_MINOR = "1.36"
SUPPORTED_KUBERNETES_MINORS = ("1.35", "1.36", "1.37")
# containerd.io from Docker's Debian repository, held to one release series so an `apt-get upgrade`
# never moves the runtime under the kubelet; the boot script installs the newest version of the
# series, by exact version. Move it when Docker publishes containerd.io 2.3 (REFERENCE.md section 1).
CONTAINERD_SERIES = "2.2"

# ---- cluster add-ons (config defaults) -------------------------------------------------------------
FLUX_VERSION = "v2.10.0"
FLANNEL_VERSION = "v0.28.9"

# ---- GitLab agent for Kubernetes (clusterIntegration agent) -----------------------------------------
# GitLab's official chart for agentk (gitlab-org/charts/gitlab-agent, served by charts.gitlab.io).
# The chart is versioned on its own and may lag the agent: pin it, and set the image tag (below).
GITLAB_AGENT_CHART = "gitlab-agent"
GITLAB_AGENT_CHART_REPOSITORY = "https://charts.gitlab.io"
GITLAB_AGENT_CHART_VERSION = "2.32.0"
AGENTK_IMAGE_REPOSITORY = "registry.gitlab.com/gitlab-org/cluster-integration/gitlab-agent/agentk"


def agentk_tag(gitlab_ce_tag: str) -> str:
    """agentk's image tag for a gitlab/gitlab-ce tag: the same release (19.4.1-ce.0 -> v19.4.1).

    KAS in the Omnibus image is built from the gitlab-agent repository at v<GitLab version>
    (omnibus-gitlab config/software/gitlab-kas.rb, GITLAB_KAS_VERSION), the tag agentk is released
    from; GitLab supports agentk of the same minor, and the previous and next minor.
    """
    version = gitlab_ce_tag.split("-", 1)[0]
    if not version or not all(part.isdigit() for part in version.split(".")) or version.count(".") != 2:
        raise ValueError(f"{gitlab_ce_tag!r} is not a gitlab/gitlab-ce tag such as {GITLAB_CE_TAG}")
    return f"v{version}"


# The agentk the default GitLab runs with (REFERENCE.md section 1).
AGENTK_TAG = agentk_tag(GITLAB_CE_TAG)


def gitlab_upgrade_stops(through_major: int = GITLAB_FIRST_UNSUPPORTED_MAJOR - 1) -> tuple[tuple[int, int], ...]:
    """The cited stops, then the documented x.2/x.5/x.8/x.11 rule up to ``through_major``."""
    stops = set(GITLAB_UPGRADE_STOPS_CITED)
    last = max(GITLAB_UPGRADE_STOPS_CITED)
    for major in range(last[0], through_major + 1):
        stops |= {(major, minor) for minor in GITLAB_UPGRADE_STOP_MINORS if (major, minor) > last}
    return tuple(sorted(stops))
