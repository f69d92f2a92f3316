#!/usr/bin/env bash
# Destroys the lane's ephemeral stack and proves nothing is left, whatever state the lane left it
# in (the e2e-cleanup job runs it with `when: always`, and can be retried):
#
#   1. a stack that was never created: nothing to destroy (the leak check still runs)
#   2. `pulumi cancel`: a job killed during `up` leaves the stack locked
#   3. the GitLab provider's CA file, which a fresh checkout lacks (from the stack's output, else a
#      preview lets the program write it from state)
#   4. `pulumi state unprotect --all` on this stack only (the data volume, the control plane), and the
#      backup bucket emptied, every version (it is never force-destroyed: README "Backups and restore")
#   5. `pulumi destroy --continue-on-error`, twice at most (a second pass catches ordering errors)
#   6. the leak check (leak-check.sh), even when the destroy failed
#   7. `pulumi stack rm` once the destroy succeeded; otherwise the stack stays for a retry
#
# Parameters (environment): see lib.sh, and E2E_PROVIDER_CA_FILE (default
# build/gitlab-ca-<stack>.pem, components/gitlab_host.py ca_file_path).
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${HERE}/lib.sh"

STACK="$(e2e_stack_name)"
require_ephemeral "$STACK"
CA_FILE="${E2E_PROVIDER_CA_FILE:-build/gitlab-ca-${STACK}.pem}"
selected_ok=false
destroyed=false
status=0

provider_ca_file() {
  [[ -s "$CA_FILE" ]] && return 0
  mkdir -p "$(dirname "$CA_FILE")"
  if pulumi stack output gitlabCaPem --stack "$STACK" --non-interactive >"${CA_FILE}.tmp" 2>/dev/null &&
    [[ -s "${CA_FILE}.tmp" ]]; then
    mv "${CA_FILE}.tmp" "$CA_FILE"
    log "wrote ${CA_FILE} from the gitlabCaPem output"
    return 0
  fi
  rm -f "${CA_FILE}.tmp"
  log "no gitlabCaPem output (the first up did not finish): a preview writes ${CA_FILE} from state"
  pulumi preview --stack "$STACK" --non-interactive >/dev/null 2>&1 ||
    log "the preview failed; the destroy may fail on GitLab resources"
}

# Emptied again before each attempt: the hosts' backup timers run until the destroy removes them, so an
# upload may land after an earlier emptying (BucketNotEmpty on the bucket's delete).
destroy() {
  empty_backup_bucket || log "could not empty the backup bucket; the destroy may stop at it"
  pulumi destroy --stack "$STACK" --yes --non-interactive --continue-on-error
}

# Every object version and delete marker of the stack's backup bucket, 1,000 per DeleteObjects call:
# a bucket that still holds one stops the destroy (BucketNotEmpty).
empty_backup_bucket() {
  local bucket listing batch
  bucket="$(pulumi stack output backupBucket --stack "$STACK" --non-interactive 2>/dev/null)" || bucket=""
  if [[ -z "$bucket" ]]; then
    log "no backupBucket output: no backup bucket to empty"
    return 0
  fi
  while :; do
    listing="$(aws s3api list-object-versions --bucket "$bucket" --max-items 1000 --output json)" || return 1
    batch="$(python3 -c '
import json, sys
listing = json.loads(sys.stdin.read() or "{}")
found = (listing.get("Versions") or []) + (listing.get("DeleteMarkers") or [])
objects = [{"Key": item["Key"], "VersionId": item["VersionId"]} for item in found][:1000]
print(json.dumps({"Objects": objects, "Quiet": True}) if objects else "")' <<<"$listing")"
    [[ -n "$batch" ]] || break
    aws s3api delete-objects --bucket "$bucket" --delete "$batch" >/dev/null || return 1
  done
  log "emptied the backup bucket ${bucket}"
}

step "stack ${STACK}"
if ! selected="$(pulumi stack select "$STACK" --non-interactive 2>&1)"; then
  if [[ "$selected" == *"no stack named"* ]]; then
    log "stack ${STACK} does not exist: the lane stopped before creating it; nothing to destroy"
  else
    status=1
    log "cannot select ${STACK} (${selected}): is the backend reachable? The leak check still runs"
  fi
else
  selected_ok=true
  step "unlock"
  pulumi cancel --stack "$STACK" --yes --non-interactive 2>/dev/null || log "no update to cancel"

  step "destroy"
  provider_ca_file
  # Protection guards real stacks' data; this stack is a test, and only this stack is unprotected.
  pulumi state unprotect --all --stack "$STACK" --yes --non-interactive || log "unprotect failed; destroying anyway"
  if with_attempts 2 60 "pulumi destroy" destroy; then
    destroyed=true
  else
    status=1
    log "the destroy failed: the leak check below lists what is left"
  fi
fi

step "leak check"
bash "${HERE}/leak-check.sh" || status=1

step "stack rm"
if [[ "$destroyed" == true ]]; then
  pulumi stack rm "$STACK" --yes --non-interactive
elif [[ "$selected_ok" == true ]]; then
  log "stack ${STACK} kept: its state still lists resources. Retry this job, or run" \
    "\`pulumi destroy --stack ${STACK}\` from a checkout, then \`pulumi stack rm ${STACK}\`"
fi
((status == 0)) # the script's exit status
