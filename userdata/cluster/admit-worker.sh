#!/usr/bin/env bash
# Step (control plane, over SSH): admit worker NODE_NAME. Renews the Pulumi-made bootstrap token's
# expiry, then waits (bounded) until the worker's Node is Ready. It runs while the worker's join
# is pending (it is created with the worker, and fails, so runs again on the next `pulumi up`,
# whenever the join did not finish): a join never meets an expired token, whatever its delay.
# Its counterpart on removal is remove-worker.sh (the same Pulumi resource's delete).
# stdin (secret): the token, <id>.<secret>. Only the token id is ever printed.
# Secret layout: kubernetes.io "Authenticating with Bootstrap Tokens" (type bootstrap.kubernetes.io/token).
# Server-side apply: several workers' steps may renew it at once, and no copy of the Secret lands in
# a last-applied annotation. Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail
require_env NODE_NAME TOKEN_TTL_HOURS TOKEN_GROUP TIMEOUT_SECONDS
export KUBECONFIG=/etc/kubernetes/admin.conf

IFS= read -r token || die "no bootstrap token on stdin"
[[ "$token" =~ ^([a-z0-9]{6})\.([a-z0-9]{16})$ ]] || die "the bootstrap token on stdin is not [a-z0-9]{6}.[a-z0-9]{16}"
token_id="${BASH_REMATCH[1]}"
token_secret="${BASH_REMATCH[2]}"
expiration="$(date -u -d "+${TOKEN_TTL_HOURS} hours" +%Y-%m-%dT%H:%M:%SZ)"

b64() { printf '%s' "$1" | base64 -w 0; }
# The manifest holds the token, so it goes to a file only root can read, removed on exit. A file,
# not stdin, so that every attempt of the retry reads the whole manifest (a here-document is read once).
umask 077
manifest="$(mktemp)"
trap 'rm -f "$manifest"' EXIT
# `data`, base64-encoded: stringData is write-only and does not round-trip through server-side apply.
cat >"$manifest" <<MANIFEST
apiVersion: v1
kind: Secret
metadata:
  name: bootstrap-token-${token_id}
  namespace: kube-system
type: bootstrap.kubernetes.io/token
data:
  description: $(b64 "Worker join token made by Pulumi")
  token-id: $(b64 "$token_id")
  token-secret: $(b64 "$token_secret")
  expiration: $(b64 "$expiration")
  usage-bootstrap-authentication: $(b64 true)
  usage-bootstrap-signing: $(b64 true)
  auth-extra-groups: $(b64 "$TOKEN_GROUP")
MANIFEST
retry 5 kubectl apply --server-side --force-conflicts --field-manager=gitops-admit -f "$manifest" >&2
log "bootstrap token ${token_id} valid until ${expiration}"

node_ready() {
  [[ "$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == "True" ]]
}
wait_until "$TIMEOUT_SECONDS" "worker ${NODE_NAME} to join and be Ready (its own log: the ${NODE_NAME}-join step)" node_ready
log "worker ${NODE_NAME} is Ready"
