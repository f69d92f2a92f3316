#!/usr/bin/env bash
# Step (a further control-plane node, over SSH): join the cluster as a control-plane instance with a
# stacked etcd member. The shared files go to /etc/kubernetes/pki first, exactly kubeadm's list and
# nothing else ("Copy only the certificates in the above list. kubeadm will take care of generating
# the rest": kubernetes.io "Creating Highly Available Clusters with kubeadm", manual certificate
# distribution), then `kubeadm join --config` with a JoinConfiguration that has a controlPlane
# section and no certificateKey (no `--upload-certs`: nothing is downloaded from the cluster). kubeadm
# adds the etcd member as a learner, promotes it once it caught up, and waits for etcd to be healthy
# (cmd/kubeadm/app/phases/etcd/local.go). Then the step waits until this node is Ready, so the next
# control-plane node joins only after this one (etcd admits one learner at a time, --max-learners 1).
# stdin (secret): nine base64 lines: the JoinConfiguration (it holds the bootstrap token), then the
# shared files in components/kubeadm.py SHARED_PKI_FILES order.
# Before joining: kubelet/kubeadm/kubectl move to the exact version the API server runs, and the step
# waits until the bootstrap token is valid (the admit step on the first node renewed it).
# Idempotent: a node whose admin.conf reaches its own Node has joined. The leftovers of a join that
# failed half way are cleaned first: with its admin.conf, its Node and mirror Pods are deleted and
# `kubeadm reset` removes its etcd member (phase remove-etcd-member); then /etc/cni/net.d, cni0 and
# flannel.1, which reset leaves behind.
# Parameters: NODE_NAME, API_SERVER_ENDPOINT (the cluster's controlPlaneEndpoint), TIMEOUT_SECONDS.
# Runs with userdata/lib/common.sh and userdata/cluster/packages.sh in front (components/remote.py).
set -euo pipefail
require_env NODE_NAME API_SERVER_ENDPOINT TIMEOUT_SECONDS
ROOT="${FS_ROOT:-}"
SHARED_PKI_FILES=(ca.crt ca.key sa.key sa.pub front-proxy-ca.crt front-proxy-ca.key etcd/ca.crt etcd/ca.key)

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
mkdir -p "$workdir/pki/etcd"
for file in "${SHARED_PKI_FILES[@]}"; do
  read_part "$workdir/pki/$file"
done
token_id="$(sed -nE 's/^ *token: ([a-z0-9]{6})\.[a-z0-9]{16}$/\1/p' "$workdir/join.yaml" | head -n 1)"
[[ -n "$token_id" ]] || die "the JoinConfiguration on stdin has no bootstrap token"
grep -q '^controlPlane:' "$workdir/join.yaml" || die "the JoinConfiguration on stdin has no controlPlane section"

wait_for_cloud_init

k8s="${ROOT}/etc/kubernetes"
# Written by this node's join (kubeadm makes a control-plane node's admin.conf from the cluster CA).
export KUBECONFIG=/etc/kubernetes/admin.conf
node_ready() {
  [[ "$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == "True" ]]
}
wait_ready() {
  wait_until "$TIMEOUT_SECONDS" "${NODE_NAME} to be Ready" node_ready
  log "control-plane node ${NODE_NAME} is Ready"
}

if [[ -f "${k8s}/admin.conf" ]] && kubectl get node "$NODE_NAME" >/dev/null 2>&1 &&
  [[ -f "${k8s}/manifests/etcd.yaml" && -f "${k8s}/kubelet.conf" ]]; then
  log "already joined as a control-plane node: nothing to do but wait until Ready"
  wait_ready
  exit 0
fi
if [[ -e "${k8s}/pki/ca.crt" || -e "${k8s}/kubelet.conf" || -e "${k8s}/bootstrap-kubelet.conf" ]] ||
  compgen -G "${k8s}/manifests/*.yaml" >/dev/null; then
  log "an earlier join did not finish: cleaning up before joining again"
  if [[ -f "${k8s}/admin.conf" ]]; then
    kubectl delete node "$NODE_NAME" --ignore-not-found >&2 || true
    kubectl -n kube-system delete pod -l tier=control-plane --field-selector "spec.nodeName=${NODE_NAME}" \
      --ignore-not-found >&2 || true
  fi
  kubeadm reset --force >&2
  rm -rf "${ROOT}/etc/cni/net.d"
  for link in cni0 flannel.1; do
    if ip link show "$link" >/dev/null 2>&1; then
      ip link delete "$link"
    fi
  done
fi

api() { curl -fsS --max-time 10 --cacert "$workdir/pki/ca.crt" "https://${API_SERVER_ENDPOINT}$1"; }
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

# The shared files, as kubeadm writes its own: keys readable by root only.
install -d -m 0755 "${k8s}/pki/etcd"
for file in "${SHARED_PKI_FILES[@]}"; do
  mode=0644
  [[ "$file" == *.key ]] && mode=0600
  install -m "$mode" "$workdir/pki/$file" "${k8s}/pki/$file"
done

log "joining ${API_SERVER_ENDPOINT} as a control-plane node"
if ! with_heartbeat "joining" kubeadm join --config "$workdir/join.yaml" >&2; then
  log "kubelet log (last 40 lines):"
  journalctl -u kubelet --no-pager -n 40 >&2 || true
  die "kubeadm join failed; the next 'pulumi up' cleans this node up and joins it again (README, Troubleshooting: 'A control-plane node does not join')"
fi
wait_ready
