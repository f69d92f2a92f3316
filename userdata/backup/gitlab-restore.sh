#!/usr/bin/env bash
# Program (GitLab host, run by an operator: README "Backups and restore"): restore a backup set onto
# this host's GitLab. Usage: sudo gitlab-restore <set>, where <set> is a directory holding a set, or a
# set in the stack's bucket (s3://<bucket>/gitlab/<kind>/<backup id>/ or gitlab/<kind>/<backup id>/).
#
# GitLab restores a backup only onto exactly the same version and edition, running and reconfigured
# (gitlabhq doc/administration/backup_restore/restore_gitlab.md). Refused before anything changes: a
# missing or unfinished set, a checksum mismatch, an archive whose backup_information.yml or backup
# id names another GitLab version than this host runs (data/gitlab-rails/VERSION, what install.sh
# reads), GitLab not running.
# Then the documented order for Docker: the backup's gitlab-secrets.json in place (the current one
# kept as gitlab-secrets.json.before-restore-<stamp>) and `gitlab-ctl reconfigure`; puma and sidekiq
# stopped; `gitlab-backup restore BACKUP=<id>` with GITLAB_ASSUME_YES=1 (no prompts); GitLab
# restarted; `gitlab-rake gitlab:check SANITIZE=true` and `gitlab:doctor:secrets` reported. The rest
# of the set's configuration (gitlab.rb, TLS, SSH host keys, /etc/gitops) is not written back: Pulumi
# owns it and the install step puts it in place; the script says when the backup's differs.
# The whole run holds /var/lib/gitops/backups/gitlab-backup.lock, the lock the daily backup
# (gitlab-backup.sh) and a pulumi up's install step (userdata/gitlab/install.sh, before it rewrites
# GitLab's files and restarts it) take: neither may run during a restore that lasts hours. While one
# of them holds it, the restore waits (LOCK_WAIT_SECONDS, default 3600, with a heartbeat) and then
# fails before it changes or downloads anything.
# Parameters (env, or BACKUP_ENV, default /etc/gitops/gitlab-backup.env): BACKUP_BUCKET and
#   AWS_DEFAULT_REGION for a set in the bucket; S3_ENDPOINT_URL (tests), WAIT_SECONDS (900),
#   LOCK_WAIT_SECONDS (3600). FS_ROOT: tests only.
set -euo pipefail
BACKUP_ENV="${BACKUP_ENV:-/etc/gitops/gitlab-backup.env}"
if [[ -f "$BACKUP_ENV" ]]; then
  # shellcheck source=/dev/null
  source "$BACKUP_ENV"
fi
[[ $# -eq 1 ]] || die "usage: gitlab-restore <set directory | s3://<bucket>/gitlab/<kind>/<backup id>/>"
set_ref="${1%/}"
ROOT="${FS_ROOT:-}"
MOUNT="${ROOT}/srv/gitlab"
ARCHIVES="${MOUNT}/data/backups"
VERSION_FILE="${MOUNT}/data/gitlab-rails/VERSION"
WAIT="${WAIT_SECONDS:-900}"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"

# ---- 1. checks: nothing changes until they pass -------------------------------------------------
hold_lock "${ROOT}/var/lib/gitops/backups/gitlab-backup.lock" \
  "a GitLab backup (the daily timer or a pre-upgrade hook) or a pulumi up restarting GitLab"
id="${set_ref##*/}"
[[ "$id" =~ ^[0-9]+_[0-9]{4}_[0-9]{2}_[0-9]{2}_[0-9]+\.[0-9]+\.[0-9]+ ]] ||
  die "'${set_ref}' does not end with a GitLab backup id (<unix time>_<YYYY_MM_DD>_<version>). Nothing was changed."
archive_name="${id}_gitlab_backup.tar"
backup_version="${id##*_}"
[[ "$(docker inspect --format '{{.State.Running}}' gitlab 2>/dev/null)" == true ]] ||
  die "GitLab is not running on this host: a backup restores only onto a running, reconfigured GitLab of the same" \
    "version (pulumi up with gitlabImageTag on ${backup_version}). Nothing was changed."
running_version="$(head -n 1 "$VERSION_FILE" 2>/dev/null | grep -oE '^[0-9]+\.[0-9]+\.[0-9]+' || true)"
[[ "$running_version" == "$backup_version" ]] ||
  die "the backup is from GitLab ${backup_version}, this host runs ${running_version:-an unknown version}: GitLab restores only" \
    "onto the same version. Set gitlabImageTag to the ${backup_version} tag (gitlab/gitlab-ce:${backup_version}-ce.0)," \
    "run pulumi up, then run this again. Nothing was changed."

work="${MOUNT}/gitops-restore/${id}"
rm -rf "${MOUNT}/gitops-restore"
install -d -m 0700 "$work"
trap 'rm -rf "${MOUNT}/gitops-restore"' EXIT
files=(SHA256SUMS "$archive_name" gitlab-config.tar.gz)
if [[ -d "$set_ref" ]]; then
  for file in "${files[@]}"; do
    [[ -f "${set_ref}/${file}" ]] || die "${set_ref} holds no ${file}: not a complete backup set. Nothing was changed."
    cp "${set_ref}/${file}" "$work/"
  done
else
  require_env BACKUP_BUCKET AWS_DEFAULT_REGION
  export AWS_DEFAULT_REGION
  key="${set_ref#s3://"${BACKUP_BUCKET}"/}"
  [[ "$key" =~ ^gitlab/(daily|pre-upgrade)/[^/]+$ ]] ||
    die "'${set_ref}' is neither a directory nor a set of s3://${BACKUP_BUCKET}/gitlab/<kind>/<backup id>/. Nothing was changed."
  for file in "${files[@]}"; do
    aws_s3 s3 cp "s3://${BACKUP_BUCKET}/${key}/${file}" "${work}/${file}" --only-show-errors >&2 ||
      die "no ${file} in s3://${BACKUP_BUCKET}/${key}/ (missing, or an upload that did not finish); list the sets with" \
        "'aws s3 ls s3://${BACKUP_BUCKET}/gitlab/daily/'. Nothing was changed."
  done
fi
(cd "$work" && sha256sum --check --strict --quiet SHA256SUMS >&2) ||
  die "checksum mismatch: the set's files are not the ones SHA256SUMS describes (damaged or incomplete). Nothing was changed."
recorded="$(tar -xOf "${work}/${archive_name}" backup_information.yml 2>/dev/null |
  sed -nE "s/^:?gitlab_version: *['\"]?([^'\"]+)['\"]?$/\1/p")" ||
  die "${archive_name} holds no backup_information.yml: not a GitLab backup archive. Nothing was changed."
[[ "$recorded" == "$backup_version" ]] ||
  die "${archive_name} records GitLab ${recorded:-no version}, its name says ${backup_version}. Nothing was changed."
mkdir -p "${work}/config"
tar -C "${work}/config" -xzf "${work}/gitlab-config.tar.gz" || die "gitlab-config.tar.gz does not unpack. Nothing was changed."
secrets="${work}/config/srv/gitlab/config/gitlab-secrets.json"
[[ -s "$secrets" ]] || die "gitlab-config.tar.gz holds no srv/gitlab/config/gitlab-secrets.json. Nothing was changed."
for file in etc/gitops/gitlab-omnibus.rb etc/gitops/gitlab.env; do
  if ! cmp -s "${work}/config/${file}" "${ROOT}/${file}"; then
    log "note: the backup's /${file} differs from this host's; the host's (Pulumi's) stays. The backup's is in the set."
  fi
done

# ---- 2. restore, in GitLab's documented order -----------------------------------------------------
log "restoring GitLab ${backup_version} from ${id}"
if [[ -f "${MOUNT}/config/gitlab-secrets.json" ]]; then
  cp -p "${MOUNT}/config/gitlab-secrets.json" "${MOUNT}/config/gitlab-secrets.json.before-restore-${stamp}"
fi
install -m 0600 "$secrets" "${MOUNT}/config/gitlab-secrets.json"
docker exec gitlab gitlab-ctl reconfigure >&2 || die "gitlab-ctl reconfigure failed with the backup's gitlab-secrets.json"
docker exec gitlab gitlab-ctl stop puma >&2
docker exec gitlab gitlab-ctl stop sidekiq >&2
mv "${work}/${archive_name}" "${ARCHIVES}/${archive_name}"
docker exec gitlab chown git:git "/var/opt/gitlab/backups/${archive_name}"
docker exec -e GITLAB_ASSUME_YES=1 gitlab gitlab-backup restore "BACKUP=${id}" >&2 ||
  die "gitlab-backup restore failed (output above); GitLab's puma and sidekiq are stopped: fix the cause and run this" \
    "again, or 'sudo systemctl restart gitlab' to serve the database as it is now"
rm -f "${ARCHIVES}/${archive_name}"
systemctl restart gitlab.service
services_up() { docker exec gitlab gitlab-ctl status >/dev/null 2>&1; }
wait_until "$WAIT" "GitLab's services to run again" services_up
docker exec gitlab gitlab-rake gitlab:check SANITIZE=true >&2 ||
  log "WARNING: gitlab:check reports problems (above): see restore_gitlab.md 'Post-restore'"
docker exec gitlab gitlab-rake gitlab:doctor:secrets >&2 ||
  log "WARNING: gitlab:doctor:secrets reports values it cannot decrypt (above): the wrong gitlab-secrets.json?"
log "GitLab ${backup_version} restored from ${id}; run pulumi up to put this stack's settings and tokens back in place"
