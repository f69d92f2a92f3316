#!/usr/bin/env bash
# Functions shared by every step under userdata/. A remote step is sent as this file followed by
# the step's own file (components/remote.py), so the step finds these already defined; run from a
# checkout, a step sources this file itself.
set -euo pipefail

log() {
  printf '%s [%s] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${STEP_NAME:-step}" "$*" >&2
}

die() {
  log "ERROR: $*"
  exit 1
}

# Wait (bounded) for cloud-init to finish; fail with the end of its log if it did not succeed.
wait_for_cloud_init() {
  local timeout="${1:-1200}" status=0
  log "waiting up to ${timeout}s for cloud-init to finish"
  timeout "$timeout" cloud-init status --wait >/dev/null || status=$?
  if [[ $status -ne 0 ]]; then
    cloud-init status --long >&2 || true
    log "last lines of /var/log/cloud-init-output.log:"
    tail -n 60 /var/log/cloud-init-output.log >&2 || true
    die "cloud-init did not succeed (exit ${status}); full logs: /var/log/cloud-init.log, /var/log/cloud-init-output.log"
  fi
}

# wait_until SECONDS DESCRIPTION COMMAND...: run COMMAND every 5 s until it succeeds or time is up.
wait_until() {
  local timeout="$1" description="$2" deadline
  shift 2
  deadline=$((SECONDS + timeout))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      die "timed out after ${timeout}s waiting for ${description}"
    fi
    sleep 5
  done
}

# retry ATTEMPTS COMMAND...: for network calls that may fail transiently (apt, downloads).
retry() {
  local attempts="$1" n=1
  shift
  until "$@"; do
    if ((n >= attempts)); then
      die "failed after ${attempts} attempts: $*"
    fi
    log "attempt ${n}/${attempts} failed, retrying in $((n * 5))s: $*"
    sleep $((n * 5))
    n=$((n + 1))
  done
}

# require_env NAME...: fail early, naming the missing parameter, instead of half-running a step.
require_env() {
  local name
  for name in "$@"; do
    [[ -n "${!name:-}" ]] || die "missing parameter ${name}"
  done
}
