#!/usr/bin/env bash
# Step (control plane, over SSH): place the Pulumi-made cluster CA, then `kubeadm init --config`.
# stdin (secret): three base64 lines: ca.crt, ca.key, kubeadm config (InitConfiguration with the
# bootstrap token + ClusterConfiguration). Nothing secret is written outside /etc/kubernetes/pki
# or printed: `--skip-token-print` keeps the join command out of the log.
# Idempotent: an existing /etc/kubernetes/admin.conf means init already ran (with the same CA,
# checked); then the step waits for the API server (bounded) and never advises a reset on a cluster
# that has nodes.
# Parameters: NODE_NAME (this node's Kubernetes name). Runs with userdata/lib/common.sh in front.
set -euo pipefail
require_env NODE_NAME

# Read the secrets first, before any other command can touch stdin.
umask 077
workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT

# read_part FILE: the next stdin line, base64-decoded into FILE.
read_part() {
  local line
  IFS= read -r line || die "stdin ended before $(basename "$1")"
  printf '%s' "$line" | base64 -d >"$1" || die "$(basename "$1") on stdin is not base64"
}
read_part "$workdir/ca.crt"
read_part "$workdir/ca.key"
read_part "$workdir/kubeadm.yaml"

wait_for_cloud_init

k8s_dir="${FS_ROOT:-}/etc/kubernetes"
pki="${k8s_dir}/pki"
export KUBECONFIG=/etc/kubernetes/admin.conf
api_answers() { kubectl get --raw /readyz >/dev/null 2>&1; }
registered() { kubectl get node "$NODE_NAME" >/dev/null 2>&1; }
if [[ -f "${k8s_dir}/admin.conf" ]]; then
  cmp -s "$workdir/ca.crt" "$pki/ca.crt" ||
    die "this control plane was initialised with another cluster CA ($pki/ca.crt); replace the instance to start over"
  # admin.conf is written before the control plane starts: a failed init leaves one behind too. A
  # control plane that just rebooted takes minutes to answer: wait, and never advise a reset then.
  if ! (wait_until "${API_TIMEOUT_SECONDS:-600}" "the API server to answer" api_answers); then
    die "the API server of ${NODE_NAME} does not answer: it may still be starting. Check 'crictl ps -a' and 'journalctl -u kubelet' on it, then run 'pulumi up' again. Do not run 'kubeadm reset' on it: that deletes the cluster's etcd data"
  fi
  if registered; then
    log "kubeadm init already ran and ${NODE_NAME} is registered: nothing to do"
    exit 0
  fi
  if [[ -n "$(kubectl get nodes -o name 2>/dev/null)" ]]; then
    die "the API server answers but has no Node ${NODE_NAME}: restart its kubelet ('systemctl restart kubelet') so that it registers again, then run 'pulumi up'"
  fi
  die "an earlier 'kubeadm init' on this new control plane did not complete (no node ever registered): see 'journalctl -u kubelet'. As no node joined yet, 'kubeadm reset --force' on it and 'pulumi up' start it over"
fi

# kubeadm uses a CA found in the certificates directory instead of generating one
# (kubernetes.io "Certificate Management with kubeadm", custom certificates).
install -d -m 0755 "$pki"
install -m 0644 "$workdir/ca.crt" "$pki/ca.crt"
install -m 0600 "$workdir/ca.key" "$pki/ca.key"

log "running kubeadm init"
if ! with_heartbeat "running kubeadm init" kubeadm init --config "$workdir/kubeadm.yaml" --skip-token-print >&2; then
  log "kubelet log (last 40 lines):"
  journalctl -u kubelet --no-pager -n 40 >&2 || true
  die "kubeadm init failed on this new control plane; after fixing the cause, 'kubeadm reset --force' on it (no node joined yet) and run 'pulumi up' again"
fi
registered || die "kubeadm init finished but node ${NODE_NAME} is not registered"
log "control plane ${NODE_NAME} initialised"
