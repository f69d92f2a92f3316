#!/usr/bin/env bash
# Program (control-plane node, run by an operator: README "Backups and restore"): rebuild this
# control plane's etcd from a snapshot set. Usage: sudo etcd-restore <set> where <set> is a directory
# holding snapshot.db and SHA256SUMS, or a set in the stack's bucket (s3://<bucket>/etcd/.../<stamp>/
# or etcd/.../<stamp>/).
#
# Refuses, before it stops anything: a missing set, a checksum mismatch, a snapshot written by a newer
# etcd minor than this node runs (etcd does not start on a newer data directory), a control-plane
# manifest it cannot read, a restore that does not produce member/snap/db and member/wal (etcd would
# otherwise start an empty cluster on a missing directory). The restore itself runs with this node's
# own etcdutl (inside the running etcd container, or ETCDUTL=<path> when etcd cannot run), with
# `--bump-revision 1000000000 --mark-compacted`, which etcd's recovery guide recommends for Kubernetes
# (every watch is cancelled instead of seeing the revision go back).
# Then, as kubernetes.io "Operating etcd clusters" asks (stop the API servers, restore, restart them):
# the control-plane static pods are parked out of the manifest directory, the data directory is
# swapped (the old one is kept as <data dir>.before-restore-<stamp>), etcd comes back first, then
# the rest, then the kubelet restarts. A failure before the swap puts the manifests back.
# A single-member etcd only (one control plane): it refuses a member whose manifest or cluster lists
# other members. Restoring several members needs every API server stopped, a new cluster token and
# all members restored before any waits for quorum (etcd-io/website content/en/docs/v3.6/op-guide/
# recovery.md), which this script does not coordinate (README "Backups and restore").
# Parameters (env, or BACKUP_ENV, default /etc/gitops/etcd-backup.env): BACKUP_BUCKET and
#   AWS_DEFAULT_REGION for a set in the bucket; optional ETCD_DATA_DIR (/var/lib/etcd), ETCDUTL,
#   ETCD_PKI_DIR (/etc/kubernetes/pki/etcd), ETCD_ENDPOINT (https://127.0.0.1:2379), S3_ENDPOINT_URL,
#   WAIT_SECONDS (300). FS_ROOT: tests only.
set -euo pipefail
BACKUP_ENV="${BACKUP_ENV:-/etc/gitops/etcd-backup.env}"
if [[ -f "$BACKUP_ENV" ]]; then
  # shellcheck source=/dev/null
  source "$BACKUP_ENV"
fi
[[ $# -eq 1 ]] || die "usage: etcd-restore <set directory | s3://<bucket>/etcd/<kind>/<node>/<stamp>/>"
set_ref="$1"
ROOT="${FS_ROOT:-}"
DATA_DIR="${ETCD_DATA_DIR:-/var/lib/etcd}"
MANIFESTS="${ROOT}/etc/kubernetes/manifests"
PARKED="${ROOT}/etc/kubernetes/manifests-parked-for-restore"
WAIT="${WAIT_SECONDS:-300}"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
WORK="${DATA_DIR}/gitops-restore"
export KUBECONFIG=/etc/kubernetes/admin.conf

# ---- 1. the set, checked -------------------------------------------------------------------------
if compgen -G "${PARKED}/*.yaml" >/dev/null; then
  die "${PARKED} holds parked manifests from an earlier run: move them back to ${MANIFESTS} (or finish that restore) first"
fi
rm -rf "$WORK"
mkdir -p "$WORK/set"
chmod 0700 "$WORK"
if [[ -d "$set_ref" ]]; then
  for file in snapshot.db SHA256SUMS; do
    [[ -f "${set_ref}/${file}" ]] || die "${set_ref} holds no ${file}: not a complete snapshot set. Nothing was changed."
    cp "${set_ref}/${file}" "$WORK/set/"
  done
else
  require_env BACKUP_BUCKET AWS_DEFAULT_REGION
  export AWS_DEFAULT_REGION
  key="${set_ref#s3://"${BACKUP_BUCKET}"/}"
  key="${key%/}"
  [[ "$key" =~ ^etcd/(frequent|daily|pre-upgrade)/[^/]+/[0-9TZ]+$ ]] ||
    die "'${set_ref}' is neither a directory nor a set of s3://${BACKUP_BUCKET}/etcd/<kind>/<node>/<stamp>/. Nothing was changed."
  for file in SHA256SUMS snapshot.db; do
    aws_s3 s3 cp "s3://${BACKUP_BUCKET}/${key}/${file}" "$WORK/set/${file}" --only-show-errors >&2 ||
      die "no ${file} in s3://${BACKUP_BUCKET}/${key}/ (missing, or an upload that did not finish); list the sets with" \
        "'aws s3 ls s3://${BACKUP_BUCKET}/etcd/daily/ --recursive'. Nothing was changed."
  done
fi
(cd "$WORK/set" && sha256sum --check --strict --quiet SHA256SUMS >&2) ||
  die "checksum mismatch: snapshot.db is not the file SHA256SUMS describes (damaged or incomplete). Nothing was changed."
snapshot="$WORK/set/snapshot.db"

# ---- 2. this node: its etcd member, its etcdutl -----------------------------------------------
manifest="${MANIFESTS}/etcd.yaml"
[[ -f "$manifest" ]] || die "no ${manifest}: this is not a control-plane node (or its manifests are elsewhere). Nothing was changed."
flag() { sed -n "s/^[[:space:]]*- --$1=//p" "$manifest" | head -n 1; }
name="$(flag name)"
peer_url="$(flag initial-advertise-peer-urls)"
manifest_data_dir="$(flag data-dir)"
[[ -n "$name" && -n "$peer_url" ]] || die "${manifest} has no --name or --initial-advertise-peer-urls. Nothing was changed."
[[ "$manifest_data_dir" == "$DATA_DIR" ]] ||
  die "${manifest} runs etcd on ${manifest_data_dir}, not ${DATA_DIR} (set ETCD_DATA_DIR). Nothing was changed."
[[ "$(flag initial-cluster)" != *,* ]] ||
  die "${manifest} starts etcd as one of several members (--initial-cluster=$(flag initial-cluster)): this script" \
    "restores a single-member etcd only (README \"Backups and restore\"). Nothing was changed."
initial_cluster="${name}=${peer_url}"

container="$(crictl ps --name '^etcd$' --state running --quiet 2>/dev/null | head -n 1)" || true
if [[ -n "${ETCDUTL:-}" ]]; then
  etcdutl() { "$ETCDUTL" "$@"; }
  node_version="$("$ETCDUTL" version | sed -n 's/^etcdutl version: //p')"
elif [[ -n "$container" ]]; then
  etcdutl() { crictl exec "$container" etcdutl "$@"; }
  node_version="$(crictl exec "$container" etcd --version | sed -n 's/^etcd Version: //p')"
else
  die "etcd is not running on this node, so its own etcdutl cannot be used: give one of the same minor as" \
    "ETCDUTL=<path> (the node's image has it: 'ctr -n k8s.io images mount <etcd image from ${manifest}> /mnt/etcd'," \
    "then ETCDUTL=/mnt/etcd/usr/local/bin/etcdutl). Nothing was changed."
fi
[[ "$node_version" =~ ^[0-9]+\.[0-9]+ ]] || die "cannot tell this node's etcd version (got '${node_version}'). Nothing was changed."
# The first control plane of a cluster others joined keeps a one-member --initial-cluster: ask etcd.
if [[ -n "$container" ]]; then
  PKI="${ETCD_PKI_DIR:-/etc/kubernetes/pki/etcd}"
  if members="$(crictl exec "$container" etcdctl --endpoints="${ETCD_ENDPOINT:-https://127.0.0.1:2379}" \
    --cacert="${PKI}/ca.crt" --cert="${PKI}/healthcheck-client.crt" --key="${PKI}/healthcheck-client.key" \
    member list 2>/dev/null)"; then
    (($(grep -c . <<<"$members") <= 1)) ||
      die "etcd on this node has $(grep -c . <<<"$members") members: this script restores a single-member etcd only" \
        "(README \"Backups and restore\"). Nothing was changed."
  else
    log "etcd does not answer 'member list'; the manifest names one member, restoring as ${name}"
  fi
fi

status="$(etcdutl snapshot status "$snapshot" --write-out json)" || die "etcdutl cannot read the snapshot. Nothing was changed."
read -r revision keys snapshot_version < <(printf '%s' "$status" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(s["revision"], s["totalKey"], s.get("version") or "-")')
minor_key() { local major minor; IFS=. read -r major minor _ <<<"$1"; printf '%05d%05d' "$major" "$minor"; }
if [[ "$snapshot_version" != - && "$(minor_key "$snapshot_version")" > "$(minor_key "$node_version")" ]]; then
  die "the snapshot was written by etcd ${snapshot_version}, newer than this node's ${node_version}: etcd does not" \
    "start on a newer data directory. Restore onto a node at ${snapshot_version%.*} or later. Nothing was changed."
fi

log "restoring the snapshot (revision ${revision}, ${keys} keys, etcd ${snapshot_version/-/before 3.6}) as member ${name} of ${initial_cluster}"
etcdutl snapshot restore "$snapshot" --name "$name" --initial-cluster "$initial_cluster" \
  --initial-advertise-peer-urls "$peer_url" --data-dir "$WORK/data" \
  --bump-revision 1000000000 --mark-compacted >&2 || die "etcdutl snapshot restore failed. Nothing was changed."
[[ -s "$WORK/data/member/snap/db" && -d "$WORK/data/member/wal" ]] ||
  die "the restore left no member/snap/db and member/wal in ${WORK}/data; etcd would start an empty cluster. Nothing was changed."

# ---- 3. stop the control plane, swap, start etcd then the rest --------------------------------------
unpark() {
  if compgen -G "${PARKED}/*.yaml" >/dev/null; then
    mv -f "$PARKED"/*.yaml "$MANIFESTS"/
    log "control-plane manifests moved back to ${MANIFESTS}"
  fi
}
control_plane_stopped() { [[ -z "$(crictl ps --quiet --name 'kube-apiserver|kube-controller-manager|kube-scheduler|etcd' 2>/dev/null)" ]]; }
etcd_healthy() {
  local id
  id="$(crictl ps --name '^etcd$' --state running --quiet 2>/dev/null | head -n 1)" && [[ -n "$id" ]] &&
    crictl exec "$id" etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt \
      --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt --key=/etc/kubernetes/pki/etcd/healthcheck-client.key \
      endpoint health >/dev/null 2>&1
}
api_answers() { kubectl get --raw /readyz >/dev/null 2>&1; }

# The certificate renewal and the Kubernetes upgrade move the same manifests (they hold this lock),
# and the snapshot timer reads the data directory: neither may run during the swap.
hold_lock "${ROOT}/run/gitops-kubeadm.lock" "another kubeadm run on this control plane (an upgrade or a renewal)"
hold_lock "${ROOT}/var/lib/gitops/backups/etcd-backup.lock" "the etcd snapshot running on this node"
trap unpark EXIT
install -d -m 0700 "$PARKED"
mv -f "$MANIFESTS"/*.yaml "$PARKED"/
log "control-plane static pods parked in ${PARKED}; waiting for the kubelet to stop them"
wait_until "$WAIT" "the control-plane containers to stop" control_plane_stopped
old="${DATA_DIR}.before-restore-${stamp}"
mv "$DATA_DIR" "$old"
mv "${old}/gitops-restore/data" "$DATA_DIR"
chmod 0700 "$DATA_DIR"
trap - EXIT
log "etcd data directory swapped: ${DATA_DIR} is the restored one, the previous one is ${old}"
mv -f "${PARKED}/etcd.yaml" "$MANIFESTS"/
log "if etcd does not come back: 'crictl logs \$(crictl ps -a --name etcd -q | head -n 1)'; to go back, move" \
  "${MANIFESTS}/etcd.yaml into ${PARKED}, run 'mv ${DATA_DIR} ${DATA_DIR}.failed-restore && mv ${old} ${DATA_DIR}'," \
  "then move every manifest in ${PARKED} back to ${MANIFESTS}"
wait_until "$WAIT" "etcd to answer on the restored data" etcd_healthy
unpark
systemctl restart kubelet
wait_until "$WAIT" "the API server to answer" api_answers
rm -rf "${old}/gitops-restore"
log "restored etcd to revision ${revision} (+1000000000). Previous data kept in ${old}: delete it once the cluster is right."
log "next: check 'kubectl get nodes' and workloads; controllers and kubelets resync from the restored state."
