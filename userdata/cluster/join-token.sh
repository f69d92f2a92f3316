#!/usr/bin/env bash
# Step (control plane, over SSH): (re)create the Pulumi-made bootstrap token with a fresh expiry,
# so that a worker added or replaced after `kubeadm init`'s 24 h can still join. Runs before
# every batch of joins (its triggers are the worker instances).
# stdin (secret): the token, <id>.<secret>. Only the token id is ever printed.
# Secret layout: kubernetes.io "Authenticating with Bootstrap Tokens" (type bootstrap.kubernetes.io/token).
# Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail
require_env TOKEN_TTL_HOURS TOKEN_GROUP
export KUBECONFIG=/etc/kubernetes/admin.conf

IFS= read -r token || die "no bootstrap token on stdin"
[[ "$token" =~ ^([a-z0-9]{6})\.([a-z0-9]{16})$ ]] || die "the bootstrap token on stdin is not [a-z0-9]{6}.[a-z0-9]{16}"
token_id="${BASH_REMATCH[1]}"
token_secret="${BASH_REMATCH[2]}"
expiration="$(date -u -d "+${TOKEN_TTL_HOURS} hours" +%Y-%m-%dT%H:%M:%SZ)"

# Delete and create (no concurrent join: every join step waits for this one).
kubectl -n kube-system delete secret "bootstrap-token-${token_id}" --ignore-not-found >&2
kubectl create -f - >&2 <<MANIFEST
apiVersion: v1
kind: Secret
metadata:
  name: bootstrap-token-${token_id}
  namespace: kube-system
type: bootstrap.kubernetes.io/token
stringData:
  description: "Worker join token made by Pulumi"
  token-id: "${token_id}"
  token-secret: "${token_secret}"
  expiration: "${expiration}"
  usage-bootstrap-authentication: "true"
  usage-bootstrap-signing: "true"
  auth-extra-groups: "${TOKEN_GROUP}"
MANIFEST
log "bootstrap token ${token_id} valid until ${expiration}"
