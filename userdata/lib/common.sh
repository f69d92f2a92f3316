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

# A step whose stdout the program reads (a version, a date: pulumi-command keeps stdout as it is)
# calls `stdout_is_the_result` before anything else. From then on everything the step and the
# commands it runs print goes to stderr (apt-get, dpkg and kubeadm print their progress on stdout),
# and only `result VALUE` writes to the step's stdout, kept on file descriptor 3.
stdout_is_the_result() {
  exec 3>&1 1>&2
}

result() {
  printf '%s\n' "$*" >&3
}

# A line at least this often during long waits: the operator sees progress, and middleboxes that
# cut idle connections (NAT gateways, proxies: typically 350 s or more) never see a silent SSH session.
HEARTBEAT_SECONDS="${HEARTBEAT_SECONDS:-60}"
POLL_SECONDS="${POLL_SECONDS:-5}"

# with_heartbeat DESCRIPTION COMMAND...: run COMMAND (a program or a function), logging
# "still DESCRIPTION" every HEARTBEAT_SECONDS until it ends; returns its exit status.
with_heartbeat() {
  local description="$1" pid status=0 started=$SECONDS next
  shift
  "$@" &
  pid=$!
  next=$((SECONDS + HEARTBEAT_SECONDS))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= next)); then
      log "still ${description} ($((SECONDS - started))s)"
      next=$((SECONDS + HEARTBEAT_SECONDS))
    fi
    sleep 1
  done
  wait "$pid" || status=$?
  return "$status"
}

# Wait (bounded) for cloud-init to finish; fail with the end of its log if it did not succeed.
# `cloud-init status --wait` exits 0 (done), 1 (error) or, from cloud-init 23.4 on, 2: done with
# recoverable errors ("degraded", canonical/cloud-init e517f5a; e.g. a Debian 13 image). The boot
# script itself succeeded in that case, so exit 2 is accepted, with `status --long` in the log.
wait_for_cloud_init() {
  local timeout="${1:-1200}" status=0
  log "waiting up to ${timeout}s for cloud-init to finish"
  with_heartbeat "waiting for cloud-init" timeout "$timeout" cloud-init status --wait >/dev/null || status=$?
  case "$status" in
    0) ;;
    2)
      log "cloud-init finished with recoverable errors (exit 2, degraded): continuing; its report:"
      cloud-init status --long >&2 || true
      ;;
    *)
      cloud-init status --long >&2 || true
      log "last lines of /var/log/cloud-init-output.log:"
      tail -n 60 /var/log/cloud-init-output.log >&2 || true
      die "cloud-init did not succeed (exit ${status}); full logs: /var/log/cloud-init.log, /var/log/cloud-init-output.log"
      ;;
  esac
}

# wait_until SECONDS DESCRIPTION COMMAND...: run COMMAND every POLL_SECONDS until it succeeds or
# time is up, with a heartbeat line every HEARTBEAT_SECONDS.
wait_until() {
  local timeout="$1" description="$2" deadline started=$SECONDS next
  shift 2
  deadline=$((SECONDS + timeout))
  next=$((SECONDS + HEARTBEAT_SECONDS))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      die "timed out after ${timeout}s waiting for ${description}"
    fi
    if ((SECONDS >= next)); then
      log "still waiting for ${description} ($((SECONDS - started))s of ${timeout}s)"
      next=$((SECONDS + HEARTBEAT_SECONDS))
    fi
    sleep "$POLL_SECONDS"
  done
}

# hold_lock FILE DESCRIPTION: an exclusive lock (flock(1), util-linux) on FILE until the step ends,
# for programs that must not run at the same time on a host (kubeadm's certificate renewal and its
# upgrade both move the control plane's static pod manifests). Waits, bounded and with a heartbeat,
# while another holds it.
hold_lock() {
  local file="$1" description="$2" wait="${LOCK_WAIT_SECONDS:-3600}"
  install -d -m 0755 "$(dirname "$file")"
  exec {GITOPS_LOCK_FD}>"$file"
  flock --nonblock "$GITOPS_LOCK_FD" && return 0
  log "waiting for ${description} to finish (lock ${file})"
  with_heartbeat "waiting for ${description} (lock ${file})" flock --wait "$wait" "$GITOPS_LOCK_FD" ||
    die "${description} still holds ${file} after ${wait}s; nothing was changed"
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
