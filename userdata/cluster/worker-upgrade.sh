#!/usr/bin/env bash
# Step (worker, over SSH), second of a worker's upgrade, after its drain: move this node to
# KUBERNETES_VERSION, the version the control plane runs: repository to its minor, kubeadm,
# `kubeadm upgrade node` (the kubelet configuration), kubelet and kubectl, restart the kubelet
# (kubernetes.io "Upgrading Linux nodes"). Nothing to do when kubeadm and the kubelet are installed
# at it and the running kubelet reports it (its Node's status.nodeInfo.kubeletVersion, read with the
# kubelet's own credentials): a run cut between the install and the restart is finished.
# Parameters: NODE_NAME, KUBERNETES_VERSION (vX.Y.Z). Runs with userdata/lib/common.sh and
# userdata/cluster/packages.sh in front (components/remote.py).
set -euo pipefail
require_env NODE_NAME KUBERNETES_VERSION
[[ "$KUBERNETES_VERSION" =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "KUBERNETES_VERSION ${KUBERNETES_VERSION} is not vX.Y.Z"

running_kubelet() {
  kubectl get node "$NODE_NAME" --kubeconfig=/etc/kubernetes/kubelet.conf \
    -o 'jsonpath={.status.nodeInfo.kubeletVersion}' 2>/dev/null || true
}
if [[ "$(installed_version kubeadm)" == "$KUBERNETES_VERSION" && "$(installed_version kubelet)" == "$KUBERNETES_VERSION" &&
  "$(running_kubelet)" == "$KUBERNETES_VERSION" ]]; then
  log "this node runs ${KUBERNETES_VERSION} already: nothing to do"
  exit 0
fi
version="${KUBERNETES_VERSION#v}"
use_kubernetes_minor "${version%.*}"
deb="$(kubernetes_deb_version "$version")"
log "upgrading this node to ${KUBERNETES_VERSION}"
install_kubernetes "$deb" kubeadm
with_heartbeat "upgrading the kubelet configuration" kubeadm upgrade node >&2
install_kubernetes "$deb" kubeadm kubelet kubectl
systemctl daemon-reload
systemctl restart kubelet
log "kubelet $(installed_version kubelet) restarted"
