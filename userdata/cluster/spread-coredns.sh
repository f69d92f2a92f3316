#!/usr/bin/env bash
# Step (first control-plane node, over SSH), once the nodes of the cluster have joined: spread the
# cluster DNS (CoreDNS) over several nodes. `kubeadm init` starts both CoreDNS replicas on the only
# node there is, the first control-plane node, and nothing moves them when other nodes join: losing
# that node would take cluster DNS away (Flux could no longer resolve GitLab) until its pods were
# evicted, minutes later. kubeadm's guide: "rebalance the CoreDNS Pods with `kubectl -n kube-system
# rollout restart deployment coredns` after at least one new node is joined" (kubernetes.io
# "Creating Highly Available Clusters with kubeadm"); kubeadm's CoreDNS Deployment prefers its
# replicas on different nodes (podAntiAffinity on kubernetes.io/hostname: cmd/kubeadm/app/phases/
# addons/dns/manifests.go) and replaces them one at a time (maxUnavailable 1), so a restart spreads
# them without a DNS outage.
# Idempotent: nothing to do when its pods already run on more than one node.
# Parameters: TIMEOUT_SECONDS. Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail
require_env TIMEOUT_SECONDS
export KUBECONFIG=/etc/kubernetes/admin.conf

dns_nodes() {
  kubectl -n kube-system get pods -l k8s-app=kube-dns -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' |
    sed '/^$/d' | sort -u
}
nodes="$(dns_nodes)"
if (($(grep -c . <<<"$nodes") > 1)); then
  log "CoreDNS runs on $(tr '\n' ' ' <<<"$nodes")already: nothing to do"
  exit 0
fi
log "CoreDNS runs on ${nodes:-no node} only: restarting it so that its replicas spread over the nodes"
kubectl -n kube-system rollout restart deployment coredns >&2
with_heartbeat "restarting CoreDNS" kubectl -n kube-system rollout status deployment coredns \
  --timeout="${TIMEOUT_SECONDS}s" >&2 || die "CoreDNS did not roll out within ${TIMEOUT_SECONDS}s: 'kubectl -n kube-system get pods -l k8s-app=kube-dns -o wide'"
log "CoreDNS runs on $(dns_nodes | tr '\n' ' ')"
