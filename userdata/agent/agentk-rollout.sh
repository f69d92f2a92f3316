#!/usr/bin/env bash
# Step (control plane, over SSH, with admin.conf; no GitLab credential): make the agentk pods that run
# now the ones that read the current agent token and run this GitLab's agentk, wait for them, and
# print their names: the connection step on the GitLab host (agent/wait-connected.sh) accepts only a
# connection from one of them. Fails with agentk's pods and logs when the rollout does not finish, or
# when their log already shows an error that no waiting fixes.
#
# A new token needs a restart (agentk reads --token-file when it starts; with config.secretName the
# chart adds no checksum of the token). The restart is keyed on the token's id as a pod-template
# annotation set here, not as a chart value: the id of a token being replaced is unknown during a
# preview, and helm.v4.Chart then registers none of its objects (pulumi-kubernetes
# provider/pkg/provider/helm/v4/chart.go Construct), so the preview would list agentk as deleted.
# The chart's own updates (Pulumi, server-side apply) leave an annotation it does not own alone.
# env (public): AGENT_NAMESPACE, POD_SELECTOR (agentk's pods and Deployment), AGENTK_IMAGE (what the
#   pods must run), AGENT_TOKEN_ID, TOKEN_ANNOTATION, TIMEOUT_SECONDS, LOG_GRACE_SECONDS (how long a
#   new pod's log is watched for such errors).
# stdout: the names of the pods that run now, comma-separated.
# Idempotent: it restarts agentk only when the pod template does not carry this token's id yet.
# Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail
# The pods' names alone reach stdout (`result`, at the end); everything else goes to stderr.
stdout_is_the_result

require_env AGENT_NAMESPACE POD_SELECTOR AGENTK_IMAGE AGENT_TOKEN_ID TOKEN_ANNOTATION TIMEOUT_SECONDS LOG_GRACE_SECONDS
[[ "$AGENT_TOKEN_ID" =~ ^[0-9]+$ ]] || die "AGENT_TOKEN_ID ${AGENT_TOKEN_ID} is not a token id"
[[ "$TOKEN_ANNOTATION" =~ ^[a-z0-9.-]+/[a-z0-9.-]+$ ]] || die "TOKEN_ANNOTATION ${TOKEN_ANNOTATION} is not an annotation key"
[[ "$TIMEOUT_SECONDS" =~ ^[0-9]+$ ]] || die "TIMEOUT_SECONDS ${TIMEOUT_SECONDS} is not a number of seconds"
[[ "$LOG_GRACE_SECONDS" =~ ^[0-9]+$ ]] || die "LOG_GRACE_SECONDS ${LOG_GRACE_SECONDS} is not a number of seconds"
export KUBECONFIG=/etc/kubernetes/admin.conf

diagnose() {
  log "agentk's pods (kubectl -n ${AGENT_NAMESPACE} get pods -l ${POD_SELECTOR}):"
  kubectl -n "$AGENT_NAMESPACE" get pods -l "$POD_SELECTOR" -o wide >&2 || true
  log "agentk's logs (last 200 lines per pod):"
  kubectl -n "$AGENT_NAMESPACE" logs -l "$POD_SELECTOR" --all-containers --prefix --tail=200 >&2 || true
}

fail() {
  diagnose
  die "$*"
}

deployment="$(kubectl -n "$AGENT_NAMESPACE" get deployments -l "$POD_SELECTOR" -o name)" ||
  fail "cannot list agentk's Deployment (kubectl -n ${AGENT_NAMESPACE} get deployments -l ${POD_SELECTOR})"
[[ -n "$deployment" && "$deployment" != *$'\n'* ]] ||
  fail "expected one agentk Deployment labelled ${POD_SELECTOR} in ${AGENT_NAMESPACE}, found: ${deployment:-none}"

# The token id the pod template carries (empty when it carries none yet).
started_with="$(kubectl -n "$AGENT_NAMESPACE" get "$deployment" -o json | python3 -c '
import json
import sys

template = json.load(sys.stdin)["spec"]["template"]
print((template.get("metadata", {}).get("annotations") or {}).get(sys.argv[1], ""))
' "$TOKEN_ANNOTATION")"
if [[ "$started_with" != "$AGENT_TOKEN_ID" ]]; then
  log "agentk's pods started with agent token ${started_with:-(none recorded)}; restarting them to read token ${AGENT_TOKEN_ID}"
  kubectl -n "$AGENT_NAMESPACE" patch "$deployment" --type=merge \
    -p "{\"spec\":{\"template\":{\"metadata\":{\"annotations\":{\"${TOKEN_ANNOTATION}\":\"${AGENT_TOKEN_ID}\"}}}}}" >&2
else
  log "agentk's pods already run with agent token ${AGENT_TOKEN_ID}"
fi

log "waiting up to ${TIMEOUT_SECONDS}s for ${deployment} to finish rolling out"
kubectl -n "$AGENT_NAMESPACE" rollout status "$deployment" --timeout="${TIMEOUT_SECONDS}s" >&2 ||
  fail "agentk's pods did not become ready within ${TIMEOUT_SECONDS}s (an image pull error: is ${AGENTK_IMAGE} published?)"

# The pods that run now: not terminating, started from this token's template, running this image.
pods="$(kubectl -n "$AGENT_NAMESPACE" get pods -l "$POD_SELECTOR" -o json | python3 -c '
import json
import sys

annotation, token_id, image = sys.argv[1:4]
current = []
for pod in json.load(sys.stdin)["items"]:
    metadata = pod["metadata"]
    images = [container.get("image") for container in pod["spec"]["containers"]]
    if metadata.get("deletionTimestamp"):
        continue
    if (metadata.get("annotations") or {}).get(annotation) == token_id and image in images:
        current.append(metadata["name"])
print(",".join(sorted(current)))
' "$TOKEN_ANNOTATION" "$AGENT_TOKEN_ID" "$AGENTK_IMAGE")"
[[ -n "$pods" ]] ||
  fail "no agentk pod runs ${AGENTK_IMAGE} with agent token ${AGENT_TOKEN_ID} although ${deployment} rolled out"

# agentk dials GitLab as soon as it starts; these errors are configuration, not a slow start
# (gitlabhq doc/user/clusters/agent/troubleshooting.md).
sleep "$LOG_GRACE_SECONDS"
IFS=, read -r -a names <<<"$pods"
for pod in "${names[@]}"; do
  recent="$(kubectl -n "$AGENT_NAMESPACE" logs "$pod" --all-containers --since="$((LOG_GRACE_SECONDS + 60))s")" || recent=""
  case "$recent" in
    *"x509: certificate signed by unknown authority"*)
      fail "agentk (${pod}) does not trust GitLab's certificate: config.kasCaCert is not GitLab's CA" ;;
    *"expected handshake response status code 101 but got 301"*)
      fail "agentk (${pod}) dials a KAS address without its trailing slash (config.kasAddress)" ;;
    *"Decompressor is not installed"*)
      fail "agentk (${pod}) and GitLab's agent server are too far apart in version (${AGENTK_IMAGE})" ;;
  esac
done
log "agentk runs in ${pods//,/, }"
result "$pods"
