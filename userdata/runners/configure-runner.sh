#!/usr/bin/env bash
# Step (runner manager, over SSH): the docker-autoscaler runner's configuration, its AWS fleeting
# plugin, and a (re)start of gitlab-runner unless it already runs what this step applies.
# stdin (secret): `<name> <base64>` lines (components/gitlab_config.py secret_bundle): runner_token
#   (the glrt- token of the gitlab.UserRunner) and fleeting_key (the private key the manager logs in
#   to job VMs with).
# env (public): RUNNER_CONFIG_TOML (config.toml rendered by components/runner_config.py, the token
#   written as @@RUNNER_TOKEN@@), FLEETING_PLUGIN (the plugin reference config.toml names),
#   GITLAB_HOSTNAME, GITLAB_CA_PEM, AWS_SHARED_CONFIG, and the paths the rendered configuration names:
#   RUNNER_CONFIG_FILE, RUNNER_CA_FILE, FLEETING_KEY_FILE, AWS_CONFIG_FILE, FLEETING_PLUGIN_PATH.
#   RUNNER_DRAIN_SECONDS bounds the wait for running jobs before a restart; GITLAB_WAIT_SECONDS the
#   wait for GitLab to answer.
# FS_ROOT is empty on a host: the step's behaviour tests point it at a scratch directory.
#
# The token goes into config.toml inside this shell (a bash substitution: never an argument of a
# command), which is mode 0600 like the key.
#
# Converges on a retry. What can fail for reasons outside the host (GitLab not answering yet, the
# plugin download) runs first, before any live file changes: the plugin is installed from a
# configuration of its own that names it only (`gitlab-runner fleeting install` reads nothing else:
# gitlab-runner commands/fleeting/fleeting.go getPlugins). Whether to restart is decided from disk,
# never from what this run happened to write: the digest of everything the service reads at start
# (config.toml, the CA, the key, the AWS config file, the systemd drop-in) is compared with the
# digest of what the last successful run applied (APPLIED_MARKER, written only after the restart and
# `gitlab-runner verify` succeeded). A run that failed after writing the files therefore restarts on
# the next try. Autoscaler settings are read at start only (gitlab-runner
# docs/configuration/advanced-configuration.md), and the service already runs before the first
# configuration (the package's post-install starts it: packaging/root/usr/share/gitlab-runner/post-install),
# so "running" never means "running this configuration".
#
# The stop is graceful (SIGQUIT: no new job, running ones finish, then it exits;
# docs/commands/_index.md "Signals") for at most RUNNER_DRAIN_SECONDS; systemd kills what is left.
# SIGQUIT goes to the runner alone (KillMode=mixed, systemd.kill(5)): the fleeting plugin it runs as a
# child keeps serving the deletion of job VMs while the runner drains, and the runner stops it
# itself. Without state storage a restarted manager removes the job VMs it finds
# (advanced-configuration.md, state_storage). Nothing changed since the last success: nothing is restarted.
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
GITLAB_WAIT_SECONDS="${GITLAB_WAIT_SECONDS:-600}"
require_env RUNNER_CONFIG_TOML FLEETING_PLUGIN GITLAB_HOSTNAME GITLAB_CA_PEM AWS_SHARED_CONFIG RUNNER_CONFIG_FILE \
  RUNNER_CA_FILE FLEETING_KEY_FILE AWS_CONFIG_FILE FLEETING_PLUGIN_PATH
[[ "$DRAIN_SECONDS" =~ ^[1-9][0-9]*$ ]] || die "RUNNER_DRAIN_SECONDS ${DRAIN_SECONDS} is not a number of seconds"
[[ "$GITLAB_WAIT_SECONDS" =~ ^[1-9][0-9]*$ ]] ||
  die "GITLAB_WAIT_SECONDS ${GITLAB_WAIT_SECONDS} is not a number of seconds"
[[ "$RUNNER_CONFIG_TOML" == *@@RUNNER_TOKEN@@* ]] ||
  die "RUNNER_CONFIG_TOML has no token placeholder: it must come from components/runner_config.py"
# An exact release (docs/fleet_scaling/fleeting.md: X.Y.Z pins it), and the one config.toml names.
[[ "$FLEETING_PLUGIN" =~ ^[a-z0-9][a-z0-9./-]*:[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
  die "FLEETING_PLUGIN ${FLEETING_PLUGIN} is not a pinned plugin reference such as aws:1.1.0"
grep -qxF "plugin = \"${FLEETING_PLUGIN}\"" <<<"$RUNNER_CONFIG_TOML" ||
  die "RUNNER_CONFIG_TOML does not name the plugin ${FLEETING_PLUGIN}"
wait_for_cloud_init
command -v gitlab-runner >/dev/null || die "gitlab-runner is not installed: the install step runs first"

ROOT="${FS_ROOT:-}"
DROP_IN="${ROOT}/etc/systemd/system/gitlab-runner.service.d/gitops.conf"
# The digest of what the service last started with and was verified on (see the header).
APPLIED_MARKER="${ROOT}/var/lib/gitops/gitlab-runner-applied.sha256"

# ---- 1. what can fail outside this host, before any live file changes --------------------------
# The runner calls GitLab with the stack's CA, through GitLab's name (the private address in the VPC).
printf '%s\n' "${GITLAB_CA_PEM%$'\n'}" >"$workdir/ca.crt"
gitlab_reachable() {
  curl --fail --silent --output /dev/null --max-time 10 --cacert "$workdir/ca.crt" \
    "https://${GITLAB_HOSTNAME}/users/sign_in"
}
wait_until "$GITLAB_WAIT_SECONDS" "https://${GITLAB_HOSTNAME} to answer from the runner manager (DNS, TLS, port 443)" \
  gitlab_reachable

# Downloads the pinned plugin from registry.gitlab.com once; an installed version is kept. A
# configuration that names the plugin alone: the live config.toml is not touched until it is there.
plugin_config="$workdir/fleeting-plugin.toml"
printf '[[runners]]\n  name = "fleeting-plugin-install"\n  executor = "docker-autoscaler"\n  [runners.autoscaler]\n    plugin = "%s"\n' \
  "$FLEETING_PLUGIN" >"$plugin_config"
export FLEETING_PLUGIN_PATH
retry 3 timeout 600 gitlab-runner fleeting --config "$plugin_config" install >&2
gitlab-runner fleeting --config "$plugin_config" list >&2 ||
  die "the fleeting plugin ${FLEETING_PLUGIN} is not installed in ${FLEETING_PLUGIN_PATH}"

# ---- 2. the live files ------------------------------------------------------------------------
# put PATH MODE < content: write atomically when the content differs.
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
}

install -d -m 0700 "${ROOT}$(dirname "$RUNNER_CONFIG_FILE")"
install -d -m 0700 "${ROOT}$(dirname "$FLEETING_KEY_FILE")"
put "${ROOT}${RUNNER_CA_FILE}" 0644 <"$workdir/ca.crt"
put "${ROOT}${FLEETING_KEY_FILE}" 0600 <"$workdir/fleeting_key"
put "${ROOT}${AWS_CONFIG_FILE}" 0644 < <(printf '%s' "$AWS_SHARED_CONFIG")
put "${ROOT}${RUNNER_CONFIG_FILE}" 0600 < <(printf '%s' "${RUNNER_CONFIG_TOML//@@RUNNER_TOKEN@@/"$token"}")
# Where fleeting plugins live, and a graceful stop (gitlab-runner docs/commands/_index.md, "gitlab-runner
# stop doesn't shut down gracefully": KillSignal=SIGQUIT) of the runner alone (KillMode=mixed: "the
# SIGTERM signal [KillSignal=] is sent to the main process while the subsequent SIGKILL signal is sent
# to all remaining processes", systemd.kill(5)), bounded so a restart cannot wait forever.
put "$DROP_IN" 0644 <<UNIT
[Service]
# Written by Pulumi (userdata/runners/configure-runner.sh).
Environment=FLEETING_PLUGIN_PATH=${FLEETING_PLUGIN_PATH}
KillSignal=SIGQUIT
KillMode=mixed
TimeoutStopSec=${DRAIN_SECONDS}
UNIT
systemctl daemon-reload

# ---- 3. the service runs what was written, or is restarted ------------------------------------
# Everything the service reads at start, by path and content.
wanted_digest() {
  local path
  for path in "$RUNNER_CONFIG_FILE" "$RUNNER_CA_FILE" "$FLEETING_KEY_FILE" "$AWS_CONFIG_FILE" "${DROP_IN#"$ROOT"}"; do
    printf '%s %s\n' "$path" "$(sha256sum <"${ROOT}${path}" | cut -d ' ' -f 1)"
  done | sha256sum | cut -d ' ' -f 1
}
wanted="$(wanted_digest)"
applied="$(cat "$APPLIED_MARKER" 2>/dev/null || true)"
runner_active() {
  systemctl is-active --quiet gitlab-runner.service
}

systemctl enable --quiet gitlab-runner.service
reason=""
if [[ "$wanted" != "$applied" ]]; then
  reason="its configuration differs from the one last applied"
elif ! runner_active; then
  reason="it is not running"
fi
if [[ -n "$reason" ]]; then
  log "(re)starting gitlab-runner (${reason}): running jobs finish first (at most ${DRAIN_SECONDS}s), then it starts with this configuration"
  with_heartbeat "restarting gitlab-runner (journalctl -u gitlab-runner)" systemctl restart gitlab-runner.service
else
  log "configuration unchanged since the last successful run: gitlab-runner keeps running"
fi
wait_until 120 "gitlab-runner to run (journalctl -u gitlab-runner)" runner_active
# Asks GitLab whether the token is valid (POST /api/v4/runners/verify); changes nothing. It fails only
# on GitLab's 403 (gitlab-runner network/gitlab.go VerifyRunner): a 5xx or a transport error passes.
retry 3 timeout 120 gitlab-runner verify --config "$RUNNER_CONFIG_FILE" >&2
# Only now: the service started with these files, and GitLab did not refuse its token.
put "$APPLIED_MARKER" 0600 <<<"$wanted"
log "runner manager configured: docker-autoscaler, plugin ${FLEETING_PLUGIN}"
