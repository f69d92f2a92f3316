#!/usr/bin/env bash
# Step (any host, over SSH): make operatorSshPublicKey the operator's key in the login user's
# authorized_keys, now and after every change of it, with no reboot (cloud-init only adds it at
# first boot). Idempotent: sync_operator_ssh_key adds a missing key and removes only the key it added.
# Parameters: SSH_USER, OPERATOR_SSH_PUBLIC_KEY (may be empty: the former key is removed).
# Runs with userdata/lib/common.sh and userdata/lib/operator-key.sh in front (components/remote.py).
set -euo pipefail
require_env SSH_USER
wait_for_cloud_init
sync_operator_ssh_key "$SSH_USER" "${OPERATOR_SSH_PUBLIC_KEY:-}"
