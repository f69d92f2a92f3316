#!/usr/bin/env bash
# The operator's SSH key, as a function for the steps that keep it in step with operatorSshPublicKey
# (userdata/hosts/operator-ssh-key.sh, userdata/cluster/node-config.sh). A library: sent after
# common.sh (components/remote.py); needs its log/die.
# shellcheck shell=bash

# sync_operator_ssh_key USER KEY: make KEY (one OpenSSH public key line, or empty) the operator's
# key in USER's authorized_keys: add it if missing, remove the key this function added before if it
# changed. Other keys (the Pulumi-made key the steps use) are never touched. Idempotent.
sync_operator_ssh_key() {
  local user="$1" key="$2" home auth state previous="" tmp
  home="$(getent passwd "$user" | cut -d: -f6)"
  [[ -n "$home" ]] || die "no user ${user} on this host"
  auth="${FS_ROOT:-}${home}/.ssh/authorized_keys"
  state="${FS_ROOT:-}/etc/gitops/operator_ssh_public_key"
  [[ -f "$state" ]] && previous="$(cat "$state")"
  [[ -f "$auth" ]] || die "${auth} is missing: the host has no login key"
  tmp="$(mktemp "${auth}.XXXXXX")"
  if [[ -n "$previous" && "$previous" != "$key" ]]; then
    grep -vxF -- "$previous" "$auth" >"$tmp" || true
  else
    cat "$auth" >"$tmp"
  fi
  if [[ -n "$key" ]] && ! grep -qxF -- "$key" "$tmp"; then
    printf '%s\n' "$key" >>"$tmp"
  fi
  if cmp -s "$tmp" "$auth"; then
    rm -f "$tmp"
  else
    chmod 0600 "$tmp"
    chown --reference="$auth" "$tmp"
    mv -f "$tmp" "$auth"
    if [[ -n "$key" ]]; then log "operator SSH key of ${user} updated"; else log "operator SSH key of ${user} removed"; fi
  fi
  install -d -m 0755 "$(dirname "$state")"
  printf '%s' "$key" >"$state"
}
