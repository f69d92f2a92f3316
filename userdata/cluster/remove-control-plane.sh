#!/usr/bin/env bash
# Step (first control-plane node, over SSH), run when control-plane node NODE_NAME is removed or
# replaced, before its instance goes and after the load balancer stopped sending it new connections
# (its target is deregistered first): drain it, remove its etcd member, then delete its Node and its
# mirror Pods. So its successor joins a cluster that no longer counts on the old member: kubeadm's
# join checks every member's health first (phase check-etcd) and fails on a dead one, and a replaced
# member must leave etcd before its successor joins (kubernetes.io "Creating a cluster with kubeadm",
# removing a node; `kubeadm reset` does the same from the node itself, which may be gone here).
# The drain is kubeadm's node-removal drain; a node whose kubelet no longer reports (Ready not True
# for NOT_READY_GRACE_SECONDS) is not drained (a drain would wait on Terminating pods), as for
# workers (remove-worker.sh). etcd refuses the removal when it would cost its quorum; then nothing is
# deleted and the instance is left alone. An API server that does not answer fails the step too.
# Idempotent: no member, no Node, nothing to do.
# Parameters: NODE_NAME, NODE_IP (its address when it joined), DRAIN_TIMEOUT_SECONDS.
# Runs with userdata/lib/common.sh, userdata/cluster/bootstrap-token.sh and
# userdata/cluster/etcd-members.sh in front (components/remote.py).
set -euo pipefail
require_env NODE_NAME NODE_IP DRAIN_TIMEOUT_SECONDS
export KUBECONFIG=/etc/kubernetes/admin.conf
API_TIMEOUT_SECONDS="${API_TIMEOUT_SECONDS:-600}"
NOT_READY_GRACE_SECONDS="${NOT_READY_GRACE_SECONDS:-90}"
[[ "$NODE_NAME" != "$(hostname)" ]] || die "refusing to remove ${NODE_NAME} from itself"

api_answers() { kubectl get --raw /readyz >/dev/null 2>&1; }
node_ready() {
  [[ "$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == "True" ]]
}

if ! (wait_until "$API_TIMEOUT_SECONDS" "the API server to answer" api_answers); then
  die "the API server does not answer, so ${NODE_NAME} can be neither drained nor removed from etcd; its instance is left alone. Run 'pulumi up' again once the first control-plane node answers"
fi
if kubectl get node "$NODE_NAME" >/dev/null 2>&1; then
  if node_ready || (wait_until "$NOT_READY_GRACE_SECONDS" "${NODE_NAME} to report Ready" node_ready); then
    log "draining ${NODE_NAME}"
    with_heartbeat "draining ${NODE_NAME}" kubectl drain "$NODE_NAME" --ignore-daemonsets --delete-emptydir-data \
      --force --timeout="${DRAIN_TIMEOUT_SECONDS}s" >&2 ||
      die "could not drain ${NODE_NAME} within ${DRAIN_TIMEOUT_SECONDS}s (a PodDisruptionBudget?); nothing was removed, the instance is untouched"
  else
    log "WARNING: ${NODE_NAME} is not Ready (its kubelet does not report): not drained"
  fi
fi

peer="https://${NODE_IP}:2380"
members="$(etcd_members)"
while read -r id name url _; do
  if [[ "$name" == "$NODE_NAME" || "$url" == "$peer" ]]; then
    remove_etcd_member "$id" "$NODE_NAME"
  fi
done <<<"$members"
delete_node_objects "$NODE_NAME"
log "${NODE_NAME} removed from etcd and from the cluster"
