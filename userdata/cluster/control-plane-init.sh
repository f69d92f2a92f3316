#!/usr/bin/env bash
# Step (first control-plane node, over SSH): place the Pulumi-made shared PKI (cluster CA,
# service-account key pair, front-proxy CA, etcd CA), then `kubeadm init --config`; print the
# controlPlaneEndpoint the cluster was initialised with.
# kubeadm uses CA and key files it finds in the certificates directory instead of generating them
# (kubernetes.io "Certificate Management with kubeadm", custom certificates; "If both files already
# exist, kubeadm skips the generation step"), so every further control-plane node can be given the
# same ones (userdata/cluster/control-plane-join.sh).
# stdin (secret): nine base64 lines: ca.crt, ca.key, the kubeadm config (InitConfiguration with the
# bootstrap token + ClusterConfiguration), sa.key, sa.pub, front-proxy-ca.crt, front-proxy-ca.key,
# etcd/ca.crt, etcd/ca.key. Nothing secret is written outside /etc/kubernetes/pki or printed:
# `--skip-token-print` keeps the join command out of the log, and no `--upload-certs`.
# Before init: the endpoint's name must resolve (its Route 53 record, components/cluster_endpoint.py).
# Idempotent: an existing /etc/kubernetes/admin.conf means init already ran (with the same CA,
# checked); then the step waits for the API server (bounded) and never advises a reset on a cluster
# that has nodes. The shared files are never touched again: a cluster initialised before the program
# made them keeps kubeadm's own (control-plane-ha-check.sh says so when it matters).
# stdout: the cluster's controlPlaneEndpoint, read back from its kubeadm-config ConfigMap:
# CONTROL_PLANE_ENDPOINT on a cluster this step initialised, the first node's address on one
# initialised before the stable endpoint existed. Workers and GitLab use what it prints.
# Parameters: NODE_NAME (this node's Kubernetes name), CONTROL_PLANE_ENDPOINT (<name>:6443).
# Runs with userdata/lib/common.sh in front.
set -euo pipefail
stdout_is_the_result
require_env NODE_NAME CONTROL_PLANE_ENDPOINT
SHARED_FILES=(sa.key sa.pub front-proxy-ca.crt front-proxy-ca.key etcd/ca.crt etcd/ca.key)

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
mkdir -p "$workdir/pki/etcd"
for file in "${SHARED_FILES[@]}"; do
  read_part "$workdir/pki/$file"
done

wait_for_cloud_init

k8s_dir="${FS_ROOT:-}/etc/kubernetes"
pki="${k8s_dir}/pki"
export KUBECONFIG=/etc/kubernetes/admin.conf
api_answers() { kubectl get --raw /readyz >/dev/null 2>&1; }
registered() { kubectl get node "$NODE_NAME" >/dev/null 2>&1; }

# The endpoint kubeadm recorded (kubeadm-config's ClusterConfiguration), printed as the step's result.
print_endpoint() {
  local endpoint
  endpoint="$(kubectl -n kube-system get configmap kubeadm-config -o jsonpath='{.data.ClusterConfiguration}' |
    sed -n 's/^controlPlaneEndpoint: *//p')" || true
  [[ -n "$endpoint" ]] || die "could not read controlPlaneEndpoint from the kube-system/kubeadm-config ConfigMap"
  if [[ "$endpoint" != "$CONTROL_PLANE_ENDPOINT" ]]; then
    log "this cluster was initialised with controlPlaneEndpoint ${endpoint}, before the stable endpoint ${CONTROL_PLANE_ENDPOINT} existed: workers and GitLab keep using ${endpoint} (README, 'Highly available control plane')"
  fi
  result "$endpoint"
}

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
    print_endpoint
    exit 0
  fi
  if [[ -n "$(kubectl get nodes -o name 2>/dev/null)" ]]; then
    die "the API server answers but has no Node ${NODE_NAME}: restart its kubelet ('systemctl restart kubelet') so that it registers again, then run 'pulumi up'"
  fi
  die "an earlier 'kubeadm init' on this new control plane did not complete (no node ever registered): see 'journalctl -u kubelet'. As no node joined yet, 'kubeadm reset --force' on it and 'pulumi up' start it over"
fi

# The endpoint's record was just made; the VPC's resolver answers for the private zone once Route 53
# has it in sync (the provider waits for that), so this is normally immediate.
endpoint_host="${CONTROL_PLANE_ENDPOINT%:*}"
resolves() { getent hosts "$endpoint_host" >/dev/null; }
wait_until "${RESOLVE_TIMEOUT_SECONDS:-300}" "${endpoint_host} to resolve (Route 53 private zone of this VPC)" resolves

install -d -m 0755 "$pki" "$pki/etcd"
install -m 0644 "$workdir/ca.crt" "$pki/ca.crt"
install -m 0600 "$workdir/ca.key" "$pki/ca.key"
for file in "${SHARED_FILES[@]}"; do
  mode=0644
  [[ "$file" == *.key ]] && mode=0600
  install -m "$mode" "$workdir/pki/$file" "$pki/$file"
done

log "running kubeadm init"
if ! with_heartbeat "running kubeadm init" kubeadm init --config "$workdir/kubeadm.yaml" --skip-token-print >&2; then
  log "kubelet log (last 40 lines):"
  journalctl -u kubelet --no-pager -n 40 >&2 || true
  die "kubeadm init failed on this new control plane; after fixing the cause, 'kubeadm reset --force' on it (no node joined yet) and run 'pulumi up' again"
fi
registered || die "kubeadm init finished but node ${NODE_NAME} is not registered"
log "control plane ${NODE_NAME} initialised"
print_endpoint
