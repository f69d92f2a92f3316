#!/usr/bin/env bash
# Step (GitLab host or control-plane node, over SSH): install a backup program and the systemd timer
# that runs it, then prove the host can reach the bucket. Idempotent: files are rewritten only when
# they differ; the timer is (re)enabled; a changed unit is picked up by daemon-reload.
# The AWS CLI comes from Debian 12's own `awscli` package (aws-cli 2.9.19, signed by Debian's archive
# keys like every other package on the host); the hosts' credentials are their instance profile (IMDSv2).
# Then it waits until the host's credentials are its role's (ROLE_NAME): an instance moved to a new
# instance profile in place keeps serving the old role's credentials from its metadata service for a
# while, and a role policy made moments ago takes a few seconds to apply (IAM is eventually
# consistent); and lists the host's prefix of the bucket (proves credentials, bucket and policy).
# Then, NOW=run: run the program once and print what it printed (an etcd snapshot: the first `pulumi
# up` proves snapshot, restore check and upload work); NOW=check: nothing more (no GitLab backup on
# every change).
# Parameters: UNIT (e.g. gitops-etcd-backup), FILES_JSON ({path: {"mode": "0755", "content": "..."}}:
#   programs, units, env file, hook; components/backups.py), NOW (run | check), PROGRAM (NOW=run), BACKUP_BUCKET,
#   CHECK_PREFIX, ROLE_NAME (the instance profile's role), AWS_DEFAULT_REGION; ROLE_WAIT_SECONDS (default
#   900). FS_ROOT: tests only.
# Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail
require_env UNIT FILES_JSON NOW BACKUP_BUCKET AWS_DEFAULT_REGION CHECK_PREFIX ROLE_NAME
[[ "$NOW" == run || "$NOW" == check ]] || die "NOW must be run or check, not ${NOW}"
export AWS_DEFAULT_REGION
ROOT="${FS_ROOT:-}"

wait_for_cloud_init
if ! command -v aws >/dev/null; then
  log "installing the AWS CLI (Debian's awscli package)"
  retry 3 apt-get -o DPkg::Lock::Timeout=300 update -qq
  retry 3 env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends awscli >&2
fi
aws_version="$(aws --version 2>&1)"
[[ "$aws_version" == aws-cli/2.* ]] || die "expected Debian's AWS CLI v2 (aws-cli/2.x), found: ${aws_version}"

changed="$(ROOT="$ROOT" python3 -c '
import json, os, pathlib, sys
root = os.environ["ROOT"]
changed = []
for path, spec in sorted(json.loads(os.environ["FILES_JSON"]).items()):
    target = pathlib.Path(root + path)
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = int(spec["mode"], 8)
    if not target.exists() or target.read_text() != spec["content"]:
        temporary = target.with_name(target.name + ".new")
        temporary.write_text(spec["content"])
        temporary.chmod(mode)
        temporary.replace(target)
        changed.append(path)
    target.chmod(mode)
print(" ".join(changed))
')"
[[ -z "$changed" ]] || log "wrote ${changed}"
systemctl daemon-reload
systemctl enable --now "${UNIT}.timer" >&2
log "timer ${UNIT}.timer enabled: $(systemctl show "${UNIT}.timer" --property=TimersCalendar,TimersMonotonic --value 2>/dev/null | tr '\n' ' ')"

# sts:GetCallerIdentity needs no permission; an instance role's ARN is
# arn:<partition>:sts::<account>:assumed-role/<role name>/<instance id> (IAM User Guide, "IAM identifiers").
log "waiting until this host's credentials are role ${ROLE_NAME}'s"
deadline=$((SECONDS + ${ROLE_WAIT_SECONDS:-900}))
arn=""
until [[ "$arn" == *":assumed-role/${ROLE_NAME}/"* ]]; do
  ((SECONDS < deadline)) || die "after ${ROLE_WAIT_SECONDS:-900} s this host still acts as '${arn:-nothing}'," \
    "not role ${ROLE_NAME} (its instance profile's); backups would fail. Check the instance profile" \
    "(aws ec2 describe-iam-instance-profile-associations) and run pulumi up again"
  arn="$(aws sts get-caller-identity --query Arn --output text 2>/dev/null || true)"
  [[ "$arn" == *":assumed-role/${ROLE_NAME}/"* ]] || sleep 10
done
listed=0
for attempt in 1 2 3 4 5 6; do
  if aws s3api list-objects-v2 --bucket "$BACKUP_BUCKET" --prefix "$CHECK_PREFIX" --max-items 1 >/dev/null; then
    listed=1
    break
  fi
  ((attempt == 6)) || sleep 10
done
((listed)) || die "this host cannot list s3://${BACKUP_BUCKET}/${CHECK_PREFIX} with its instance profile: backups would fail"
log "s3://${BACKUP_BUCKET}/${CHECK_PREFIX} is reachable with role ${ROLE_NAME}"

case "$NOW" in
  run)
    require_env PROGRAM
    log "running ${PROGRAM} once now"
    "${ROOT}${PROGRAM}"
    ;;
  check) ;;
  *) die "NOW must be run or check, not ${NOW}" ;;
esac
