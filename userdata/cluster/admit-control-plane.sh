#!/usr/bin/env bash
# Step (first control-plane node, over SSH): make way for control-plane node NODE_NAME (NODE_IP) to
# join, before its join step runs. Renews the Pulumi-made bootstrap token (a join on day 200 still
# finds a valid one: userdata/cluster/bootstrap-token.sh), then removes what a predecessor under the
# same name left behind, never what belongs to this instance:
# - an etcd member named NODE_NAME with another peer address than https://NODE_IP:2380: kubeadm's
#   join checks every member (phase check-etcd, CheckLocalEtcdClusterStatus) and a dead one fails it;
# - an unstarted etcd member (added, never started, so it has no name) with another peer address: a
#   join that failed half way, at an address no instance will start it from. kubeadm's join adds its
#   member as a learner (AddMemberAsLearner, cmd/kubeadm/app/util/etcd/etcd.go) and etcd admits one
#   learner at a time (--max-learners default 1, "too many learner members in cluster":
#   etcd-io/etcd server/etcdserver/api/membership/cluster_opts.go), so it would fail every join.
#   Removing it costs no quorum (mayRemoveMember lets a learner go unchecked). One at this node's own
#   address stays: kubeadm's addMember skips a peer URL that is already a member and the join starts
#   and promotes that one (kubernetes/kubernetes PR 127491, in every supported release). A started
#   member without this node's name is never touched;
# - a Node NODE_NAME with another InternalIP, and its control-plane mirror Pods.
# The predecessor's own removal (remove-control-plane.sh) normally did this already; this covers one
# that never ran (an instance terminated outside Pulumi and its state deleted by hand).
# Its counterpart on removal is remove-control-plane.sh (the same Pulumi resource's delete).
# stdin (secret): the token, <id>.<secret>. Only the token id is ever printed.
# Parameters: NODE_NAME, NODE_IP, TOKEN_TTL_HOURS, TOKEN_GROUP.
# Runs with userdata/lib/common.sh, userdata/cluster/bootstrap-token.sh and userdata/cluster/etcd-members.sh
# in front (components/remote.py).
set -euo pipefail
require_env NODE_NAME NODE_IP TOKEN_TTL_HOURS TOKEN_GROUP
export KUBECONFIG=/etc/kubernetes/admin.conf
[[ "$NODE_NAME" != "$(hostname)" ]] || die "refusing to admit ${NODE_NAME}: that is this node"

renew_bootstrap_token "$TOKEN_TTL_HOURS" "$TOKEN_GROUP"

peer="https://${NODE_IP}:2380"
members="$(etcd_members)"
while read -r id name url _; do
  [[ "$url" != "$peer" ]] || continue
  if [[ "$name" == "$NODE_NAME" ]]; then
    log "etcd member ${id} is named ${NODE_NAME} but listens on ${url}: a predecessor's, removing it"
    remove_etcd_member "$id" "$NODE_NAME"
  elif [[ "$name" == "-" ]]; then
    log "etcd member ${id} at ${url} was added but never started (a join that failed half way): it would take etcd's one learner place, removing it"
    remove_etcd_member "$id" "unstarted, ${url}"
  fi
done <<<"$members"

address="$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}' 2>/dev/null || true)"
if [[ -n "$address" && "$address" != "$NODE_IP" ]]; then
  log "Node ${NODE_NAME} has address ${address}, not ${NODE_IP}: a predecessor's, deleting it and its mirror Pods"
  delete_node_objects "$NODE_NAME"
fi
log "${NODE_NAME} (${NODE_IP}) may join"
