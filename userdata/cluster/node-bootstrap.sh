#!/usr/bin/env bash
# Boot script of every Kubernetes node, run once by cloud-init: kernel settings, containerd,
# kubelet/kubeadm/kubectl. Public material only; init/join need secrets and run over SSH later.
# Parameters: /etc/gitops/cluster-node.env (KUBERNETES_MINOR, REGISTRY_HOST). cloud-init also wrote
# the registry trust (/etc/containerd/certs.d/<REGISTRY_HOST>/), modules-load.d and sysctl.d files.
set -euo pipefail
STEP_NAME=node-bootstrap
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "${HERE}/../lib/common.sh"
# shellcheck source=/dev/null
source /etc/gitops/cluster-node.env
require_env KUBERNETES_MINOR REGISTRY_HOST
export DEBIAN_FRONTEND=noninteractive
KEYRINGS=/etc/apt/keyrings

apt_get() { # waits for the dpkg lock (apt-daily at boot), retries network failures
  retry 5 apt-get -o DPkg::Lock::Timeout=300 -q "$@"
}

fetch_key() { # fetch_key URL KEYRING: an armored repository key, dearmored for signed-by=
  local armored
  armored="$(mktemp)"
  retry 5 curl -fsSL --max-time 60 -o "$armored" "$1"
  gpg --batch --yes --dearmor -o "$2" "$armored"
  chmod 0644 "$2"
  rm -f "$armored"
}

reachable() { timeout 5 bash -c ": </dev/tcp/$1/443" 2>/dev/null; }

log "swap off (the kubelet does not start with swap by default); overlay, br_netfilter, sysctls"
swapoff -a
sed -i -E '/^[^#].*[[:space:]]swap[[:space:]]/s/^/# off for the kubelet: /' /etc/fstab
modprobe overlay
modprobe br_netfilter
sysctl --system >/dev/null

# The control plane's Elastic IP is associated moments after it starts: until then, no internet.
wait_until 600 "outbound HTTPS to pkgs.k8s.io" reachable pkgs.k8s.io
apt_get update
apt_get install -y --no-install-recommends ca-certificates curl gpg conntrack socat ethtool iptables iproute2
install -d -m 0755 "$KEYRINGS"

# containerd.io (2.x, bundles runc) from Docker's repository: Debian 12's containerd 1.6 is end of
# life (docs.docker.com/engine/install/debian).
# shellcheck source=/dev/null
codename="$(. /etc/os-release && printf '%s' "$VERSION_CODENAME")"
fetch_key https://download.docker.com/linux/debian/gpg "$KEYRINGS/docker.gpg"
printf 'deb [arch=%s signed-by=%s/docker.gpg] https://download.docker.com/linux/debian %s stable\n' \
  "$(dpkg --print-architecture)" "$KEYRINGS" "$codename" >/etc/apt/sources.list.d/docker.list

# One pkgs.k8s.io repository per minor (kubernetes.io "Installing kubeadm").
k8s_repo="https://pkgs.k8s.io/core:/stable:/v${KUBERNETES_MINOR}/deb/"
fetch_key "${k8s_repo}Release.key" "$KEYRINGS/kubernetes-apt-keyring.gpg"
printf 'deb [signed-by=%s/kubernetes-apt-keyring.gpg] %s /\n' "$KEYRINGS" "$k8s_repo" \
  >/etc/apt/sources.list.d/kubernetes.list

log "installing containerd.io and kubelet/kubeadm/kubectl ${KUBERNETES_MINOR}"
apt_get update
apt_get install -y --no-install-recommends containerd.io kubelet kubeadm kubectl
apt-mark hold kubelet kubeadm kubectl # upgrades are `kubeadm upgrade`'s business

# containerd.io's own config.toml disables the CRI plugin: start from the full default.
install -d -m 0755 /etc/containerd
containerd config default | python3 "${HERE}/containerd_config.py" >/etc/containerd/config.toml.new
mv /etc/containerd/config.toml.new /etc/containerd/config.toml
[[ -f "/etc/containerd/certs.d/${REGISTRY_HOST}/hosts.toml" ]] || die "no registry trust for ${REGISTRY_HOST}"
systemctl enable containerd
systemctl restart containerd
wait_until 60 "containerd's socket" test -S /run/containerd/containerd.sock
systemctl enable kubelet # restarts in a loop until kubeadm init/join configures it: expected

version="$(kubeadm version -o short)"
[[ "$version" == "v${KUBERNETES_MINOR}."* ]] || die "kubeadm ${version} installed; configured minor: ${KUBERNETES_MINOR}"
log "ready for kubeadm: containerd $(containerd --version | awk '{print $3}'), kubeadm ${version}"
