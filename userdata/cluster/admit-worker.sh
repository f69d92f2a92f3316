#!/usr/bin/env bash
# Step (control plane, over SSH): admit worker NODE_NAME. Renews the Pulumi-made bootstrap token's
# expiry (userdata/cluster/bootstrap-token.sh), then waits (bounded) until the worker's Node is
# Ready. It runs while the worker's join is pending (it is created with the worker, and fails, so
# runs again on the next `pulumi up`, whenever the join did not finish): a join never meets an
# expired token, whatever its delay.
# Its counterpart on removal is remove-worker.sh (the same Pulumi resource's delete).
# stdin (secret): the token, <id>.<secret>. Only the token id is ever printed.
# Runs with userdata/lib/common.sh and userdata/cluster/bootstrap-token.sh in front (components/remote.py).
set -euo pipefail
require_env NODE_NAME TOKEN_TTL_HOURS TOKEN_GROUP TIMEOUT_SECONDS
export KUBECONFIG=/etc/kubernetes/admin.conf

renew_bootstrap_token "$TOKEN_TTL_HOURS" "$TOKEN_GROUP"

node_ready() {
  [[ "$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == "True" ]]
}
wait_until "$TIMEOUT_SECONDS" "worker ${NODE_NAME} to join and be Ready (its own log: the ${NODE_NAME}-join step)" node_ready
log "worker ${NODE_NAME} is Ready"
