#!/usr/bin/env bash
# Step (control plane, over SSH), run when worker NODE_NAME is removed or replaced, before its
# instance goes: drain it (kubectl drain evicts through the eviction API, so PodDisruptionBudgets
# hold), then delete its Node, so that a replacement can join under the same name (kubeadm join
# refuses a name whose Node is Ready: cmd/kubeadm/app/cmd/phases/join/kubelet.go).
# The drain is kubeadm's documented one for removing a node (kubernetes.io "kubeadm reset"): pods
# without a controller and emptyDir data go with the node. A drain that cannot finish in time fails
# the step, and with it the `pulumi up`, before the instance is touched.
# Idempotent: no Node, nothing to do. An API server that does not answer (a broken cluster being
# torn down) cannot drain anything: the step says so and lets the instance go.
# Parameters: NODE_NAME, DRAIN_TIMEOUT_SECONDS.
# Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail
require_env NODE_NAME DRAIN_TIMEOUT_SECONDS
export KUBECONFIG=/etc/kubernetes/admin.conf

api_answers() { kubectl get --raw /readyz >/dev/null 2>&1; }
if ! (wait_until "${API_TIMEOUT_SECONDS:-120}" "the API server to answer" api_answers); then
  log "WARNING: the API server does not answer, so ${NODE_NAME} cannot be drained; its instance goes anyway"
  exit 0
fi
if ! kubectl get node "$NODE_NAME" >/dev/null 2>&1; then
  log "no Node ${NODE_NAME}: nothing to drain"
  exit 0
fi
log "draining ${NODE_NAME}"
if ! with_heartbeat "draining ${NODE_NAME}" kubectl drain "$NODE_NAME" --ignore-daemonsets --delete-emptydir-data \
  --force --timeout="${DRAIN_TIMEOUT_SECONDS}s" >&2; then
  kubectl get pods --all-namespaces --field-selector "spec.nodeName=${NODE_NAME}" -o wide >&2 || true
  die "could not drain ${NODE_NAME} within ${DRAIN_TIMEOUT_SECONDS}s (a PodDisruptionBudget?); the instance is untouched. Free the pods above, then run 'pulumi up' again"
fi
kubectl delete node "$NODE_NAME" --ignore-not-found >&2
log "${NODE_NAME} drained and its Node deleted"
