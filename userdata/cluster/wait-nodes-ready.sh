#!/usr/bin/env bash
# Step (control plane, over SSH): wait (bounded) until every node in NODE_NAMES (the control-plane
# nodes) is registered and Ready; on timeout fail with the node list. Workers have their own wait
# (admit-worker.sh) and their own removal (remove-worker.sh, which drains first).
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
next=$((SECONDS + HEARTBEAT_SECONDS))
while pending="$(not_ready)" && [[ -n "$pending" ]]; do
  if ((SECONDS >= next)); then
    log "still waiting for ${pending} to be Ready"
    next=$((SECONDS + HEARTBEAT_SECONDS))
  fi
  if ((SECONDS >= deadline)); then
    kubectl get nodes -o wide >&2 || true
    die "not Ready after ${TIMEOUT_SECONDS}s: ${pending}. On such a node: 'journalctl -u kubelet'; CNI: 'kubectl -n kube-flannel get pods -o wide'"
  fi
  sleep "$POLL_SECONDS"
done

kubectl get nodes -o wide >&2
log "all ${#expected[@]} nodes Ready"
