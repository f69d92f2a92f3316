#!/usr/bin/env bash
# Step (GitLab host, over SSH): seed the admin API token Pulumi generated, and turn on what GitLab's
# view of the cluster needs (certificate-based integration only: allow_local_requests_from_web_hooks_and_services,
# the certificate_based_clusters feature flag) on the database with every cache bypassed, in one
# `gitlab-rails runner` run; then, only if that changed anything, wait until no Puma worker can
# still serve its cached copy (application settings: application_settings_cache_seconds, 60 s by
# default; feature flags: a 1-minute per-process cache). What depends on the settings
# (ProjectCluster) starts after this step, so it never lands on a worker that still says no.
# stdin (secret): the Ruby program (components/gitlab_config.py seed_token_program). It holds the
#   token, so it goes straight to `gitlab-rails runner -` (Rails reads the program from stdin):
#   never to disk, never to a command line.
# env (public): GITLAB_HOSTNAME.
# stdout: `expires_at=YYYY-MM-DD` alone (the stack output gitlabAdminTokenExpiresAt); everything
#   else, the commands' output included, goes to stderr.
# Idempotent: the program looks the token up by name first and keeps it when it holds this value;
# settings already in place change nothing, and then nothing waits.
# Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail
stdout_is_the_result

# Read the program first, before any other command can touch stdin.
program="$(cat)"
[[ -n "$program" ]] || die "stdin is empty: expected the Ruby seeding program"

require_env GITLAB_HOSTNAME
CONTAINER_CA=/etc/gitlab/trusted-certs/gitops-gitlab-ca.crt

# /-/readiness answers only from localhost (gitlab_rails['monitoring_whitelist']): ask from inside.
gitlab_ready() {
  docker exec gitlab curl --fail --silent --output /dev/null --max-time 10 --cacert "$CONTAINER_CA" \
    --resolve "${GITLAB_HOSTNAME}:443:127.0.0.1" "https://${GITLAB_HOSTNAME}/-/readiness" 2>/dev/null
}
wait_until 900 "GitLab's readiness check (see: docker logs gitlab; /srv/gitlab/logs)" gitlab_ready

log "seeding the admin API token and the cluster integration's settings (gitlab-rails runner: ~1-2 minutes)"
output="$(mktemp)"
trap 'rm -f "$output"' EXIT
status=0
printf '%s\n' "$program" | timeout 900 docker exec -i gitlab gitlab-rails runner - >"$output" || status=$?
if ((status != 0)); then
  cat "$output" >&2
  die "gitlab-rails runner failed (exit ${status}); GitLab's log: /srv/gitlab/logs/gitlab-rails/"
fi
expiry="$(grep -E '^expires_at=[0-9]{4}-[0-9]{2}-[0-9]{2}$' "$output" | tail -n 1)" ||
  die "the seeding program printed no expires_at line: $(cat "$output")"
settings_changed="$(grep -E '^settings_changed=(yes|no)$' "$output" | tail -n 1)" ||
  die "the seeding program printed no settings_changed line: $(cat "$output")"
cache_seconds="$(grep -E '^settings_cache_seconds=[0-9]+$' "$output" | tail -n 1)" ||
  die "the seeding program printed no settings_cache_seconds line: $(cat "$output")"
cache_seconds="${cache_seconds#*=}"
# Anything else the runner printed (deprecation notices) is progress, not a result.
grep -vE '^(expires_at|settings_changed|settings_cache_seconds)=' "$output" >&2 || true
log "admin token seeded (${expiry})"

# wait_out_caches SECONDS: sleep, saying so every 15 s, so a slow `pulumi up` is visibly alive.
wait_out_caches() {
  local remaining="$1" chunk
  while ((remaining > 0)); do
    log "waiting ${remaining}s more until every GitLab process has dropped its cached settings and feature flags"
    chunk=$((remaining < 15 ? remaining : 15))
    sleep "$chunk"
    remaining=$((remaining - chunk))
  done
}

if [[ "$settings_changed" == settings_changed=yes ]]; then
  # The longer of the two cache lifetimes (feature flags: 60 s), plus a margin for a worker that
  # filled its cache just before the change.
  wait_seconds=$(((cache_seconds > 60 ? cache_seconds : 60) + 10))
  log "turned on what the cluster integration needs; Puma workers cache it for up to ${cache_seconds}s"
  wait_out_caches "$wait_seconds"
  log "settings are effective on every worker"
else
  log "the cluster integration's settings were already in place (or it needs none): nothing to wait for"
fi
result "$expiry"
