#!/usr/bin/env bash
# Step (control plane, over SSH): wait (bounded) until every expected node is registered and
# Ready; on timeout fail with the node list. Workers removed from the configuration (workerN no
# longer expected) are deleted from the cluster so they do not linger as NotReady.
# Parameters: NODE_NAMES (space-separated), TIMEOUT_SECONDS. Runs with userdata/lib/common.sh in front.
set -euo pipefail
require_env NODE_NAMES TIMEOUT_SECONDS
export KUBECONFIG=/etc/kubernetes/admin.conf
read -r -a expected <<<"$NODE_NAMES"

node_ready() {
  [[ "$(kubectl get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == "True" ]]
}

not_ready() {
  local node missing=()
  for node in "${expected[@]}"; do
    node_ready "$node" || missing+=("$node")
  done
  printf '%s' "${missing[*]}"
}

log "waiting up to ${TIMEOUT_SECONDS}s for ${#expected[@]} Ready nodes: ${NODE_NAMES}"
deadline=$((SECONDS + TIMEOUT_SECONDS))
while pending="$(not_ready)" && [[ -n "$pending" ]]; do
  if ((SECONDS >= deadline)); then
    kubectl get nodes -o wide >&2 || true
    die "not Ready after ${TIMEOUT_SECONDS}s: ${pending}. On such a node: 'journalctl -u kubelet'; CNI: 'kubectl -n kube-flannel get pods -o wide'"
  fi
  sleep 10
done

for node in $(kubectl get nodes -o jsonpath='{.items[*].metadata.name}'); do
  if [[ "$node" =~ ^worker[0-9]+$ && " ${NODE_NAMES} " != *" ${node} "* ]]; then
    log "deleting ${node}: no longer in the configuration"
    kubectl delete node "$node" >&2
  fi
done
kubectl get nodes -o wide >&2
log "all ${#expected[@]} nodes Ready"
