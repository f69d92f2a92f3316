#!/usr/bin/env bash
# The Pulumi-made bootstrap token, kept valid while a node joins: a library for the steps that admit
# a node (admit-worker.sh, admit-control-plane.sh). Needs common.sh's retry/die/log.
# Secret layout: kubernetes.io "Authenticating with Bootstrap Tokens" (type bootstrap.kubernetes.io/token).
# Server-side apply: several nodes' steps may renew it at once, and no copy of the Secret lands in a
# last-applied annotation. Only the token id is ever printed.
# shellcheck shell=bash

# renew_bootstrap_token TTL_HOURS GROUP: reads the token, <id>.<secret>, from stdin and applies its
# Secret with an expiry TTL_HOURS from now, in GROUP (kubeadm's node bootstrap group).
renew_bootstrap_token() {
  local ttl_hours="$1" group="$2" token token_id token_secret expiration
  IFS= read -r token || die "no bootstrap token on stdin"
  [[ "$token" =~ ^([a-z0-9]{6})\.([a-z0-9]{16})$ ]] || die "the bootstrap token on stdin is not [a-z0-9]{6}.[a-z0-9]{16}"
  token_id="${BASH_REMATCH[1]}"
  token_secret="${BASH_REMATCH[2]}"
  expiration="$(date -u -d "+${ttl_hours} hours" +%Y-%m-%dT%H:%M:%SZ)"
  # The manifest holds the token, so it goes to a file only root can read, removed on exit. A file,
  # not stdin, so that every attempt of the retry reads the whole manifest (a here-document is read once).
  umask 077
  _token_manifest="$(mktemp)"
  trap 'rm -f "$_token_manifest"' EXIT
  # `data`, base64-encoded: stringData is write-only and does not round-trip through server-side apply.
  cat >"$_token_manifest" <<MANIFEST
apiVersion: v1
kind: Secret
metadata:
  name: bootstrap-token-${token_id}
  namespace: kube-system
type: bootstrap.kubernetes.io/token
data:
  description: $(_b64 "Worker join token made by Pulumi")
  token-id: $(_b64 "$token_id")
  token-secret: $(_b64 "$token_secret")
  expiration: $(_b64 "$expiration")
  usage-bootstrap-authentication: $(_b64 true)
  usage-bootstrap-signing: $(_b64 true)
  auth-extra-groups: $(_b64 "$group")
MANIFEST
  retry 5 kubectl apply --server-side --force-conflicts --field-manager=gitops-admit -f "$_token_manifest" >&2
  rm -f "$_token_manifest"
  log "bootstrap token ${token_id} valid until ${expiration}"
}

_b64() { printf '%s' "$1" | base64 -w 0; }
