#!/usr/bin/env bash
# Boot script of the GitLab host and of every CI job VM, run once by cloud-init (runcmd): Docker
# Engine, nothing else. On the GitLab host, GitLab and every secret arrive later over SSH
# (components/gitlab_host.py, userdata/gitlab/install.sh, seed-admin-token.sh); a job VM gets its
# jobs from the runner manager, through this Docker (components/runner_config.py).
#
# Docker's apt repository rather than Debian's docker.io: bookworm ships Engine 20.10 (API 1.41),
# end of life upstream, while the runner's docker executor (and dial-stdio, which needs the docker
# CLI on the VM) and the jobs' docker:dind are current.
# The repository key is fetched over HTTPS and accepted only with the fingerprint Docker publishes
# (docs.docker.com/engine/install/debian); the engine is pinned to one major version.
set -euo pipefail
STEP_NAME=install-docker
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "${HERE}/../lib/common.sh"

DOCKER_KEY_FINGERPRINT=9DC858229FC7DD38854AE2D88D81803C0EBFCD88
DOCKER_MAJOR=29
KEYRING=/etc/apt/keyrings/docker.asc
export DEBIAN_FRONTEND=noninteractive

# apt with a wait for the dpkg lock (apt-daily may hold it at boot) and retries for the network.
apt_get() {
  retry 5 apt-get -o DPkg::Lock::Timeout=300 -q "$@"
}

reachable() {
  timeout 5 bash -c ": </dev/tcp/$1/443" 2>/dev/null
}

docker_running() {
  docker info >/dev/null 2>&1
}

# The GitLab host's Elastic IP is associated moments after it starts: until then there is no route out.
wait_until 600 "a route to download.docker.com (Elastic IP association)" reachable download.docker.com

apt_get update
apt_get install -y --no-install-recommends ca-certificates curl gpg

log "installing Docker's apt key (expecting fingerprint ${DOCKER_KEY_FINGERPRINT})"
key="$(mktemp)"
gnupg_home="$(mktemp -d)"
retry 5 curl -fsSL --max-time 60 -o "$key" https://download.docker.com/linux/debian/gpg
fingerprints="$(GNUPGHOME="$gnupg_home" gpg --batch --show-keys --with-colons "$key" | awk -F: '$1 == "fpr" {print $10}')"
grep -qx "$DOCKER_KEY_FINGERPRINT" <<<"$fingerprints" ||
  die "the key served by download.docker.com has fingerprints [${fingerprints//$'\n'/ }], not ${DOCKER_KEY_FINGERPRINT}"
install -D -m 0644 "$key" "$KEYRING"
rm -rf "$key" "$gnupg_home"

# shellcheck source=/dev/null
codename="$(. /etc/os-release && printf '%s' "$VERSION_CODENAME")"
cat >/etc/apt/sources.list.d/docker.sources <<EOF
Types: deb
URIs: https://download.docker.com/linux/debian
Suites: ${codename}
Components: stable
Signed-By: ${KEYRING}
EOF
# Patch and security releases within the tested major version; a new major is a deliberate change.
cat >/etc/apt/preferences.d/docker <<EOF
Package: docker-ce docker-ce-cli
Pin: version 5:${DOCKER_MAJOR}.*
Pin-Priority: 1001
EOF

apt_get update
# containerd.io bundles runc; /etc/docker/daemon.json (log rotation) was written by cloud-init.
apt_get install -y --no-install-recommends docker-ce docker-ce-cli containerd.io
systemctl enable --now docker
wait_until 120 "the Docker daemon" docker_running
log "Docker Engine $(docker info --format '{{.ServerVersion}}') is running"
