#!/usr/bin/env bash
# Step (worker, over SSH): `kubeadm join --config` with the JoinConfiguration on stdin (a secret, as it
# holds the bootstrap token; discovery is pinned to the cluster CA by caCertHashes).
# stdin: two base64 lines: the JoinConfiguration, the cluster CA certificate (public).
# Before joining: the node's kubelet/kubeadm/kubectl are moved to the exact version the API server
# runs (a node installed later may have a newer patch, or an older minor after an upgrade), and the
# step waits (bounded) until the bootstrap token is valid: the control plane's membership step for
# this worker refreshes it concurrently (cluster-info carries a signature only for valid tokens,
# kubernetes.io "Authenticating with Bootstrap Tokens", ConfigMap signing).
# Idempotent: a kubelet.conf pointing at API_SERVER_ENDPOINT means this node already joined; one
# pointing elsewhere (the control plane was rebuilt), or the leftovers of a join that failed half
# way (its CA and bootstrap kubeconfig, no kubelet.conf), are reset first, with the CNI state
# kubeadm reset leaves behind (/etc/cni/net.d, cni0, flannel.1; kubeadm reset's own notice).
# Parameters: API_SERVER_ENDPOINT (<private-ip>:6443). Runs with userdata/lib/common.sh and
# userdata/cluster/packages.sh in front.
set -euo pipefail
require_env API_SERVER_ENDPOINT
ROOT="${FS_ROOT:-}"

# Read the secrets first, before any other command can touch stdin.
umask 077
workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
read_part() {
  local line
  IFS= read -r line || die "stdin ended before $(basename "$1")"
  printf '%s' "$line" | base64 -d >"$1" || die "$(basename "$1") on stdin is not base64"
}
read_part "$workdir/join.yaml"
read_part "$workdir/ca.crt"
token_id="$(sed -nE 's/^ *token: ([a-z0-9]{6})\.[a-z0-9]{16}$/\1/p' "$workdir/join.yaml" | head -n 1)"
[[ -n "$token_id" ]] || die "the JoinConfiguration on stdin has no bootstrap token"

wait_for_cloud_init

# kubeadm reset, and the CNI state it leaves behind (its own notice; brief section 10).
reset_node() {
  kubeadm reset --force >&2
  rm -rf "${ROOT}/etc/cni/net.d"
  local link
  for link in cni0 flannel.1; do
    if ip link show "$link" >/dev/null 2>&1; then
      ip link delete "$link"
    fi
  done
}

kubelet_conf="${ROOT}/etc/kubernetes/kubelet.conf"
if [[ -f "$kubelet_conf" ]]; then
  if grep -Fq "server: https://${API_SERVER_ENDPOINT}" "$kubelet_conf"; then
    log "already joined to ${API_SERVER_ENDPOINT}: nothing to do"
    exit 0
  fi
  log "joined to another control plane: resetting before joining ${API_SERVER_ENDPOINT}"
  reset_node
elif [[ -e "${ROOT}/etc/kubernetes/pki/ca.crt" || -e "${ROOT}/etc/kubernetes/bootstrap-kubelet.conf" ]]; then
  # An earlier join that failed after its kubelet-start phase (TLS bootstrap) left these and a
  # running kubelet behind, and the join's preflight refuses them (FileAvailable--etc-kubernetes-
  # pki-ca.crt, Port-10250; cmd/kubeadm/app/preflight/checks.go RunJoinNodeChecks): start over.
  log "an earlier join did not finish (no kubelet.conf, but its CA and bootstrap files): resetting first"
  reset_node
fi

api() { curl -fsS --max-time 10 --cacert "$workdir/ca.crt" "https://${API_SERVER_ENDPOINT}$1"; }
# /version is public (ClusterRole system:public-info-viewer); so is kube-public/cluster-info (kubeadm).
cluster_version() { api /version | python3 -c 'import json, sys; print(json.load(sys.stdin)["gitVersion"])'; }
token_valid() { api /api/v1/namespaces/kube-public/configmaps/cluster-info | grep -Fq "\"jws-kubeconfig-${token_id}\""; }

wait_until 600 "the API server at ${API_SERVER_ENDPOINT}" cluster_version >/dev/null
version="$(cluster_version)"
if [[ "$(installed_version kubeadm)" != "$version" || "$(installed_version kubelet)" != "$version" ]]; then
  log "moving kubelet/kubeadm/kubectl to the cluster's ${version}"
  minor="${version#v}"
  use_kubernetes_minor "${minor%.*}"
  deb="$(kubernetes_deb_version "${version#v}")" # fails here, by name, when the repository lacks it
  install_kubernetes "$deb" kubelet kubeadm kubectl
fi
wait_until 900 "bootstrap token ${token_id} to be valid" token_valid

log "joining ${API_SERVER_ENDPOINT}"
if ! with_heartbeat "joining" kubeadm join --config "$workdir/join.yaml" >&2; then
  log "kubelet log (last 40 lines):"
  journalctl -u kubelet --no-pager -n 40 >&2 || true
  die "kubeadm join failed (is ${API_SERVER_ENDPOINT} reachable from this node on TCP 6443?)"
fi
log "joined"
