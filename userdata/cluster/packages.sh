#!/usr/bin/env bash
# Kubernetes packages on a node, as functions: one pkgs.k8s.io repository per minor, packages at an
# exact version and held, so that only these functions ever move them (kubernetes.io "Installing
# kubeadm"; "Changing the Kubernetes package repository"; "Upgrading kubeadm clusters").
# A library: node-bootstrap.sh sources it at boot; remote steps get it after common.sh
# (components/remote.py). Needs common.sh's retry/die/log.
# shellcheck shell=bash

K8S_KEYRING=/etc/apt/keyrings/kubernetes-apt-keyring.gpg
K8S_SOURCES=/etc/apt/sources.list.d/kubernetes.list
# kubernetes-cni is installed explicitly: pkgs.k8s.io has repeatedly published a minor without it at
# first, which broke kubelet installs that only pulled it in as a dependency (kubernetes/kubernetes
# #135803, #138534, #141601); the plugins flannel delegates to are checked after every install.
CNI_PLUGINS=(bridge host-local loopback portmap)

apt_get() { # waits for the dpkg lock (apt-daily at boot), retries network failures
  retry 5 apt-get -o DPkg::Lock::Timeout=300 -q "$@"
}

fetch_key() { # fetch_key URL KEYRING: an armored repository key, dearmored for signed-by=
  local armored
  armored="$(mktemp)"
  retry 5 curl -fsSL --max-time 60 -o "$armored" "$1"
  gpg --batch --yes --dearmor -o "${FS_ROOT:-}$2" "$armored"
  chmod 0644 "${FS_ROOT:-}$2"
  rm -f "$armored"
}

# use_kubernetes_minor MINOR: apt follows pkgs.k8s.io's v<MINOR> repository (its key included).
use_kubernetes_minor() {
  local repo="https://pkgs.k8s.io/core:/stable:/v$1/deb/"
  if ! grep -Fqs "$repo" "${FS_ROOT:-}$K8S_SOURCES"; then
    log "package repository: ${repo}"
    install -d -m 0755 "$(dirname "${FS_ROOT:-}$K8S_KEYRING")" "$(dirname "${FS_ROOT:-}$K8S_SOURCES")"
    fetch_key "${repo}Release.key" "$K8S_KEYRING"
    printf 'deb [signed-by=%s] %s /\n' "$K8S_KEYRING" "$repo" >"${FS_ROOT:-}$K8S_SOURCES"
  fi
  apt_get update
}

# newest_version PACKAGE VERSION: the newest package version of VERSION (1.36 or 1.36.5 for
# kubeadm, e.g. 1.36.5-1.1; 2.2 for containerd.io, e.g. 2.2.5-1~debian.12~bookworm).
newest_version() {
  local package="$1" wanted="$2" found
  found="$(apt-cache madison "$package" | awk -F'|' '{ gsub(/ /, "", $2); print $2 }' |
    grep -E "^${wanted//./\\.}[.-]" | sort -V | tail -n 1)" || true
  [[ -n "$found" ]] || die "no ${package} ${wanted} package in the configured repositories (apt-cache madison ${package})"
  printf '%s\n' "$found"
}

kubernetes_deb_version() { newest_version kubeadm "$1"; }

# install_kubernetes DEB_VERSION PACKAGE...: those packages at exactly DEB_VERSION, plus
# kubernetes-cni, all held. Downgrades are allowed: a new node follows the version the cluster runs.
install_kubernetes() {
  local version="$1" package specs=()
  shift
  for package in "$@"; do
    specs+=("${package}=${version}")
  done
  apt_get install -y --no-install-recommends --allow-downgrades --allow-change-held-packages \
    "${specs[@]}" kubernetes-cni
  apt-mark hold "$@" kubernetes-cni >/dev/null
  check_cni_plugins
}

check_cni_plugins() {
  local plugin
  for plugin in "${CNI_PLUGINS[@]}"; do
    [[ -x "${FS_ROOT:-}/opt/cni/bin/${plugin}" ]] ||
      die "/opt/cni/bin/${plugin} is missing: is kubernetes-cni published for this minor? (apt-cache policy kubernetes-cni)"
  done
}

# installed_version COMMAND: what kubeadm or kubelet reports, as vX.Y.Z.
installed_version() {
  case "$1" in
    kubeadm) kubeadm version -o short ;;
    kubelet) kubelet --version | awk '{ print $2 }' ;;
    *) die "installed_version: unknown ${1}" ;;
  esac
}
