#!/usr/bin/env bash
# Step (a further control-plane node, over SSH), after the first control-plane node's upgrade and the
# previous member's: move this node to KUBERNETES_VERSION, the version the first node runs. "Same as
# the first control plane node but use `kubeadm upgrade node` instead of `kubeadm upgrade apply`"
# (kubernetes.io "Upgrading kubeadm clusters", other control plane nodes): kubeadm at the target,
# `kubeadm upgrade node` (this node's etcd and control-plane static pods, its certificates, its kubelet
# configuration), drain, kubelet and kubectl, restart the kubelet, Ready, uncordon. One node at a
# time: kubeadm upgrades the add-ons (CoreDNS, kube-proxy) with the last control-plane node.
# Idempotent and resumable: `kubeadm upgrade node` runs while kubeadm or this node's API server
# manifest is not at the target (it is idempotent: "Recovering from a failure state"); the kubelet
# part while the running kubelet is not. A node an operator cordoned stays cordoned.
# Parameters: NODE_NAME, KUBERNETES_VERSION (vX.Y.Z), DRAIN_TIMEOUT_SECONDS, TIMEOUT_SECONDS.
# Runs with userdata/lib/common.sh and userdata/cluster/packages.sh in front (components/remote.py).
set -euo pipefail
require_env NODE_NAME KUBERNETES_VERSION DRAIN_TIMEOUT_SECONDS TIMEOUT_SECONDS
[[ "$KUBERNETES_VERSION" =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "KUBERNETES_VERSION ${KUBERNETES_VERSION} is not vX.Y.Z"
export KUBECONFIG=/etc/kubernetes/admin.conf
DRAINED_FOR=gitops/drained-for-upgrade # annotation: we cordoned this node, we uncordon it
MANIFEST="${FS_ROOT:-}/etc/kubernetes/manifests/kube-apiserver.yaml"
target="$KUBERNETES_VERSION"

node_field() { kubectl get node "$NODE_NAME" -o "jsonpath=$1"; }
ready_at_target() {
  [[ "$(node_field '{.status.conditions[?(@.type=="Ready")].status}')" == "True" &&
    "$(node_field '{.status.nodeInfo.kubeletVersion}')" == "$target" ]]
}
# The version of this node's API server, from its static pod manifest (registry.k8s.io/kube-apiserver:vX.Y.Z).
api_server_at() { sed -n 's|^[ -]*image: .*/kube-apiserver:\(v[0-9.]*\)$|\1|p' "$MANIFEST" 2>/dev/null; }
packages() { # packages PACKAGE...: at the target version, from the target's repository
  local version="${target#v}" deb
  use_kubernetes_minor "${version%.*}"
  deb="$(kubernetes_deb_version "$version")"
  install_kubernetes "$deb" "$@"
}

# One kubeadm at a time on this host: the certificate renewal (its daily timer) parks and restores
# the static pod manifests that `kubeadm upgrade node` replaces.
hold_lock "${FS_ROOT:-}/run/gitops-kubeadm.lock" "the certificate renewal on this control-plane node"
if [[ "$(installed_version kubeadm)" != "$target" || "$(api_server_at)" != "$target" ]]; then
  log "upgrading control-plane node ${NODE_NAME} to ${target}"
  packages kubeadm
  [[ "$(installed_version kubeadm)" == "$target" ]] || die "kubeadm $(installed_version kubeadm) installed, ${target} wanted"
  with_heartbeat "upgrading this control-plane node" kubeadm upgrade node >&2
fi
if [[ "$(installed_version kubelet)" != "$target" || "$(node_field '{.status.nodeInfo.kubeletVersion}')" != "$target" ]]; then
  if [[ "$(node_field '{.spec.unschedulable}')" != "true" ]]; then
    kubectl annotate node "$NODE_NAME" "${DRAINED_FOR}=${target}" --overwrite >&2
  fi
  with_heartbeat "draining ${NODE_NAME}" kubectl drain "$NODE_NAME" --ignore-daemonsets --delete-emptydir-data \
    --timeout="${DRAIN_TIMEOUT_SECONDS}s" >&2 || die "could not drain ${NODE_NAME} within ${DRAIN_TIMEOUT_SECONDS}s"
  log "kubelet and kubectl to ${target}"
  packages kubeadm kubelet kubectl
  systemctl daemon-reload
  systemctl restart kubelet
fi
if [[ -n "$(node_field "{.metadata.annotations.${DRAINED_FOR}}")" ]]; then
  wait_until "$TIMEOUT_SECONDS" "${NODE_NAME} Ready at ${target}" ready_at_target
  kubectl uncordon "$NODE_NAME" >&2
  kubectl annotate node "$NODE_NAME" "${DRAINED_FOR}-" >&2
fi
log "control-plane node ${NODE_NAME} runs ${target}"
