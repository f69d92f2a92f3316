#!/usr/bin/env bash
# The real-cloud end-to-end lane for one delivery mode (pull or push), run by the e2e job of
# .gitlab-ci.yml; the e2e-cleanup job (cleanup.sh) destroys what it made, even when this fails.
#
#   1. an ephemeral stack e2e-<pipeline>-<mode>, with the source stack's settings (dev) and `delivery`
#   2. pulumi up with the policy pack, then `make doctor` until it passes (bounded)
#   3. the GitOps loop: commit a new "This app is working" sentence, wait for it on every app URL
#   4. idempotence: pulumi preview --expect-no-changes
#   5. day 2: workerCount + 1, up, doctor; then each E2E_DAY2_SETTINGS "key=value" (e.g. a pending
#      kubernetesVersion or gitlabImageTag upgrade), one up and doctor each; idempotence again
#
# Parameters (environment): see lib.sh, and E2E_DOCTOR_TIMEOUT_SECONDS (1800),
# E2E_LOOP_TIMEOUT_SECONDS (1800), E2E_POLL_SECONDS (30), E2E_DAY2_SETTINGS (""),
# E2E_SECRETS_PROVIDER (the new stack's --secrets-provider; default: the backend's).
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${HERE}/lib.sh"

STACK="$(e2e_stack_name)"
require_ephemeral "$STACK"
[[ "${E2E_DELIVERY:-}" == pull || "${E2E_DELIVERY:-}" == push ]] || die "E2E_DELIVERY must be pull or push"
SOURCE_STACK="${E2E_SOURCE_STACK:-dev}"
PYTHON="${PYTHON:-venv/bin/python}"
POLL="${E2E_POLL_SECONDS:-30}"
DOCTOR_TIMEOUT="${E2E_DOCTOR_TIMEOUT_SECONDS:-1800}"
LOOP_TIMEOUT="${E2E_LOOP_TIMEOUT_SECONDS:-1800}"
# The source stack's policy settings apply to its copy.
POLICY=(--policy-pack policy --policy-pack-config "policy/config.${SOURCE_STACK}.json")

up() {
  pulumi up --stack "$STACK" --yes --non-interactive "${POLICY[@]}"
}

# The cluster's certificates step re-runs on the first `up` of each UTC day (README "Certificates
# renew themselves"): a check that runs past midnight would see it though nothing drifted.
DAILY=(--exclude '**::gitops-k8s-master-certificates')

no_changes() {
  pulumi preview --stack "$STACK" --expect-no-changes --non-interactive "${POLICY[@]}" "${DAILY[@]}" ||
    die "a second run would change the stack (above): the program is not idempotent"
}

doctor() {
  "$PYTHON" -m tools.doctor --stack "$STACK"
}

# Right after `up` the first pipeline is still building the app and a new node is still joining:
# poll the doctor, bounded, and fail with its last report.
doctor_passes() {
  local attempts
  attempts="$(attempts_for "$DOCTOR_TIMEOUT" "$POLL")"
  with_attempts "$attempts" "$POLL" "doctor" doctor ||
    die "the doctor still reports failures after ${DOCTOR_TIMEOUT}s (last report above)"
}

step "stack ${STACK}"
if pulumi stack select "$STACK" --non-interactive 2>/dev/null; then
  log "stack ${STACK} exists (a retried job): reusing it"
else
  init=(pulumi stack init "$STACK" --copy-config-from "$SOURCE_STACK" --non-interactive)
  if [[ -n "${E2E_SECRETS_PROVIDER:-}" ]]; then
    init+=(--secrets-provider "$E2E_SECRETS_PROVIDER")
  fi
  "${init[@]}"
fi
pulumi config set delivery "$E2E_DELIVERY" --stack "$STACK" --non-interactive

step "up"
up

step "doctor"
doctor_passes

step "gitops loop"
"$PYTHON" -m tools.gitops_loop --stack "$STACK" --timeout "$LOOP_TIMEOUT" \
  --text "This app is working: e2e ${CI_PIPELINE_ID:-local} (${E2E_DELIVERY})"

step "idempotence"
no_changes

step "day 2: one more worker"
workers="$(pulumi config get workerCount --stack "$STACK" --non-interactive)"
[[ "$workers" =~ ^[0-9]+$ ]] || die "workerCount is '${workers}'"
pulumi config set workerCount "$((workers + 1))" --stack "$STACK" --non-interactive
up
doctor_passes

read -r -a day2 <<<"${E2E_DAY2_SETTINGS:-}"
for setting in "${day2[@]}"; do
  [[ "$setting" =~ ^[A-Za-z0-9:]+=.+$ ]] || die "E2E_DAY2_SETTINGS entry '${setting}' is not key=value"
  step "day 2: ${setting}"
  pulumi config set "${setting%%=*}" "${setting#*=}" --stack "$STACK" --non-interactive
  up
  doctor_passes
done

step "idempotence after day 2"
no_changes

step "done"
log "the lane passed for ${STACK}; the e2e-cleanup job destroys it"
