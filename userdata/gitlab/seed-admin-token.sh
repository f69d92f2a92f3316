#!/usr/bin/env bash
# Step (GitLab host, over SSH): seed the admin API token Pulumi generated and turn on the
# certificate_based_clusters feature flag, in one `gitlab-rails runner` run.
# stdin (secret): the Ruby program (components/gitlab_config.py seed_token_program). It holds the
#   token, so it goes straight to `gitlab-rails runner -` (Rails reads the program from stdin):
#   never to disk, never to a command line.
# env (public): GITLAB_HOSTNAME.
# stdout: `expires_at=YYYY-MM-DD` (the stack output gitlabAdminTokenExpiresAt) and
#   `root_user_id=<id>` (the token's user, made a member of the app project for Flux's deploy key).
# Idempotent: the program looks the token up by name first and keeps it when it holds this value.
# Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail

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

log "seeding the admin API token and enabling certificate_based_clusters (gitlab-rails runner: ~1-2 minutes)"
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
root_id="$(grep -E '^root_user_id=[0-9]+$' "$output" | tail -n 1)" ||
  die "the seeding program printed no root_user_id line: $(cat "$output")"
# Anything else the runner printed (deprecation notices) is progress, not a result.
grep -vE '^(expires_at|root_user_id)=' "$output" >&2 || true
log "admin token seeded (${expiry}); feature flag certificate_based_clusters is on"
printf '%s\n%s\n' "$expiry" "$root_id"
