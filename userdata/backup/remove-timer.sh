#!/usr/bin/env bash
# Step (delete of install-timer.sh: backups turned off, or the host going away): stop and remove the
# timer, its service and the files install-timer.sh wrote. Backups already in the bucket stay.
# Parameters: UNIT, FILE_PATHS (space-separated absolute paths). FS_ROOT: tests only.
set -euo pipefail
require_env UNIT FILE_PATHS
ROOT="${FS_ROOT:-}"
systemctl disable --now "${UNIT}.timer" >&2 || log "${UNIT}.timer was not enabled"
for path in $FILE_PATHS; do
  rm -f "${ROOT}${path}"
done
systemctl daemon-reload
log "${UNIT}.timer removed; the backups in the bucket are kept"
