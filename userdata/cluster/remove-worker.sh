#!/usr/bin/env bash
# Step (control plane, over SSH), run when worker NODE_NAME is removed or replaced, before its
# instance goes: drain it (kubectl drain evicts through the eviction API, so PodDisruptionBudgets
# hold), then delete its Node, so that a replacement can join under the same name (kubeadm join
# refuses a name whose Node is Ready: cmd/kubeadm/app/cmd/phases/join/kubelet.go).
# The drain is kubeadm's documented one for removing a node (kubernetes.io "kubeadm reset"): pods
# without a controller and emptyDir data go with the node. A drain that cannot finish in time fails
# the step, and with it the `pulumi up`, before the instance is touched.
# A worker whose kubelet no longer reports (Ready not True for NOT_READY_GRACE_SECONDS: crashed,
# stopped, impaired) cannot confirm any pod's deletion, so a drain would wait on Terminating pods
# until it times out (kubernetes/kubernetes#85577): its Node is deleted instead, and the pod garbage
# collector force-deletes the pods bound to a Node that no longer exists (pkg/controller/podgc
# gc_controller.go gcOrphaned, after 40 s), which their controllers recreate elsewhere.
# An API server that does not answer within API_TIMEOUT_SECONDS (a control plane that just
# rebooted, or a broken one) fails the step: nothing is drained, the instance is left alone. The way
# out when the control plane is gone for good is in the README ("When the control plane cannot be
# reached").
# Idempotent: no Node, nothing to do.
# Parameters: NODE_NAME, DRAIN_TIMEOUT_SECONDS.
# Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail
require_env NODE_NAME DRAIN_TIMEOUT_SECONDS
export KUBECONFIG=/etc/kubernetes/admin.conf
API_TIMEOUT_SECONDS="${API_TIMEOUT_SECONDS:-600}"
NOT_READY_GRACE_SECONDS="${NOT_READY_GRACE_SECONDS:-90}"

api_answers() { kubectl get --raw /readyz >/dev/null 2>&1; }
node_ready() {
  [[ "$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == "True" ]]
}

if ! (wait_until "$API_TIMEOUT_SECONDS" "the API server to answer" api_answers); then
  die "the API server does not answer, so ${NODE_NAME} can be neither drained nor deleted from the cluster; its instance is left alone. Run 'pulumi up' again once the control plane answers; if it is gone for good, see the README, Day 2, 'When the control plane cannot be reached'"
fi
if ! kubectl get node "$NODE_NAME" >/dev/null 2>&1; then
  log "no Node ${NODE_NAME}: nothing to drain"
  exit 0
fi
if ! node_ready && ! (wait_until "$NOT_READY_GRACE_SECONDS" "${NODE_NAME} to report Ready" node_ready); then
  log "WARNING: ${NODE_NAME} is not Ready (its kubelet does not report): its pods cannot be evicted gracefully. Deleting its Node; the pod garbage collector deletes the pods bound to it and their controllers start them on other nodes"
  kubectl get pods --all-namespaces --field-selector "spec.nodeName=${NODE_NAME}" -o wide >&2 || true
  kubectl delete node "$NODE_NAME" --ignore-not-found >&2
  log "${NODE_NAME}'s Node deleted without a drain"
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
