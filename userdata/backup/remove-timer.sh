#!/usr/bin/env bash
# Step (delete of install-timer.sh: backups turned off, or the host going away): stop and remove the
# timer, its service and the files install-timer.sh wrote. Backups already in the bucket stay.
# Only on the instance the timer was installed on: when the instance is replaced, the old step's delete
# runs after the new one was created, and its address (the Elastic IP) may already reach the new
# instance, whose timer must stay. The instance asks its metadata service (IMDSv2) who it is; when
# that does not answer, nothing is removed (fail closed: removing the new instance's timer would stop
# its backups silently, while a timer left behind only logs failed runs, and a pre-upgrade hook left
# behind fails an upgrade with directions: the warning says how to remove both by hand).
# Parameters: UNIT, FILE_PATHS (space-separated absolute paths), INSTANCE_ID. FS_ROOT: tests only.
set -euo pipefail
require_env UNIT FILE_PATHS INSTANCE_ID
ROOT="${FS_ROOT:-}"
token="$(curl --silent --max-time 5 -X PUT http://169.254.169.254/latest/api/token \
  -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' 2>/dev/null || true)"
this_instance="$(curl --silent --fail --max-time 5 -H "X-aws-ec2-metadata-token: ${token}" \
  http://169.254.169.254/latest/meta-data/instance-id 2>/dev/null || true)"
if [[ -z "$this_instance" ]]; then
  log "WARNING: the instance metadata service did not say which instance this is: ${UNIT}.timer and its files are" \
    "left in place. If this host is ${INSTANCE_ID} and backups are off, remove them by hand:" \
    "sudo systemctl disable --now ${UNIT}.timer; sudo rm -f ${FILE_PATHS}; sudo systemctl daemon-reload"
  # A hook left behind still runs before every upgrade (the GitLab host's pre-gitlab-upgrade takes a
  # backup), and with backups off the host's role may no longer upload it: the upgrade stops there.
  for path in $FILE_PATHS; do
    if [[ "$path" == */hooks/pre-gitlab-upgrade ]]; then
      log "WARNING: that includes ${path}, which runs a backup before each GitLab upgrade: while it stays, with backups" \
        "off its upload is refused and the upgrade stops. Remove it (above), or let one upgrade go without a" \
        "backup: sudo touch /etc/gitops/gitlab-upgrade-skip-backup (README \"Troubleshooting\")"
    fi
  done
  exit 0
fi
if [[ "$this_instance" != "$INSTANCE_ID" ]]; then
  log "this is ${this_instance}, not ${INSTANCE_ID} the ${UNIT} timer was installed on: left in place"
  exit 0
fi
systemctl disable --now "${UNIT}.timer" >&2 || log "${UNIT}.timer was not enabled"
for path in $FILE_PATHS; do
  rm -f "${ROOT}${path}"
done
systemctl daemon-reload
log "${UNIT}.timer removed; the backups in the bucket are kept"
