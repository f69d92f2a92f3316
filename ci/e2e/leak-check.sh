#!/usr/bin/env bash
# After the destroy: no AWS resource tagged with this stack may remain. Every resource the program
# creates carries the tags Project=<project>, Stack=<stack>, ManagedBy=pulumi (components/config.py).
#
# The Resource Groups Tagging API lists "tagged or previously tagged" resources and keeps deleted
# ones for a while (terminated instances for about an hour: boto/boto3#1704, aws/aws-cli#4173), so
# each listed resource is checked with its own service before it counts as left over, and the
# listing is polled (bounded) while deletions settle. EBS snapshots outlive their stack on purpose
# (backups); this stack is a test, so its snapshots are deleted here and reported.
#
# Parameters (environment): see lib.sh, and E2E_PROJECT (default: `name` in Pulumi.yaml),
# AWS_REGION, E2E_LEAK_TIMEOUT_SECONDS (900), E2E_POLL_SECONDS (30).
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${HERE}/lib.sh"

STACK="$(e2e_stack_name)"
require_ephemeral "$STACK"
PROJECT="${E2E_PROJECT:-$(sed -n 's/^name:[[:space:]]*//p' Pulumi.yaml)}"
[[ -n "$PROJECT" ]] || die "no project name (E2E_PROJECT, or name: in Pulumi.yaml)"
REGION="${AWS_REGION:?AWS_REGION must be the stack region}"
POLL="${E2E_POLL_SECONDS:-30}"
TIMEOUT="${E2E_LEAK_TIMEOUT_SECONDS:-900}"
leftovers=()

tagged() { # every ARN tagged with this project and stack, one per line
  aws resourcegroupstaggingapi get-resources --region "$REGION" \
    --tag-filters "Key=Project,Values=${PROJECT}" "Key=Stack,Values=${STACK}" "Key=ManagedBy,Values=pulumi" \
    --query 'ResourceTagMappingList[].ResourceARN' --output text | tr '\t' '\n' | sed '/^$/d; /^None$/d'
}

# probe COMMAND...: 0 when the resource exists, 1 when the service says it does not. An error other
# than "not found" counts as existing: a leak check must not pass on a permission error.
probe() {
  local output
  if output="$("$@" 2>&1)"; then
    [[ -n "$output" && "$output" != 0 && "$output" != terminated && "$output" != None ]]
    return
  fi
  if [[ "$output" == *NotFound* || "$output" == *NoSuchEntity* ]]; then
    return 1
  fi
  log "could not check ($*): ${output}"
  return 0
}

exists() { # exists ARN
  local arn="$1" service resource type id
  service="$(cut -d: -f3 <<<"$arn")"
  resource="$(cut -d: -f6- <<<"$arn")"
  type="${resource%%/*}"
  id="${resource##*/}"
  case "${service}:${type}" in
    ec2:instance)
      probe aws ec2 describe-instances --region "$REGION" --instance-ids "$id" \
        --query 'Reservations[].Instances[].State.Name' --output text
      ;;
    ec2:*)
      probe aws ec2 describe-tags --region "$REGION" --filters "Name=resource-id,Values=${id}" \
        --query 'length(Tags)' --output text
      ;;
    iam:role) probe aws iam get-role --role-name "$id" --query 'Role.RoleName' --output text ;;
    iam:instance-profile)
      probe aws iam get-instance-profile --instance-profile-name "$id" \
        --query 'InstanceProfile.InstanceProfileName' --output text
      ;;
    *) return 0 ;; # a type this check cannot confirm: report it
  esac
}

sweep() { # one pass: 0 when nothing is left over
  local arn listing
  leftovers=()
  if ! listing="$(tagged)"; then
    leftovers=("(the tagging API could not be read: the error is above)")
    return 1
  fi
  while IFS= read -r arn; do
    [[ -n "$arn" ]] || continue
    case "$arn" in
      arn:*:ec2:*:snapshot/*)
        log "deleting ${arn##*/}: snapshots are retained on purpose, but this stack is a test"
        aws ec2 delete-snapshot --region "$REGION" --snapshot-id "${arn##*/}" ||
          leftovers+=("$arn")
        ;;
      *)
        if exists "$arn"; then
          leftovers+=("$arn")
        fi
        ;;
    esac
  done <<<"$listing"
  ((${#leftovers[@]} == 0))
}

log "resources tagged Project=${PROJECT} Stack=${STACK} in ${REGION}"
if with_attempts "$(attempts_for "$TIMEOUT" "$POLL")" "$POLL" "leak check" sweep; then
  log "no leftover: every tagged resource of ${STACK} is gone"
else
  log "LEAK: ${#leftovers[@]} resource(s) tagged Stack=${STACK} still exist after the destroy:"
  printf '  %s\n' "${leftovers[@]}" >&2
  die "delete them (EC2 console, or Resource Groups > Tag Editor with tag Stack=${STACK}) and find out why the destroy left them"
fi
