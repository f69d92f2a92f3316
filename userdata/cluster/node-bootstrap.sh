#!/usr/bin/env bash
# Boot script of every Kubernetes node, run once by cloud-init: kernel settings, containerd.io,
# kubelet/kubeadm/kubectl. Public material only; init/join need secrets and run over SSH later, and
# what may change after boot (containerd's settings, registry trust, operator key) is the node
# material step's (node-config.sh), which runs before them.
# Parameters: /etc/gitops/cluster-node.env (KUBERNETES_MINOR, KUBERNETES_PATCH: exact or empty,
# CONTAINERD_SERIES). cloud-init also
# wrote the modules-load.d and sysctl.d files.
set -euo pipefail
STEP_NAME=node-bootstrap
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "${HERE}/../lib/common.sh"
# shellcheck source-path=SCRIPTDIR source=packages.sh
source "${HERE}/packages.sh"
ROOT="${FS_ROOT:-}" # tests run this script against a scratch directory
# shellcheck source=/dev/null
source "${ROOT}/etc/gitops/cluster-node.env"
require_env KUBERNETES_MINOR CONTAINERD_SERIES
export DEBIAN_FRONTEND=noninteractive
KEYRINGS=/etc/apt/keyrings

reachable() { timeout 5 bash -c ": </dev/tcp/$1/443" 2>/dev/null; }

log "swap off (the kubelet does not start with swap by default); overlay, br_netfilter, sysctls"
swapoff -a
sed -i -E '/^[^#].*[[:space:]]swap[[:space:]]/s/^/# off for the kubelet: /' "${ROOT}/etc/fstab"
modprobe overlay
modprobe br_netfilter
sysctl --system >/dev/null

# The control plane's Elastic IP is associated moments after it starts: until then, no internet.
wait_until 600 "outbound HTTPS to pkgs.k8s.io" reachable pkgs.k8s.io
apt_get update
apt_get install -y --no-install-recommends ca-certificates curl gpg conntrack socat ethtool iptables iproute2
install -d -m 0755 "${ROOT}${KEYRINGS}" "${ROOT}/etc/apt/sources.list.d"

# containerd.io (2.x, bundles runc) from Docker's repository: Debian 12's containerd 1.6 is end of
# life (docs.docker.com/engine/install/debian). Held to one release series: only a change of
# CONTAINERD_SERIES moves it.
# shellcheck source=/dev/null
codename="$(. "${ROOT}/etc/os-release" && printf '%s' "$VERSION_CODENAME")"
fetch_key https://download.docker.com/linux/debian/gpg "$KEYRINGS/docker.gpg"
printf 'deb [arch=%s signed-by=%s/docker.gpg] https://download.docker.com/linux/debian %s stable\n' \
  "$(dpkg --print-architecture)" "$KEYRINGS" "$codename" >"${ROOT}/etc/apt/sources.list.d/docker.list"
apt_get update
containerd="$(newest_version containerd.io "$CONTAINERD_SERIES")"
log "installing containerd.io ${containerd}"
apt_get install -y --no-install-recommends "containerd.io=${containerd}"
apt-mark hold containerd.io >/dev/null

# kubernetesPatch, or the newest patch of the minor; a worker's join moves it to the cluster's version.
use_kubernetes_minor "$KUBERNETES_MINOR"
version="$(kubernetes_deb_version "${KUBERNETES_PATCH:-$KUBERNETES_MINOR}")"
log "installing kubelet/kubeadm/kubectl ${version} and kubernetes-cni"
install_kubernetes "$version" kubelet kubeadm kubectl

# containerd.io's own config.toml disables the CRI plugin: the node material step writes the
# full one (containerd_config.py) and restarts containerd, before `kubeadm init`/`join`.
systemctl enable containerd
systemctl enable kubelet # restarts in a loop until kubeadm init/join configures it: expected

installed="$(installed_version kubeadm)"
[[ "$installed" == "v${KUBERNETES_MINOR}."* ]] || die "kubeadm ${installed} installed; configured minor: ${KUBERNETES_MINOR}"
log "ready for kubeadm: containerd $(containerd --version | awk '{print $3}'), kubeadm ${installed}"
