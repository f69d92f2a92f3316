#!/usr/bin/env bash
# Program (GitLab host; the gitops-gitlab-backup timer, and /etc/gitops/hooks/pre-gitlab-upgrade that
# userdata/gitlab/install.sh runs before each upgrade hop): back GitLab up to the stack's bucket.
# Usage: gitlab-backup [daily | pre-upgrade <old version> <new version>] (default daily). Prints the set's URL.
#
# A set (s3://<bucket>/gitlab/<kind>/<backup id>/):
#   <backup id>_gitlab_backup.tar  `gitlab-backup create` in the container (database, repositories,
#                                  uploads, builds, artifacts, LFS, packages, registry and its
#                                  metadata database, ...), nothing skipped: README "Backups and
#                                  restore" says why;
#   gitlab-config.tar.gz           what that archive leaves out and a restore needs (gitlabhq
#                                  doc/administration/backup_restore/backup_gitlab.md "Storing
#                                  configuration files"): /etc/gitlab (= /srv/gitlab/config:
#                                  gitlab-secrets.json, gitlab.rb, ssl/, trusted-certs/, the SSH host
#                                  keys) and this product's rendered Omnibus configuration
#                                  (/etc/gitops/gitlab-omnibus.rb, /etc/gitops/gitlab.env);
#   SHA256SUMS                     written last: a set without it is an upload that did not finish.
# The archive is found as the one new *_gitlab_backup.tar in the backup directory, not by parsing
# output: a zero exit with no new archive fails too. Local copies are deleted once uploaded (the
# DLM snapshots and the bucket hold the history), and on any failure too: `gitlab-backup create`
# still packs an archive when one of its tasks failed (gitlabhq lib/backup/manager.rb
# run_all_create_tasks), and the archive lives on the data volume PostgreSQL and Gitaly write to.
# Free space: the archive is written next to GitLab's data, and GitLab needs up to twice its size
# while it packs (the parts, then the tar); so the run refuses to start unless the volume has twice the
# last archive's size (gitlab-last-archive-bytes) plus RESERVE_MIB (default 2048) free: a backup must
# never fill the volume GitLab runs on. The first run has no size yet and checks the reserve only.
# One run at a time (flock; install.sh takes the same lock before it restarts GitLab, gitlab-restore.sh
# for its whole run); GitLab itself
# refuses a second concurrent backup. A pre-upgrade backup that cannot be taken (GitLab not running, an upload
# refused: the hook left behind on a host whose backups are off, remove-timer.sh) fails the upgrade; an
# operator who wants to upgrade without it creates /etc/gitops/gitlab-upgrade-skip-backup on the host:
# the next pre-upgrade run removes it and takes no backup, whether GitLab runs or not.
# Parameters (env, or BACKUP_ENV, default /etc/gitops/gitlab-backup.env): BACKUP_BUCKET,
#   AWS_DEFAULT_REGION; RESERVE_MIB (optional); S3_ENDPOINT_URL (tests). FS_ROOT: tests only.
# Runs with userdata/lib/common.sh in front (components/backups.py installs both as one program).
set -euo pipefail
BACKUP_ENV="${BACKUP_ENV:-/etc/gitops/gitlab-backup.env}"
if [[ -f "$BACKUP_ENV" ]]; then
  # shellcheck source=/dev/null
  source "$BACKUP_ENV"
fi
kind="${1:-daily}"
case "$kind" in
  daily) ;;
  pre-upgrade) [[ $# -eq 3 ]] || die "usage: gitlab-backup pre-upgrade <old version> <new version>" ;;
  *) die "unknown backup kind '${kind}': daily or pre-upgrade" ;;
esac
ROOT="${FS_ROOT:-}"
SKIP_ONCE="${ROOT}/etc/gitops/gitlab-upgrade-skip-backup"
SKIP_MAX_AGE_MINUTES=1440
# Checked first: the operator's way past a backup that cannot be taken, whatever the reason. Only a
# file made for this upgrade counts: one left by an upgrade that stopped earlier (and was rolled
# back) must not skip the backup of another, months later.
if [[ "$kind" == pre-upgrade && -f "$SKIP_ONCE" ]]; then
  if [[ -z "$(find "$SKIP_ONCE" -mmin "+${SKIP_MAX_AGE_MINUTES}")" ]]; then
    rm -f "$SKIP_ONCE"
    log "WARNING: upgrading GitLab $2 -> $3 WITHOUT a backup, as ${SKIP_ONCE#"$ROOT"} asked (now removed)"
    exit 0
  fi
  rm -f "$SKIP_ONCE"
  log "WARNING: ${SKIP_ONCE#"$ROOT"} is over a day old (left by an earlier upgrade): removed; taking the backup"
fi
# A failed pre-upgrade backup stops the upgrade: say how to go on without one.
# skip_hint STATUS (also called by cleanup, which replaces this trap)
skip_hint() {
  [[ "$kind" == pre-upgrade && "$1" != 0 ]] || return 0
  log "this backup runs before the GitLab upgrade ${upgrade}, which stops when it fails. Fix the cause and run" \
    "pulumi up again; or, to upgrade without a backup, run 'sudo touch ${SKIP_ONCE#"$ROOT"}' on this host and" \
    "pulumi up again (used once)"
}
upgrade="${2:-} -> ${3:-}"
trap 'skip_hint $?' EXIT

require_env BACKUP_BUCKET AWS_DEFAULT_REGION
export AWS_DEFAULT_REGION
MOUNT="${ROOT}/srv/gitlab"
# gitlab_rails['backup_path'] default /var/opt/gitlab/backups, the data volume's data/ on the host.
ARCHIVES="${MOUNT}/data/backups"
STAGING="${MOUNT}/gitops-backup" # root only, outside the container's mounts
STATE_DIR="${ROOT}/var/lib/gitops/backups"

mkdir -p "$STATE_DIR"
exec 9>"${STATE_DIR}/gitlab-backup.lock"
flock -w 10800 9 || die "${STATE_DIR}/gitlab-backup.lock has been held for 3 hours (another GitLab backup, a restore," \
  "or a pulumi up restarting GitLab); no backup was taken"

if [[ "$(docker inspect --format '{{.State.Running}}' gitlab 2>/dev/null)" != true ]]; then
  die "GitLab is not running on this host (docker inspect gitlab): no backup can be taken"
fi

archives() { find "$ARCHIVES" -maxdepth 1 -name '*_gitlab_backup.tar' -printf '%f\n' 2>/dev/null | sort; }
mkdir -p "$ARCHIVES"
before="$(archives)"

reserve_mib="${RESERVE_MIB:-2048}"
[[ "$reserve_mib" =~ ^[0-9]+$ ]] || die "RESERVE_MIB must be a whole number of MiB, got '${reserve_mib}'"
last_bytes="$(cat "${STATE_DIR}/gitlab-last-archive-bytes" 2>/dev/null || true)"
[[ "$last_bytes" =~ ^[0-9]+$ ]] || last_bytes=0
free_bytes="$(df --output=avail -B1 "$ARCHIVES" | tail -n 1 | tr -d ' ')"
[[ "$free_bytes" =~ ^[0-9]+$ ]] || die "cannot read the free space of ${ARCHIVES} (df said '${free_bytes}')"
needed=$((2 * last_bytes + reserve_mib * 1048576))
if ((free_bytes < needed)); then
  die "not enough free space for a GitLab backup in ${ARCHIVES}: $((free_bytes / 1048576)) MiB free," \
    "$((needed / 1048576)) MiB needed (twice the last archive, $((last_bytes / 1048576)) MiB, plus a" \
    "${reserve_mib} MiB reserve for GitLab itself); nothing was written. Grow the data volume" \
    "(gitlabDataVolumeSizeGb) or free space on it; README \"Backups and restore\""
fi

# On any failure from here on: remove what this run left (a packed archive, the staging directory).
cleanup() {
  local status=$? name
  skip_hint "$status"
  rm -rf "$STAGING"
  if ((status != 0)); then
    while IFS= read -r name; do
      [[ -n "$name" ]] || continue
      rm -f "${ARCHIVES}/${name}"
      log "removed ${name}, left by this failed run, from ${ARCHIVES}"
    done < <(comm -13 <(printf '%s\n' "$before") <(archives))
  fi
}
trap cleanup EXIT
# systemd stops the unit with SIGTERM (TimeoutStartSec): exit, so the EXIT trap cleans up.
trap 'exit 143' TERM INT

# The registry's metadata database (on by default from GitLab 19.0) is in the archive only when
# gitlab-backup finds the backup role's password, which Omnibus writes here when the rendered
# configuration sets gitlab_rails['backup_role'] and backup_registry_password (components/gitlab_config.py;
# omnibus-gitlab doc/settings/backups.md, config/templates/gitlab-rails/rake_backup_wrapper.erb).
# Without it the backup would silently leave the registry's images out of a restore: the daily backup
# refuses. The pre-upgrade one only warns: install.sh runs it before it writes the hop's configuration,
# so the first upgrade after this setting arrived runs on a GitLab that does not have it yet.
REGISTRY_CREDENTIALS=/opt/gitlab/etc/gitlab-backup/env/env-backup_user
if ! docker exec gitlab grep -q '^REGISTRY_DATABASE_PASSWORD=' "$REGISTRY_CREDENTIALS"; then
  missing="GitLab has no credentials for the registry database's backup (${REGISTRY_CREDENTIALS} in the container"
  missing+=" has no REGISTRY_DATABASE_PASSWORD), so gitlab-backup would leave the registry's metadata out"
  fix="run pulumi up (it writes /srv/gitlab/config/pulumi_registry_backup_password and restarts GitLab), and check"
  fix+=" that /srv/gitlab/config/gitlab.rb does not override gitlab_rails['backup_role']"
  [[ "$kind" == pre-upgrade ]] || die "${missing}; nothing was written. ${fix}"
  log "WARNING: ${missing}: this pre-upgrade backup holds everything else. Afterwards, ${fix}"
fi

log "gitlab-backup create (${kind}${2:+: before the upgrade $2 -> $3})"
status=0
# nice/ionice inside the container: GitLab's processes (pg_dump, gitaly-backup, tar) run in its cgroup
# as children of the container runtime, not of this script, so the unit's Nice= does not reach them.
# ionice -t: an I/O priority the device's scheduler refuses never fails the backup (EBS NVMe's default
# scheduler ignores priorities; only BFQ honours them), so the priority is a best effort.
docker exec gitlab nice -n 10 ionice -t -c 2 -n 7 gitlab-backup create >&2 || status=$?
((status == 0)) || die "gitlab-backup create failed (exit ${status}; its output is above, and in the journal:" \
  "'journalctl -u gitops-gitlab-backup'); nothing was uploaded"
new="$(comm -13 <(printf '%s\n' "$before") <(archives) | sed '/^$/d')"
[[ -n "$new" ]] || die "gitlab-backup create exited 0 but wrote no new *_gitlab_backup.tar in ${ARCHIVES}; nothing was uploaded"
[[ "$(printf '%s\n' "$new" | wc -l)" -eq 1 ]] || die "more than one new archive in ${ARCHIVES}: ${new//$'\n'/ }; nothing was uploaded"
archive="${ARCHIVES}/${new}"
id="${new%_gitlab_backup.tar}"
# <unix time>_<YYYY>_<MM>_<DD>_<GitLab version> (gitlabhq lib/backup/manager.rb backup_id)
version="${id##*_}"
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+ ]] || die "cannot read GitLab's version from the backup id ${id}; nothing was uploaded"

rm -rf "$STAGING"
install -d -m 0700 "$STAGING"
tar -C "${ROOT:-/}" --create --gzip --file "${STAGING}/gitlab-config.tar.gz" --exclude=srv/gitlab/config/config_backup \
  srv/gitlab/config etc/gitops/gitlab-omnibus.rb etc/gitops/gitlab.env || die "could not archive GitLab's configuration"
archive_sha="$(sha256sum "$archive" | cut -d ' ' -f 1)"
config_sha="$(sha256sum "${STAGING}/gitlab-config.tar.gz" | cut -d ' ' -f 1)"
printf '%s  %s\n%s  %s\n' "$archive_sha" "$new" "$config_sha" gitlab-config.tar.gz >"${STAGING}/SHA256SUMS"

url="s3://${BACKUP_BUCKET}/gitlab/${kind}/${id}"
log "uploading ${new} ($(du -h "$archive" | cut -f 1)) to ${url}/"
upload "$archive" "${url}/${new}" --metadata "sha256=${archive_sha},gitlab-version=${version}"
upload "${STAGING}/gitlab-config.tar.gz" "${url}/gitlab-config.tar.gz" --metadata "sha256=${config_sha}"
upload "${STAGING}/SHA256SUMS" "${url}/SHA256SUMS"
archive_bytes="$(stat -c %s "$archive")"
rm -f "$archive"
printf '%s\n' "$archive_bytes" >"${STATE_DIR}/gitlab-last-archive-bytes"
printf '%s %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$kind" "$id" >"${STATE_DIR}/gitlab-last-success"
log "GitLab ${version} backed up to ${url}/"
printf '%s/\n' "$url"
