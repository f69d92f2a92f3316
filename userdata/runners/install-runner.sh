#!/usr/bin/env bash
# Step (runner manager, over SSH): GitLab Runner from GitLab's apt repository, at the pinned release.
# env (public): GITLAB_RUNNER_VERSION (X.Y.Z, components/versions.py or gitlabRunnerVersion).
# FS_ROOT is empty on a host: the step's behaviour tests point it at a scratch directory.
#
# The repository is added by hand rather than by piping packages.gitlab.com's setup script into
# bash: its metadata key is fetched over HTTPS and accepted only with the fingerprint GitLab
# publishes for every repository on packages.gitlab.com (omnibus-gitlab
# doc/update/package_signatures.md, "Current repository signing key", expiry 2028-02-06). A pinned
# release needs gitlab-runner-helper-images of the same version, named explicitly
# (gitlab-runner docs/install/linux-repository.md, "To install a specific version"); both are held
# so that no unattended upgrade moves them. The package's post-install script registers and starts
# the gitlab-runner service (packaging/root/usr/share/gitlab-runner/post-install).
# Idempotent: nothing is downloaded when both packages already have the pinned version.
# Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail

require_env GITLAB_RUNNER_VERSION
[[ "$GITLAB_RUNNER_VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
  die "GITLAB_RUNNER_VERSION ${GITLAB_RUNNER_VERSION} is not a release such as 19.4.1"
wait_for_cloud_init

ROOT="${FS_ROOT:-}"
KEY_FINGERPRINT=F6403F6544A38863DAA0B6E03F01618A51312F3F
KEY_URL=https://packages.gitlab.com/gpgkey/gpg.key
REPOSITORY=https://packages.gitlab.com/runner/gitlab-runner/debian/
KEYRING=/etc/apt/keyrings/gitlab-runner.asc
PACKAGES=(gitlab-runner gitlab-runner-helper-images)
version="${GITLAB_RUNNER_VERSION}-1" # the Debian revision GitLab's packages carry (linux-repository.md)
export DEBIAN_FRONTEND=noninteractive

apt_get() {
  retry 5 apt-get -o DPkg::Lock::Timeout=300 -q "$@"
}

installed_version() {
  dpkg-query --show --showformat '${Version}' "$1" 2>/dev/null || true
}

up_to_date() {
  local package
  for package in "${PACKAGES[@]}"; do
    [[ "$(installed_version "$package")" == "$version" ]] || return 1
  done
}

if up_to_date; then
  log "gitlab-runner ${version} is installed"
else
  apt_get update
  apt_get install -y --no-install-recommends ca-certificates curl gpg

  log "installing GitLab's package repository key (expecting fingerprint ${KEY_FINGERPRINT})"
  key="$(mktemp)"
  gnupg_home="$(mktemp -d)"
  retry 5 curl -fsSL --max-time 60 -o "$key" "$KEY_URL"
  fingerprints="$(GNUPGHOME="$gnupg_home" gpg --batch --show-keys --with-colons "$key" | awk -F: '$1 == "fpr" {print $10}')"
  grep -qx "$KEY_FINGERPRINT" <<<"$fingerprints" ||
    die "the key served at ${KEY_URL} has fingerprints [${fingerprints//$'\n'/ }], not ${KEY_FINGERPRINT}"
  install -D -m 0644 "$key" "${ROOT}${KEYRING}"
  rm -rf "$key" "$gnupg_home"

  # shellcheck source=/dev/null
  codename="$(. "${ROOT}/etc/os-release" && printf '%s' "$VERSION_CODENAME")"
  install -d -m 0755 "${ROOT}/etc/apt/sources.list.d"
  printf 'deb [signed-by=%s] %s %s main\n' "$KEYRING" "$REPOSITORY" "$codename" \
    >"${ROOT}/etc/apt/sources.list.d/gitlab-runner.list"

  apt_get update
  log "installing gitlab-runner ${version} (was: $(installed_version gitlab-runner || true))"
  apt_get install -y --no-install-recommends --allow-change-held-packages --allow-downgrades \
    "${PACKAGES[@]/%/=${version}}"
  apt-mark hold "${PACKAGES[@]}" >/dev/null
  up_to_date || die "gitlab-runner is $(installed_version gitlab-runner) after the install, not ${version}"
fi

gitlab-runner --version >&2
