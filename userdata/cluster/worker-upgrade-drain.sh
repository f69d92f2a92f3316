#!/usr/bin/env bash
# Step (control plane, over SSH), first of a worker's upgrade: drain NODE_NAME when its kubelet is
# not at KUBERNETES_VERSION (the version the control plane runs); nothing otherwise (a new cluster,
# a new worker, a re-run). The node is annotated so that the uncordon step knows this drain was
# ours: a node an operator cordoned stays cordoned.
# Parameters: NODE_NAME, KUBERNETES_VERSION (vX.Y.Z), DRAIN_TIMEOUT_SECONDS.
# Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail
require_env NODE_NAME KUBERNETES_VERSION DRAIN_TIMEOUT_SECONDS
export KUBECONFIG=/etc/kubernetes/admin.conf
DRAINED_FOR=gitops/drained-for-upgrade

kubelet="$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.nodeInfo.kubeletVersion}')"
if [[ "$kubelet" == "$KUBERNETES_VERSION" ]]; then
  log "${NODE_NAME} runs ${kubelet} already: no drain"
  exit 0
fi
log "${NODE_NAME} runs ${kubelet}: draining it before its upgrade to ${KUBERNETES_VERSION}"
if [[ "$(kubectl get node "$NODE_NAME" -o jsonpath='{.spec.unschedulable}')" != "true" ]]; then
  kubectl annotate node "$NODE_NAME" "${DRAINED_FOR}=${KUBERNETES_VERSION}" --overwrite >&2
fi
if ! with_heartbeat "draining ${NODE_NAME}" kubectl drain "$NODE_NAME" --ignore-daemonsets --delete-emptydir-data \
  --timeout="${DRAIN_TIMEOUT_SECONDS}s" >&2; then
  kubectl get pods --all-namespaces --field-selector "spec.nodeName=${NODE_NAME}" -o wide >&2 || true
  die "could not drain ${NODE_NAME} within ${DRAIN_TIMEOUT_SECONDS}s (a PodDisruptionBudget?); nothing was upgraded on it. Free the pods above, then run 'pulumi up' again"
fi
log "${NODE_NAME} drained"
