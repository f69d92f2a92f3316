#!/usr/bin/env bash
# Step (control plane, over SSH), last of a worker's upgrade: wait (bounded) until NODE_NAME is
# Ready with its kubelet at KUBERNETES_VERSION, then uncordon it if the drain step cordoned it (its
# annotation), so the next worker's drain only starts once this one takes pods again.
# Parameters: NODE_NAME, KUBERNETES_VERSION (vX.Y.Z), TIMEOUT_SECONDS.
# Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail
require_env NODE_NAME KUBERNETES_VERSION TIMEOUT_SECONDS
export KUBECONFIG=/etc/kubernetes/admin.conf
DRAINED_FOR=gitops/drained-for-upgrade

field() { kubectl get node "$NODE_NAME" -o "jsonpath=$1"; }
ready_at_version() {
  [[ "$(field '{.status.conditions[?(@.type=="Ready")].status}')" == "True" &&
    "$(field '{.status.nodeInfo.kubeletVersion}')" == "$KUBERNETES_VERSION" ]]
}
wait_until "$TIMEOUT_SECONDS" "${NODE_NAME} to be Ready at ${KUBERNETES_VERSION}" ready_at_version
if [[ -n "$(field "{.metadata.annotations.${DRAINED_FOR}}")" ]]; then
  kubectl uncordon "$NODE_NAME" >&2
  kubectl annotate node "$NODE_NAME" "${DRAINED_FOR}-" >&2
  log "${NODE_NAME} is Ready at ${KUBERNETES_VERSION} and schedulable again"
else
  log "${NODE_NAME} is Ready at ${KUBERNETES_VERSION}"
fi
