#!/usr/bin/env bash
# Step (control plane, over SSH): apply Flannel's pinned release manifest. Re-runs when the
# version changes; `kubectl apply` makes it idempotent.
# Parameters: FLANNEL_VERSION (vX.Y.Z), POD_SUBNET (kubeadm's podSubnet, must match the manifest).
# Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail
require_env FLANNEL_VERSION POD_SUBNET
export KUBECONFIG=/etc/kubernetes/admin.conf

# Release asset of flannel-io/flannel; it creates namespace kube-flannel and DaemonSet kube-flannel-ds.
url="https://github.com/flannel-io/flannel/releases/download/${FLANNEL_VERSION}/kube-flannel.yml"
manifest="$(mktemp)"
trap 'rm -f "$manifest"' EXIT
log "downloading ${url}"
retry 5 curl -fsSL --max-time 60 -o "$manifest" "$url"
# net-conf.json's "Network" must be the cluster's pod subnet, or pods get unroutable addresses.
grep -Fq "\"${POD_SUBNET}\"" "$manifest" ||
  die "kube-flannel.yml ${FLANNEL_VERSION} does not use pod network ${POD_SUBNET}: check net-conf.json"
retry 5 kubectl apply -f "$manifest" >&2
log "flannel ${FLANNEL_VERSION} applied"
