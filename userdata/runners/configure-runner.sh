#!/usr/bin/env bash
# Step (runner manager, over SSH): the docker-autoscaler runner's configuration, its AWS fleeting
# plugin, and a (re)start of gitlab-runner when anything it reads at start changed.
# stdin (secret): `<name> <base64>` lines (components/gitlab_config.py secret_bundle): runner_token
#   (the glrt- token of the gitlab.UserRunner) and fleeting_key (the private key the manager logs in
#   to job VMs with).
# env (public): RUNNER_CONFIG_TOML (config.toml rendered by components/runner_config.py, the token
#   written as @@RUNNER_TOKEN@@), GITLAB_HOSTNAME, GITLAB_CA_PEM, AWS_SHARED_CONFIG, and the paths the
#   rendered configuration names: RUNNER_CONFIG_FILE, RUNNER_CA_FILE, FLEETING_KEY_FILE, AWS_CONFIG_FILE,
#   FLEETING_PLUGIN_PATH. RUNNER_DRAIN_SECONDS bounds the wait for running jobs before a restart.
# FS_ROOT is empty on a host: the step's behaviour tests point it at a scratch directory.
#
# The token goes into config.toml inside this shell (a bash substitution: never an argument of a
# command), which is mode 0600 like the key. Autoscaler settings are read at start only
# (gitlab-runner docs/configuration/advanced-configuration.md), so a changed file restarts the
# runner. The stop is graceful (SIGQUIT: no new job, running ones finish, then it exits;
# docs/commands/_index.md "Signals") for at most RUNNER_DRAIN_SECONDS; systemd kills what is left. Without state storage a restarted manager removes the job
# VMs it finds (advanced-configuration.md, state_storage). Nothing changed: nothing is restarted.
# Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
chmod 0700 "$workdir"
while IFS=' ' read -r name value || [[ -n "${name:-}" ]]; do
  [[ -n "$name" ]] || continue
  [[ "$name" =~ ^[a-z_]+$ ]] || die "stdin entry ${name} is not a secret name"
  printf '%s' "$value" | base64 -d >"$workdir/$name" || die "stdin entry ${name} is not base64"
done
for name in runner_token fleeting_key; do
  [[ -s "$workdir/$name" ]] || die "stdin holds no ${name}"
done
token="$(<"$workdir/runner_token")"
[[ "$token" =~ ^glrt-[A-Za-z0-9_.-]+$ ]] || die "stdin's runner_token is not a runner authentication token (glrt-…)"

DRAIN_SECONDS="${RUNNER_DRAIN_SECONDS:-600}"
require_env RUNNER_CONFIG_TOML GITLAB_HOSTNAME GITLAB_CA_PEM AWS_SHARED_CONFIG RUNNER_CONFIG_FILE RUNNER_CA_FILE \
  FLEETING_KEY_FILE AWS_CONFIG_FILE FLEETING_PLUGIN_PATH
[[ "$DRAIN_SECONDS" =~ ^[1-9][0-9]*$ ]] || die "RUNNER_DRAIN_SECONDS ${DRAIN_SECONDS} is not a number of seconds"
[[ "$RUNNER_CONFIG_TOML" == *@@RUNNER_TOKEN@@* ]] ||
  die "RUNNER_CONFIG_TOML has no token placeholder: it must come from components/runner_config.py"
wait_for_cloud_init
command -v gitlab-runner >/dev/null || die "gitlab-runner is not installed: the install step runs first"

ROOT="${FS_ROOT:-}"
DROP_IN="${ROOT}/etc/systemd/system/gitlab-runner.service.d/gitops.conf"

changed=0
# put PATH MODE < content: write atomically when the content differs; changed=1 then. Called with a
# redirection, never at the end of a pipe (a subshell would lose `changed`).
put() {
  local path="$1" mode="$2" tmp
  [[ -d "$(dirname "$path")" ]] || install -d -m 0755 "$(dirname "$path")"
  tmp="$(mktemp "${path}.XXXXXX")"
  chmod "$mode" "$tmp"
  cat >"$tmp"
  if [[ -f "$path" ]] && cmp -s "$tmp" "$path"; then
    rm -f "$tmp"
    chmod "$mode" "$path"
    return 0
  fi
  mv -f "$tmp" "$path"
  log "wrote ${path#"$ROOT"}"
  changed=1
}

install -d -m 0700 "${ROOT}$(dirname "$RUNNER_CONFIG_FILE")"
install -d -m 0700 "${ROOT}$(dirname "$FLEETING_KEY_FILE")"
put "${ROOT}${RUNNER_CA_FILE}" 0644 <<<"${GITLAB_CA_PEM%$'\n'}"
put "${ROOT}${FLEETING_KEY_FILE}" 0600 <"$workdir/fleeting_key"
put "${ROOT}${AWS_CONFIG_FILE}" 0644 < <(printf '%s' "$AWS_SHARED_CONFIG")
put "${ROOT}${RUNNER_CONFIG_FILE}" 0600 < <(printf '%s' "${RUNNER_CONFIG_TOML//@@RUNNER_TOKEN@@/"$token"}")
# Where fleeting plugins live, and a graceful stop (gitlab-runner docs/commands/_index.md, "gitlab-runner
# stop doesn't shut down gracefully": KillSignal=SIGQUIT), bounded so a restart cannot wait forever.
put "$DROP_IN" 0644 <<UNIT
[Service]
# Written by Pulumi (userdata/runners/configure-runner.sh).
Environment=FLEETING_PLUGIN_PATH=${FLEETING_PLUGIN_PATH}
KillSignal=SIGQUIT
TimeoutStopSec=${DRAIN_SECONDS}
UNIT
systemctl daemon-reload

# The runner calls GitLab with the stack's CA, through GitLab's name (the private address in the VPC).
gitlab_reachable() {
  curl --fail --silent --output /dev/null --max-time 10 --cacert "${ROOT}${RUNNER_CA_FILE}" \
    "https://${GITLAB_HOSTNAME}/users/sign_in"
}
wait_until 600 "https://${GITLAB_HOSTNAME} to answer from the runner manager (DNS, TLS, port 443)" gitlab_reachable

# Downloads the pinned plugin from registry.gitlab.com once; an installed version is kept.
export FLEETING_PLUGIN_PATH
retry 3 timeout 600 gitlab-runner fleeting --config "$RUNNER_CONFIG_FILE" install
gitlab-runner fleeting --config "$RUNNER_CONFIG_FILE" list >&2 || die "the fleeting plugin is not installed"

systemctl enable --quiet gitlab-runner.service
if ((changed)) || ! systemctl is-active --quiet gitlab-runner.service; then
  log "(re)starting gitlab-runner: running jobs finish first (at most ${DRAIN_SECONDS}s), then it starts with this configuration"
  with_heartbeat "restarting gitlab-runner (journalctl -u gitlab-runner)" systemctl restart gitlab-runner.service
else
  log "configuration unchanged: gitlab-runner keeps running"
fi

runner_active() {
  systemctl is-active --quiet gitlab-runner.service
}
wait_until 120 "gitlab-runner to run (journalctl -u gitlab-runner)" runner_active
# Asks GitLab whether the token is valid (POST /api/v4/runners/verify); changes nothing.
retry 3 timeout 120 gitlab-runner verify --config "$RUNNER_CONFIG_FILE" >&2
log "runner manager configured: docker-autoscaler, plugin $(sed -n 's/^ *plugin = //p' "${ROOT}${RUNNER_CONFIG_FILE}")"
