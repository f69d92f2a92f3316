#!/usr/bin/env bash
# Step (GitLab host, over SSH): register the instance runner Pulumi created (gitlab.UserRunner) and
# run it as a systemd-managed container with the docker executor, privileged for docker:dind.
# stdin (secret): the runner authentication token (glrt-…), one line.
# env (public): GITLAB_HOSTNAME, GITLAB_RUNNER_IMAGE, GITLAB_RUNNER_NAME, RUNNER_JOB_IMAGE, GITLAB_CA_PEM,
#   RUNNER_FEATURE_FLAGS (space-separated names, each registered as true). HOST_ROOT is empty on a
#   host: the step's behaviour tests point it at a scratch directory.
# The token reaches `gitlab-runner register` as CI_SERVER_TOKEN, the variable behind its --token
# flag (gitlab-runner common/config.go, RunnerCredentials): it never appears in an argument list.
# Feature flags go to [runners.feature_flags] through --feature-flags NAME:true (gitlab-runner
# commands/register_integration_test.go "feature flags are included in config"), where no job can
# override them (docs/configuration/feature-flags.md).
# Idempotent: a marker keeps the SHA-256 of the registered token and registration options; a new
# token (the runner was replaced) or new options re-register from a fresh config.toml.
# Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail

# Read the token first, before any other command can touch stdin.
IFS= read -r token || [[ -n "${token:-}" ]] || die "stdin is empty: expected the runner token"
[[ "$token" == glrt-* ]] || die "stdin does not hold a runner authentication token (glrt-…)"

require_env GITLAB_HOSTNAME GITLAB_RUNNER_IMAGE GITLAB_RUNNER_NAME RUNNER_JOB_IMAGE GITLAB_CA_PEM RUNNER_FEATURE_FLAGS
[[ "$RUNNER_FEATURE_FLAGS" =~ ^FF_[A-Z0-9_]+( FF_[A-Z0-9_]+)*$ ]] ||
  die "RUNNER_FEATURE_FLAGS ${RUNNER_FEATURE_FLAGS} is not a list of FF_ names"
[[ "$GITLAB_RUNNER_IMAGE" =~ ^gitlab/gitlab-runner:[0-9A-Za-z._-]+$ ]] ||
  die "GITLAB_RUNNER_IMAGE ${GITLAB_RUNNER_IMAGE} is not a gitlab/gitlab-runner tag"
wait_for_cloud_init

HOST_ROOT="${HOST_ROOT:-}"
CONFIG="${HOST_ROOT}/etc/gitlab-runner" # mounted at /etc/gitlab-runner in the runner container
CA="$CONFIG/certs/ca.crt"
MARKER="$CONFIG/.registered-token.sha256"

install -d -m 0700 "$CONFIG"
install -d -m 0755 "$CONFIG/certs"
# The runner trusts GitLab with it (--tls-ca-file), and the helper image installs it at start when
# it is mounted at /etc/gitlab-runner/certs/ca.crt (gitlab-runner docs/configuration/tls-self-signed.md).
printf '%s' "$GITLAB_CA_PEM" >"$CA.tmp"
chmod 0644 "$CA.tmp"
mv -f "$CA.tmp" "$CA"

# Jobs reach GitLab the way the runner does: its public DNS name resolves to the private IP here.
gitlab_reachable() {
  curl --fail --silent --output /dev/null --max-time 10 --cacert "$CA" "https://${GITLAB_HOSTNAME}/users/sign_in"
}
wait_until 600 "https://${GITLAB_HOSTNAME} to answer from this host (DNS and TLS as the runner sees them)" gitlab_reachable

if ! docker image inspect "$GITLAB_RUNNER_IMAGE" >/dev/null 2>&1; then
  log "pulling ${GITLAB_RUNNER_IMAGE}"
  retry 3 timeout 600 docker pull --quiet "$GITLAB_RUNNER_IMAGE"
fi

# Everything `gitlab-runner register` is told but the token. Volumes reach the build container and
# every service container (docker:dind included): /certs/client shares dind's TLS client
# certificates (doc/ci/docker/using_docker_build.md); the CA file lets the helper trust GitLab;
# /etc/docker/certs.d lets dind trust the registry.
registration=(
  --non-interactive
  --url "https://${GITLAB_HOSTNAME}"
  --tls-ca-file /etc/gitlab-runner/certs/ca.crt
  --description "$GITLAB_RUNNER_NAME"
  --executor docker
  --docker-image "$RUNNER_JOB_IMAGE"
  --docker-privileged
  --docker-volumes /cache
  --docker-volumes /certs/client
  --docker-volumes /etc/gitlab-runner/certs/ca.crt:/etc/gitlab-runner/certs/ca.crt:ro
  --docker-volumes /etc/docker/certs.d:/etc/docker/certs.d:ro
)
for flag in $RUNNER_FEATURE_FLAGS; do
  registration+=(--feature-flags "${flag}:true")
done

register() {
  log "registering runner ${GITLAB_RUNNER_NAME} with https://${GITLAB_HOSTNAME}"
  export CI_SERVER_TOKEN="$token"
  timeout 300 docker run --rm --env CI_SERVER_TOKEN --volume "${CONFIG}:/etc/gitlab-runner" \
    "$GITLAB_RUNNER_IMAGE" register "${registration[@]}" ||
    die "gitlab-runner register failed; its output is above"
  unset CI_SERVER_TOKEN
}

changed=0
digest="$(printf '%s\n' "$token" "${registration[@]}" | sha256sum | cut -d' ' -f1)"
if [[ -f "$CONFIG/config.toml" && -f "$MARKER" && "$(<"$MARKER")" == "$digest" ]]; then
  log "runner already registered with this token and these options"
else
  # config.toml holds only this product's runner: a new token starts it over (the old runner is gone).
  rm -f "$CONFIG/config.toml" "$MARKER"
  register
  printf '%s\n' "$digest" >"$MARKER"
  changed=1
fi

unit="${HOST_ROOT}/etc/systemd/system/gitlab-runner.service"
env_file="${HOST_ROOT}/etc/gitops/gitlab-runner.env"
new_env="GITLAB_RUNNER_IMAGE=${GITLAB_RUNNER_IMAGE}"
if [[ ! -f "$env_file" || "$(<"$env_file")" != "$new_env" ]]; then
  install -d -m 0755 "$(dirname "$env_file")"
  printf '%s\n' "$new_env" >"$env_file"
  changed=1
fi
new_unit="$(
  cat <<'UNIT'
[Unit]
Description=GitLab Runner in Docker (registered by Pulumi; configuration: /etc/gitlab-runner/config.toml)
Documentation=https://docs.gitlab.com/runner/install/docker/
Requires=docker.service
After=docker.service network-online.target gitlab.service
Wants=network-online.target

[Service]
EnvironmentFile=/etc/gitops/gitlab-runner.env
ExecStartPre=-/usr/bin/docker rm --force gitlab-runner
# The docker executor starts job containers through the host's Docker socket.
ExecStart=/usr/bin/docker run --rm --name gitlab-runner \
  --volume /etc/gitlab-runner:/etc/gitlab-runner \
  --volume /var/run/docker.sock:/var/run/docker.sock \
  ${GITLAB_RUNNER_IMAGE}
ExecStop=/usr/bin/docker stop --time 60 gitlab-runner
Restart=always
RestartSec=10

[Install]
WantedBy=multi-user.target
UNIT
)"
if [[ ! -f "$unit" || "$(<"$unit")" != "$new_unit" ]]; then
  install -d -m 0755 "$(dirname "$unit")"
  printf '%s\n' "$new_unit" >"$unit"
  changed=1
fi

systemctl daemon-reload
systemctl enable --quiet gitlab-runner.service
if ((changed)) || ! systemctl is-active --quiet gitlab-runner.service; then
  log "starting the runner (${GITLAB_RUNNER_IMAGE})"
  systemctl restart gitlab-runner.service
fi

runner_running() {
  [[ "$(docker inspect --format '{{.State.Running}}' gitlab-runner 2>/dev/null)" == true ]]
}
wait_until 180 "the gitlab-runner container (journalctl -u gitlab-runner)" runner_running
log "runner ${GITLAB_RUNNER_NAME} is running: docker executor, privileged, default image ${RUNNER_JOB_IMAGE}, ${RUNNER_FEATURE_FLAGS}"
