#!/usr/bin/env bash
# Step (worker, over SSH): `kubeadm join --config` with the JoinConfiguration on stdin (secret:
# it holds the bootstrap token; discovery is pinned to the cluster CA by caCertHashes).
# Idempotent: a kubelet.conf pointing at API_SERVER_ENDPOINT means this node already joined; one
# pointing elsewhere (the control plane was replaced) is reset first.
# Parameters: API_SERVER_ENDPOINT (<private-ip>:6443). Runs with userdata/lib/common.sh in front.
set -euo pipefail
require_env API_SERVER_ENDPOINT

# Read the secret first, before any other command can touch stdin.
umask 077
config="$(mktemp)"
trap 'rm -f "$config"' EXIT
cat >"$config"
[[ -s "$config" ]] || die "no JoinConfiguration on stdin"

wait_for_cloud_init

kubelet_conf=/etc/kubernetes/kubelet.conf
if [[ -f "$kubelet_conf" ]]; then
  if grep -Fq "server: https://${API_SERVER_ENDPOINT}" "$kubelet_conf"; then
    log "already joined to ${API_SERVER_ENDPOINT}: nothing to do"
    exit 0
  fi
  log "joined to another control plane: resetting before joining ${API_SERVER_ENDPOINT}"
  kubeadm reset --force >&2
fi

log "joining ${API_SERVER_ENDPOINT}"
if ! kubeadm join --config "$config" >&2; then
  log "kubelet log (last 40 lines):"
  journalctl -u kubelet --no-pager -n 40 >&2 || true
  die "kubeadm join failed (is ${API_SERVER_ENDPOINT} reachable from this node on TCP 6443?)"
fi
log "joined"
