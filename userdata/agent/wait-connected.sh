#!/usr/bin/env bash
# Step (GitLab host, over SSH; no credential): wait (bounded) until GitLab's agent server (KAS) reports
# the agent connected from the agentk pods that run now; stop at once when it cannot be (the agent or
# its token is gone, the token is revoked, KAS is off), and fail with KAS's log when time is up.
#
# A Ready agentk Deployment proves nothing (agentk's readiness probe does not check KAS). GitLab's
# own answer does: the program asks KAS for the agent's live connections as GitLab's API does
# (Resolvers::Kas::AgentConnectionsResolver), from inside GitLab (`gitlab-rails runner`), so no
# GitLab token leaves this host, and none reaches the cluster. A connection means agentk reached KAS
# with its token and KAS reached GitLab's internal API, i.e. every TLS trust on the way (agentk ->
# KAS: kasCaCert; KAS -> GitLab: /etc/gitlab/trusted-certs) works.
# stdin (public): the Ruby program (components/gitlab_agent.py connection_program), for
#   `gitlab-rails runner -`; it holds the agent, its token's id and the pods the rollout step found.
# env (public): TIMEOUT_SECONDS (the program's own wait), RUNNER_BOOT_SECONDS (what Rails may take to
#   start on top of it), AGENT_NAMESPACE and POD_SELECTOR (where agentk's log is, for the message).
# Idempotent: it only reads. Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail

# Read the program first, before any other command can touch stdin.
program="$(cat)"
[[ -n "$program" ]] || die "stdin is empty: expected the Ruby program that asks GitLab's agent server"

require_env TIMEOUT_SECONDS RUNNER_BOOT_SECONDS AGENT_NAMESPACE POD_SELECTOR
[[ "$TIMEOUT_SECONDS" =~ ^[0-9]+$ ]] || die "TIMEOUT_SECONDS ${TIMEOUT_SECONDS} is not a number of seconds"
[[ "$RUNNER_BOOT_SECONDS" =~ ^[0-9]+$ ]] || die "RUNNER_BOOT_SECONDS ${RUNNER_BOOT_SECONDS} is not a number of seconds"
KAS_LOG="${FS_ROOT:-}/srv/gitlab/logs/gitlab-kas/current"

diagnose() {
  log "GitLab's agent server: its service, then the last lines of its log (${KAS_LOG}):"
  docker exec gitlab gitlab-ctl status gitlab-kas >&2 || true
  tail -n 80 "$KAS_LOG" >&2 || true
  log "what the messages mean: an x509 error in KAS's log: GitLab's CA is not in /srv/gitlab/config/trusted-certs" \
    "(sudo docker exec gitlab gitlab-ctl restart gitlab-kas after adding it); no trace of agentk at all: agentk" \
    "cannot reach or trust GitLab. agentk's own log is in the cluster:" \
    "kubectl -n ${AGENT_NAMESPACE} logs -l ${POD_SELECTOR} --tail=200 (with the stack's kubeconfig output)."
}

log "asking GitLab's agent server for the agent's connections (gitlab-rails runner: about a minute to start," \
  "then up to ${TIMEOUT_SECONDS}s)"
output="$(mktemp)"
trap 'rm -f "$output"' EXIT
status=0
printf '%s\n' "$program" |
  timeout "$((TIMEOUT_SECONDS + RUNNER_BOOT_SECONDS))" docker exec -i gitlab gitlab-rails runner - >"$output" ||
  status=$?
verdict="$(grep -E '^(connected|refused|timeout) ' "$output" | tail -n 1)" || verdict=""
# Anything else Rails printed (deprecation notices) is progress, not a result.
grep -vE '^(connected|refused|timeout) ' "$output" >&2 || true
case "$verdict" in
  connected*) log "the agent is connected: ${verdict#connected }" ;;
  refused*) die "${verdict#refused }" ;;
  timeout*)
    diagnose
    die "GitLab's agent server reported no connection from the agentk pods that run now within ${TIMEOUT_SECONDS}s;" \
      "last answer: ${verdict#timeout }"
    ;;
  *)
    diagnose
    die "gitlab-rails runner ended (exit ${status}) without an answer; GitLab's log: /srv/gitlab/logs/gitlab-rails/"
    ;;
esac
