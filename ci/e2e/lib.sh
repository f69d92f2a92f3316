#!/usr/bin/env bash
# Shared by the real-cloud end-to-end lane's scripts (lane.sh, cleanup.sh, leak-check.sh); sourced.
# Parameters (environment): E2E_DELIVERY (pull|push) and CI_PIPELINE_ID name the ephemeral stack
# e2e-<pipeline id>-<mode>, unless E2E_STACK names it. E2E_SOURCE_STACK (default dev) is the stack
# whose settings it copies. PYTHON (default venv/bin/python) runs the repository's tools.
set -euo pipefail

log() {
  printf '%s [e2e %s] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${E2E_STEP:-lane}" "$*" >&2
}

die() {
  log "ERROR: $*"
  exit 1
}

step() { # step NAME: label the log lines that follow
  E2E_STEP="$1"
  log "---- ${1}"
}

e2e_stack_name() {
  if [[ -n "${E2E_STACK:-}" ]]; then
    printf '%s\n' "$E2E_STACK"
    return
  fi
  [[ -n "${CI_PIPELINE_ID:-}" ]] || die "set E2E_STACK, or CI_PIPELINE_ID and E2E_DELIVERY"
  [[ "${E2E_DELIVERY:-}" == pull || "${E2E_DELIVERY:-}" == push ]] ||
    die "E2E_DELIVERY is '${E2E_DELIVERY:-}'; expected pull or push"
  printf 'e2e-%s-%s\n' "$CI_PIPELINE_ID" "$E2E_DELIVERY"
}

# An ephemeral stack is never one a user deploys: refuse anything but e2e-* so a mistyped variable
# cannot unprotect or destroy dev or prod.
require_ephemeral() {
  [[ "$1" =~ ^e2e-[A-Za-z0-9._-]+$ ]] || die "refusing to work on stack '$1': the lane only touches stacks named e2e-*"
}

# with_attempts ATTEMPTS INTERVAL DESCRIPTION COMMAND...: run COMMAND until it succeeds, at most
# ATTEMPTS times, INTERVAL seconds apart (bounded by attempts, not by a clock).
with_attempts() {
  local attempts="$1" interval="$2" description="$3" n=1
  shift 3
  until "$@"; do
    if ((n >= attempts)); then
      log "${description}: still failing after ${n} attempt(s)"
      return 1
    fi
    log "${description}: attempt ${n}/${attempts} failed, retrying in ${interval}s"
    sleep "$interval"
    n=$((n + 1))
  done
}

attempts_for() { # attempts_for TIMEOUT INTERVAL: how many polls fit in TIMEOUT (at least 1)
  local timeout="$1" interval="$2"
  ((interval > 0)) || interval=1
  printf '%s\n' $((timeout / interval + 1))
}
