#!/usr/bin/env bash
# etcd's membership and a control-plane node's Kubernetes objects, seen from a surviving
# control-plane node: a library for the steps that admit and remove further control-plane nodes
# (admit-control-plane.sh, remove-control-plane.sh). Needs common.sh's die/log.
# kubeadm nodes carry no etcdctl; the etcd static pod's image does, and the pod mounts the
# certificates directory at the same path (kubeadm GetEtcdPodSpec). So etcdctl runs in this node's
# etcd container through crictl (cri-tools: a dependency of the kubeadm package; crictl.yaml is the
# material step's), as a client with kubeadm's own etcd health-check certificate, against this
# node's member on 127.0.0.1 (a default name of the etcd server certificate: kubernetes.io
# "kubeadm init phase certs etcd-server").
# shellcheck shell=bash

ETCD_PKI=/etc/kubernetes/pki/etcd

etcdctl_local() {
  local container
  container="$(crictl ps --quiet --state running --name '^etcd$' | head -n 1)"
  [[ -n "$container" ]] || die "no running etcd container on this node ('crictl ps --name etcd'): is it a control-plane node?"
  crictl exec "$container" etcdctl --endpoints=https://127.0.0.1:2379 --cacert="${ETCD_PKI}/ca.crt" \
    --cert="${ETCD_PKI}/healthcheck-client.crt" --key="${ETCD_PKI}/healthcheck-client.key" "$@"
}

# etcd_members: "<hex id> <name or -> <peer URL> <is learner>" per member, from `etcdctl member list -w
# simple` ("<id>, <status>, <name>, <peer URLs>, <client URLs>, <is learner>", etcdctl/ctlv3/command/
# printer.go makeMemberListTable; a learner that never started has no name yet).
etcd_members() {
  etcdctl_local member list -w simple | awk -F', ' '{ print $1, ($3 == "" ? "-" : $3), $4, $6 }'
}

# remove_etcd_member ID NAME: etcd itself refuses a removal that would cost its quorum
# (--strict-reconfig-check, on by default: server/etcdserver/server.go mayRemoveMember).
remove_etcd_member() {
  etcdctl_local member remove "$1" >&2 ||
    die "etcd refused to remove member $1 ($2): with members down it may have no quorum to spare ('etcdctl member list', 'etcdctl endpoint health --cluster' in the etcd container)"
  log "etcd member $1 ($2) removed"
}

# delete_node_objects NODE: the Node and its control-plane static pods' mirror Pods. Left behind, an
# etcd mirror Pod keeps feeding its address to kubeadm's etcd client (NewFromCluster reads the
# kubeadm.kubernetes.io/etcd.advertise-client-urls annotations), and its next join checks every
# endpoint (phase check-etcd) and fails on the dead one; the pod garbage collector would only take
# them 40 s after the Node is gone.
delete_node_objects() {
  kubectl delete node "$1" --ignore-not-found >&2
  kubectl -n kube-system delete pod -l tier=control-plane --field-selector "spec.nodeName=$1" --ignore-not-found >&2
}
