"""Backup policies: a stack that must be recoverable has its backups wired (README "Backups and restore").

`backups: false` is a valid configuration (a throwaway dev stack), so it is refused where the stack's
policy config says backups are required: prod (policy/config.prod.json).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pulumi_policy import Severity, StackValidationArgs

from .common import get, is_mapping, stack_policy

BUCKET = "aws:s3/bucket:Bucket"
VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"
DLM_POLICY = "aws:dlm/lifecyclePolicy:LifecyclePolicy"
VOLUME = "aws:ebs/volume:Volume"
REMOTE_COMMAND = "command:remote:Command"
ROOT_STACK = "pulumi:pulumi:Stack"
# The timers components/backups.py installs (userdata/backup/install-timer.sh UNIT=...).
TIMERS = {"gitops-gitlab-backup": "GitLab's daily backup", "gitops-etcd-backup": "the etcd snapshots"}


@stack_policy(
    name="backups-enabled",
    description="Where the stack's policy config requires backups (prod), the stack has a protected, versioned "
    "backup bucket, daily snapshots of the GitLab data volume, and the GitLab and etcd backup timers.",
    remediation="leave the `backups` config key at its default, true (`pulumi config rm backups`), and keep "
    'the Backups component wired in __main__.py (README "Backups and restore").',
    config={
        "required": {
            "type": "boolean",
            "default": False,
            "description": "Refuse a stack without backups (true in policy/config.prod.json).",
        }
    },
    severity=Severity.HIGH,
)
def backups_enabled(args: StackValidationArgs, config: Mapping[str, Any]) -> Iterator[tuple[str, str | None]]:
    if not config["required"]:
        return
    resources = list(args.resources)
    root = next((r.urn for r in resources if r.resource_type == ROOT_STACK), None)
    buckets = {r.name for r in resources if r.resource_type == BUCKET}
    protected = [r for r in resources if r.resource_type == BUCKET and r.opts.protect]
    versioned = [
        r
        for r in resources
        if r.resource_type == VERSIONING and get(r.props, "versioningConfiguration", "status") == "Enabled"
    ]
    if not buckets or not versioned:
        yield ("no versioned backup bucket (aws.s3.Bucket with BucketVersioning Enabled): is `backups` false?", root)
    elif not protected:
        yield (
            f"the backup bucket {', '.join(sorted(buckets))} is not protected: `pulumi destroy` would delete it.",
            root,
        )
    targets = [
        dict(get(r.props, "policyDetails", "targetTags", default={}) or {})
        for r in resources
        if r.resource_type == DLM_POLICY and get(r.props, "state", default="ENABLED") == "ENABLED"
    ]
    for volume in (r for r in resources if r.resource_type == VOLUME):
        tags = get(volume.props, "tags", default={})
        tags = dict(tags) if is_mapping(tags) else {}
        if not any(target and all(tags.get(k) == v for k, v in target.items()) for target in targets):
            yield (
                f"the data volume {volume.name} has no enabled snapshot policy (DLM) targeting its tags: "
                "is `backups` false?",
                volume.urn,
            )
    creates = [str(get(r.props, "create", default="")) for r in resources if r.resource_type == REMOTE_COMMAND]
    for unit, what in TIMERS.items():
        if not any("STEP_NAME=backup/install-timer.sh" in create and f"UNIT={unit}" in create for create in creates):
            yield (f"no step installs {what} ({unit}.timer): is `backups` false?", root)


STACK_POLICIES = [backups_enabled]
