#!/usr/bin/env bash
# Step (first control-plane node, over SSH; controlPlaneCount 3): before any further control-plane
# node is made, check that this cluster can take one, and refuse otherwise, naming the way forward.
# - kubeadm's controlPlaneEndpoint must be the stable name CONTROL_PLANE_ENDPOINT. kubeadm refuses a
#   control-plane join without one (cmd/kubeadm/app/cmd/phases/join/preflight.go) and a node's address
#   passes that test, but then every kubeconfig and kube-proxy would keep pointing at this node alone.
#   kubeadm does not support turning such a cluster into a highly available one (kubernetes.io
#   "Creating a cluster with kubeadm": "Turning a single control plane cluster created without
#   --control-plane-endpoint into a highly available cluster is not supported by kubeadm").
# - the shared public files on this node (SHARED_PUBLIC_SHA256: `<file>=<sha256>` words, the
#   Pulumi-made ones) must be what the new members get: a cluster initialised before the program made
#   them has kubeadm's own service-account key (tokens it signed would not verify on the others) and
#   etcd CA (peers would not trust each other).
# Changes nothing. Parameters: CONTROL_PLANE_ENDPOINT, SHARED_PUBLIC_SHA256.
# Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail
require_env CONTROL_PLANE_ENDPOINT SHARED_PUBLIC_SHA256
export KUBECONFIG=/etc/kubernetes/admin.conf
pki="${FS_ROOT:-}/etc/kubernetes/pki"

endpoint="$(kubectl -n kube-system get configmap kubeadm-config -o jsonpath='{.data.ClusterConfiguration}' |
  sed -n 's/^controlPlaneEndpoint: *//p')"
problems=()
if [[ "$endpoint" != "$CONTROL_PLANE_ENDPOINT" ]]; then
  problems+=("its controlPlaneEndpoint is ${endpoint:-not set}, not the stable ${CONTROL_PLANE_ENDPOINT}")
fi
read -r -a expected <<<"$SHARED_PUBLIC_SHA256"
for pair in "${expected[@]}"; do
  file="${pair%%=*}"
  have="$(sha256sum "${pki}/${file}" 2>/dev/null | cut -d ' ' -f 1)" || true
  if [[ "$have" != "${pair#*=}" ]]; then
    problems+=("its ${file} was made by kubeadm on this node, not by the program")
  fi
done
if ((${#problems[@]})); then
  die "refusing controlPlaneCount 3: this cluster was created before this program gave every cluster a stable endpoint and shared keys, and kubeadm cannot add control-plane nodes to it safely: $(
    IFS=';'
    echo "${problems[*]}"
  ). Nothing was changed. Set controlPlaneCount back to 1 ('pulumi config set controlPlaneCount 1', then 'pulumi up'); for a highly available control plane, create a new stack with this program and move to it (README, 'Highly available control plane')"
fi
log "the cluster uses ${endpoint} and the program's shared keys: it can take further control-plane nodes"
