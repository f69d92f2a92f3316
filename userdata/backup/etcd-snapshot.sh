#!/usr/bin/env bash
# Program (control-plane node; the gitops-etcd-backup timer, the pre-upgrade step, the setup step):
# take an etcd snapshot, prove it restores, upload it to the stack's bucket as a set (snapshot.db,
# then SHA256SUMS). Usage: etcd-backup [frequent|pre-upgrade] (default frequent). The first frequent
# snapshot of each UTC day is also uploaded under etcd/daily/ (kept longer). Prints the set's URL.
# As a remote step (the snapshot before a Kubernetes upgrade) the kind comes as SNAPSHOT_KIND.
#
# etcdctl and etcdutl run inside the node's own etcd container (`crictl exec`): the image kubeadm
# deploys has them (the upstream etcd image, /usr/local/bin, from etcd 3.6: Kubernetes 1.34+) and they
# match the server's version; nothing etcd-related is installed on the host. The snapshot is written
# under the etcd data directory, which kubeadm's static pod mounts from the host at the same path
# (kubeadm phases/etcd/local.go, hostPath etcd-data), so the host reads the same file.
# Checks, each fatal: `snapshot save` within SNAPSHOT_TIMEOUT_SECONDS (an unreachable endpoint makes
# etcdctl hang, not fail); the file's sha256 recorded on the host before anything else reads it;
# `etcdutl snapshot status` (revision, keys; not an integrity check: a truncated file passes it);
# a trial `etcdutl snapshot restore` into a scratch directory, which checks the snapshot's own hash.
# Only then the upload; SHA256SUMS last, so a set without it is an upload that did not finish.
# Parameters (env, or BACKUP_ENV, default /etc/gitops/etcd-backup.env): BACKUP_BUCKET,
#   AWS_DEFAULT_REGION, NODE_NAME; optional ETCD_DATA_DIR (/var/lib/etcd), ETCD_PKI_DIR
#   (/etc/kubernetes/pki/etcd), ETCD_ENDPOINT (https://127.0.0.1:2379), SNAPSHOT_TIMEOUT_SECONDS (300),
#   S3_ENDPOINT_URL (empty on AWS: an S3-compatible server in the tests). FS_ROOT: tests only.
# Runs with userdata/lib/common.sh in front (components/backups.py installs both as one program).
set -euo pipefail
BACKUP_ENV="${BACKUP_ENV:-/etc/gitops/etcd-backup.env}"
if [[ -f "$BACKUP_ENV" ]]; then
  # shellcheck source=/dev/null
  source "$BACKUP_ENV"
fi
require_env BACKUP_BUCKET AWS_DEFAULT_REGION NODE_NAME
export AWS_DEFAULT_REGION
kind="${1:-${SNAPSHOT_KIND:-frequent}}"
[[ "$kind" == frequent || "$kind" == pre-upgrade ]] || die "unknown snapshot kind '${kind}': frequent or pre-upgrade"
ROOT="${FS_ROOT:-}"
DATA_DIR="${ETCD_DATA_DIR:-/var/lib/etcd}"
PKI="${ETCD_PKI_DIR:-/etc/kubernetes/pki/etcd}"
ENDPOINT="${ETCD_ENDPOINT:-https://127.0.0.1:2379}"
TIMEOUT="${SNAPSHOT_TIMEOUT_SECONDS:-300}"
STATE_DIR="${ROOT}/var/lib/gitops/backups"
# Inside the data directory: the only host path the etcd container writes. Emptied by every run.
WORK="${DATA_DIR}/gitops-backup"

mkdir -p "$STATE_DIR"
exec 9>"$STATE_DIR/etcd-backup.lock"
flock -w 900 9 || die "another etcd backup has held ${STATE_DIR}/etcd-backup.lock for 15 minutes"

container="$(crictl ps --name '^etcd$' --state running --quiet 2>/dev/null | head -n 1)" || true
[[ -n "$container" ]] || die "no running etcd container on ${NODE_NAME} (crictl ps --name etcd): no snapshot taken"
in_etcd() { crictl exec "$container" "$@"; }

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
snapshot="${WORK}/${stamp}.db"
verify="${WORK}/verify-${stamp}"
rm -rf "$WORK"
mkdir -p "$WORK"
chmod 0700 "$WORK"
trap 'rm -rf "$WORK"' EXIT

log "saving an etcd snapshot from ${ENDPOINT} (at most ${TIMEOUT}s)"
if ! timeout "$TIMEOUT" crictl exec "$container" etcdctl --endpoints="$ENDPOINT" --cacert="${PKI}/ca.crt" \
  --cert="${PKI}/healthcheck-client.crt" --key="${PKI}/healthcheck-client.key" --dial-timeout=10s \
  snapshot save "$snapshot" >&2; then
  die "etcdctl snapshot save failed or took more than ${TIMEOUT}s (endpoint ${ENDPOINT}); nothing was uploaded"
fi
[[ -s "$snapshot" ]] || die "etcdctl reported success but ${snapshot} is missing or empty; nothing was uploaded"
sha="$(sha256sum "$snapshot" | cut -d ' ' -f 1)"

status="$(in_etcd etcdutl snapshot status "$snapshot" --write-out json)" ||
  die "etcdutl snapshot status cannot read ${snapshot}; nothing was uploaded"
# revision, total keys, and the storage version etcd 3.6+ records (empty before 3.6).
read -r revision keys version < <(printf '%s' "$status" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(s["revision"], s["totalKey"], s.get("version") or "-")')

log "trial restore of the snapshot (revision ${revision}, ${keys} keys) into a scratch directory"
in_etcd etcdutl snapshot restore "$snapshot" --data-dir "$verify" >&2 ||
  die "etcdutl snapshot restore rejects ${snapshot} (its integrity hash does not match?); nothing was uploaded"
[[ -s "${verify}/member/snap/db" && -d "${verify}/member/wal" ]] ||
  die "the trial restore left no member/snap/db and member/wal in ${verify}; nothing was uploaded"
rm -rf "$verify"

printf '%s  snapshot.db\n' "$sha" >"${WORK}/SHA256SUMS"
upload_set() { # upload_set PREFIX: snapshot then SHA256SUMS; prints the set's URL
  local url="s3://${BACKUP_BUCKET}/$1${NODE_NAME}/${stamp}"
  upload "$snapshot" "${url}/snapshot.db" --metadata "sha256=${sha},revision=${revision},etcd-storage-version=${version}"
  upload "${WORK}/SHA256SUMS" "${url}/SHA256SUMS"
  log "uploaded ${url}/ (sha256 ${sha})"
  printf '%s/\n' "$url"
}

upload_set "etcd/${kind}/"
today="${stamp%%T*}"
if [[ "$kind" == frequent && "$(cat "${STATE_DIR}/etcd-last-daily" 2>/dev/null || true)" != "$today" ]]; then
  upload_set "etcd/daily/"
  printf '%s\n' "$today" >"${STATE_DIR}/etcd-last-daily"
fi
printf '%s %s\n' "$stamp" "$kind" >"${STATE_DIR}/etcd-last-success"
