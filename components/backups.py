"""Backups: the stack's bucket, what each host may write into it, and the timers that fill it.

In the order of a `pulumi up` (README "Backups and restore"):

1. The bucket (``<project>-<stack>-backups-…``): private (ownership enforced, every public-access block
   on), encrypted (SSE-S3), versioned, TLS only, lifecycle retention per prefix from config
   (components/backup_layout.py). The bucket and its settings are protected: `pulumi destroy` and
   `make destroy` keep them (a kept bucket keeps its public-access block, versioning and retention).
   __main__.py registers them whether `backups` is on or off, so turning backups off never deletes a
   protected resource; only steps 2 and 3 follow `backups`.
2. The GitLab host (``gitlab_before_install``, GitLabHost's hook before its install step): its role
   may put and get under ``gitlab/`` and list that prefix, nothing else; the step installs the AWS CLI,
   the daily backup timer (gitlab-backup + configuration) and /etc/gitops/hooks/pre-gitlab-upgrade,
   which install.sh runs before every upgrade hop and which fails the upgrade if the backup fails.
   A Data Lifecycle Manager policy snapshots the data volume daily (crash-consistent fallback).
3. The control plane (``etcd_pre_upgrade``, KubeadmCluster's hook before a Kubernetes upgrade): the
   control-plane role may put and get under ``etcd/``; every control-plane node gets the snapshot
   timer (each uploads under its own name: no leader election, a node whose timer fails does not
   leave the cluster without snapshots); the first `pulumi up` takes one snapshot through the whole
   chain; a change of Kubernetes version takes a ``pre-upgrade`` snapshot before kubeadm runs (on
   the first node: one member's snapshot holds the whole replicated keyspace). Further
   control-plane nodes (controlPlaneCount 3) share the role and get their timer once they have
   joined (``etcd_member_joined``, KubeadmCluster's member hook).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_command as command

from components import backup_layout as layout
from components.cluster_lifecycle import MemberContext, UpgradeContext
from components.cluster_nodes import Node
from components.config import StackConfig
from components.hosts import SshAccess
from components.remote import remote_step, step_script

LIB = "/usr/local/lib/gitops"
# The backup programs' own library (after userdata/lib/common.sh): their S3 calls.
BACKUP_LIBS = ("backup/s3.sh",)


def backup_program(script: str) -> str:
    """A backup program as installed on a host and as run by a step: common.sh, BACKUP_LIBS, the script."""
    return step_script(script, BACKUP_LIBS)


GITLAB_UNIT = "gitops-gitlab-backup"
ETCD_UNIT = "gitops-etcd-backup"
GITLAB_ENV = "/etc/gitops/gitlab-backup.env"
ETCD_ENV = "/etc/gitops/etcd-backup.env"
# userdata/gitlab/install.sh runs it before stopping GitLab for each upgrade hop.
GITLAB_UPGRADE_HOOK = "/etc/gitops/hooks/pre-gitlab-upgrade"
# The managed policy AWS keeps for DLM's snapshot role (ebs/latest/userguide/service-role.html).
DLM_MANAGED_POLICY = "iam::aws:policy/service-role/AWSDataLifecycleManagerServiceRole"


# Bucket names S3 refuses whatever follows (S3 User Guide, "General purpose bucket naming rules").
RESERVED_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")


def bucket_prefix(project: str, stack: str) -> str:
    """``<project>-<stack>-backups-`` in S3's bucket-name alphabet, within bucket_prefix's 37 characters
    (the provider appends 26 digits: terraform's id.PrefixedUniqueId). A name S3 reserves, or one with
    no letter or digit left, starts with "gitops-" instead (no stack ever got such a bucket)."""
    text = re.sub(r"[^a-z0-9-]+", "-", f"{project}-{stack}".lower()).strip("-")
    if not text or text.startswith(RESERVED_BUCKET_PREFIXES):
        text = f"gitops-{text}".rstrip("-")
    return f"{text[:28].rstrip('-')}-backups-"


def retention(config: StackConfig) -> layout.Retention:
    return layout.Retention(
        gitlab_days=config.gitlab_backup_retention_days,
        etcd_frequent_days=config.etcd_snapshot_retention_days,
        etcd_daily_days=config.etcd_daily_retention_days,
        pre_upgrade_days=config.pre_upgrade_backup_retention_days,
        noncurrent_days=config.backup_noncurrent_retention_days,
    )


def env_text(values: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in sorted(values.items()))


def gitlab_files(bucket: str, region: str, hour_utc: int) -> dict[str, dict[str, str]]:
    """What the GitLab host's setup step installs (install-timer.sh FILES_JSON)."""
    units = layout.systemd_units(
        GITLAB_UNIT,
        "Daily GitLab backup to the stack's bucket (gitlab-backup create + configuration)",
        f"{LIB}/gitlab-backup daily",
        {"OnCalendar": layout.gitlab_timer(hour_utc), "Persistent": "true", "RandomizedDelaySec": "10min"},
        timeout="6h",
    )
    return {
        f"{LIB}/gitlab-backup": {"mode": "0755", "content": backup_program("backup/gitlab-backup.sh")},
        f"{LIB}/gitlab-restore": {"mode": "0755", "content": backup_program("backup/gitlab-restore.sh")},
        GITLAB_UPGRADE_HOOK: {
            "mode": "0755",
            "content": f'#!/bin/sh\n# Installed by Pulumi (components/backups.py): a backup before each GitLab upgrade hop.\nexec {LIB}/gitlab-backup pre-upgrade "$@"\n',
        },
        GITLAB_ENV: {"mode": "0644", "content": env_text({"BACKUP_BUCKET": bucket, "AWS_DEFAULT_REGION": region})},
        **{f"/etc/systemd/system/{unit}": {"mode": "0644", "content": text} for unit, text in units.items()},
    }


def etcd_files(bucket: str, region: str, node_name: str, interval_minutes: int) -> dict[str, dict[str, str]]:
    """What a control-plane node's setup step installs (install-timer.sh FILES_JSON)."""
    units = layout.systemd_units(
        ETCD_UNIT,
        "etcd snapshot to the stack's bucket",
        f"{LIB}/etcd-backup frequent",
        {"OnBootSec": "15min", "OnUnitActiveSec": f"{interval_minutes}min", "RandomizedDelaySec": "2min"},
        timeout="30min",
    )
    values = {"BACKUP_BUCKET": bucket, "AWS_DEFAULT_REGION": region, "NODE_NAME": node_name}
    return {
        f"{LIB}/etcd-backup": {"mode": "0755", "content": backup_program("backup/etcd-snapshot.sh")},
        f"{LIB}/etcd-restore": {"mode": "0755", "content": backup_program("backup/etcd-restore.sh")},
        ETCD_ENV: {"mode": "0644", "content": env_text(values)},
        **{f"/etc/systemd/system/{unit}": {"mode": "0644", "content": text} for unit, text in units.items()},
    }


@dataclass(frozen=True)
class GitLabBackupTarget:
    """What GitLabHost hands its before-install hook: its role, its address, its instance."""

    role_name: pulumi.Input[str]
    ssh_host: pulumi.Input[str]
    instance_id: pulumi.Input[str]
    ssh: SshAccess
    after: list[pulumi.Resource]  # what the setup step waits for (the host reachable over SSH)
    parent: pulumi.Resource


class Backups(pulumi.ComponentResource):
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    region: pulumi.Output[str]

    def __init__(self, name: str, config: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gitops:backups:Backups", name, None, opts)
        self._config = config
        self._name = name
        self._etcd_writer: aws.iam.RolePolicy | None = None  # the control-plane role's etcd/ policy
        self._etcd_role: pulumi.Input[str] | None = None  # that role's name, for members' setup steps
        # Kept by `pulumi destroy` and `make destroy`: the backups outlive the stack (README "Tear down").
        kept = pulumi.ResourceOptions(parent=self, protect=True)
        self.region = aws.get_region_output(opts=pulumi.InvokeOptions(parent=self)).region
        self._partition = aws.get_partition_output(opts=pulumi.InvokeOptions(parent=self)).partition

        bucket = aws.s3.Bucket(
            f"{name}-bucket",
            bucket_prefix=bucket_prefix(config.project, config.stack),
            tags=config.tags(f"{name}-bucket"),
            opts=kept,
        )
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        child = pulumi.ResourceOptions(parent=self, protect=True, depends_on=[bucket])
        ownership = aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket.id,
            # ACLs off: the bucket owner owns every object, whoever uploads it.
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child,
        )
        public_access = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="AES256"
                    ),
                    # A host may overwrite its own keys (a new version); with SSE-C it could make that
                    # version unreadable to the operator. Blocked (pulumi-aws 7.51 s3 _inputs.py
                    # blocked_encryption_types; S3 blocks it by default only for buckets made from March 2026).
                    blocked_encryption_types=["SSE-C"],
                )
            ],
            opts=child,
        )
        versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child,
        )
        # After versioning (the SDK's example): noncurrent-version rules apply to a versioned bucket.
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-retention",
            bucket=bucket.id,
            rules=layout.lifecycle_rules(retention(config)),  # type: ignore[arg-type]
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[versioning])),
        )
        aws.s3.BucketPolicy(
            f"{name}-policy",
            bucket=bucket.id,
            policy=pulumi.Output.all(bucket.bucket, self._partition).apply(
                lambda v: json.dumps(layout.bucket_policy(v[0], v[1]))
            ),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[public_access, ownership])),
        )
        self.register_outputs({"bucket_name": self.bucket_name, "region": self.region})

    # ---- hosts --------------------------------------------------------------------------------------
    def _host_policy(
        self, name: str, role: pulumi.Input[str], prefix: str, parent: pulumi.Resource
    ) -> aws.iam.RolePolicy:
        return aws.iam.RolePolicy(
            name,
            role=role,
            policy=pulumi.Output.all(self.bucket_name, self._partition).apply(
                lambda v: json.dumps(layout.host_policy(v[0], prefix, v[1]))
            ),
            opts=pulumi.ResourceOptions(parent=parent),
        )

    def _setup_step(
        self,
        name: str,
        *,
        host: pulumi.Input[str],
        ssh: SshAccess,
        unit: str,
        files: pulumi.Output[dict[str, dict[str, str]]],
        file_paths: Sequence[str],
        now: dict[str, str],
        role_name: pulumi.Input[str],
        check_prefix: str,
        instance_id: pulumi.Input[str],
        depends_on: list[pulumi.Resource],
        parent: pulumi.Resource,
    ) -> command.remote.Command:
        return remote_step(
            name,
            host=host,
            private_key=ssh.private_key_openssh,
            script="backup/install-timer.sh",
            env={
                "UNIT": unit,
                "FILES_JSON": files.apply(lambda f: json.dumps(f, sort_keys=True)),
                "BACKUP_BUCKET": self.bucket_name,
                "AWS_DEFAULT_REGION": self.region,
                # The setup waits until the host acts as this role and can list this prefix.
                "ROLE_NAME": role_name,
                "CHECK_PREFIX": check_prefix,
                **now,
            },
            delete_script="backup/remove-timer.sh",
            delete_env={"UNIT": unit, "FILE_PATHS": " ".join(sorted(file_paths)), "INSTANCE_ID": instance_id},
            # A new instance has none of the files (they live on its root volume).
            triggers=[instance_id],
            opts=pulumi.ResourceOptions(parent=parent, depends_on=depends_on),
        )

    def gitlab_before_install(self, target: GitLabBackupTarget) -> list[pulumi.Resource]:
        """GitLabHost's hook: the role's policy and the backup timer and upgrade hook, before install."""
        name, config = self._name, self._config
        policy = self._host_policy(f"{name}-gitlab-writer", target.role_name, layout.GITLAB_PREFIX, target.parent)
        files = pulumi.Output.all(self.bucket_name, self.region).apply(
            lambda v: gitlab_files(v[0], v[1], config.backup_hour_utc)
        )
        setup = self._setup_step(
            f"{name}-gitlab-timer",
            host=target.ssh_host,
            ssh=target.ssh,
            unit=GITLAB_UNIT,
            files=files,
            file_paths=list(gitlab_files("-", "-", 0)),
            now={"NOW": "check"},
            role_name=target.role_name,
            check_prefix=layout.GITLAB_PREFIX,
            instance_id=target.instance_id,
            depends_on=[policy, *target.after],
            parent=target.parent,
        )
        return [policy, setup]

    def gitlab_snapshots(self, data_volume_tag: dict[str, str]) -> aws.dlm.LifecyclePolicy:
        """Daily EBS snapshots of the volume carrying ``data_volume_tag`` (Data Lifecycle Manager)."""
        name, config = self._name, self._config
        role = aws.iam.Role(
            f"{name}-dlm-role",
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Principal": {"Service": "dlm.amazonaws.com"}, "Action": "sts:AssumeRole"}
                    ],
                }
            ),
            tags=config.tags(f"{name}-dlm-role"),
            opts=pulumi.ResourceOptions(parent=self),
        )
        attachment = aws.iam.RolePolicyAttachment(
            f"{name}-dlm-role-policy",
            role=role.name,
            policy_arn=self._partition.apply(lambda partition: f"arn:{partition}:{DLM_MANAGED_POLICY}"),
            opts=pulumi.ResourceOptions(parent=self),
        )
        hour = layout.dlm_hour(config.backup_hour_utc)
        return aws.dlm.LifecyclePolicy(
            f"{name}-gitlab-data-snapshots",
            description=layout.dlm_description(config.project, config.stack),
            execution_role_arn=role.arn,
            state="ENABLED",
            policy_details=aws.dlm.LifecyclePolicyPolicyDetailsArgs(
                resource_types=["VOLUME"],
                target_tags=data_volume_tag,
                schedules=[layout.dlm_schedule(hour, config.gitlab_snapshot_retention_days)],  # type: ignore[list-item]
            ),
            tags=config.tags(f"{name}-gitlab-data-snapshots"),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[attachment]),
        )

    def _etcd_timer(
        self,
        cluster_name: str,
        node: Node,
        ssh: SshAccess,
        role_name: pulumi.Input[str],
        depends_on: list[pulumi.Resource],
        parent: pulumi.Resource,
    ) -> command.remote.Command:
        config = self._config
        files = pulumi.Output.all(self.bucket_name, self.region).apply(
            lambda v: etcd_files(v[0], v[1], node.name, config.etcd_snapshot_interval_minutes)
        )
        return self._setup_step(
            f"{cluster_name}-{node.name}-etcd-backup",
            host=node.ssh_host,
            ssh=ssh,
            unit=ETCD_UNIT,
            files=files,
            file_paths=list(etcd_files("-", "-", "-", 60)),
            now={"NOW": "run", "PROGRAM": f"{LIB}/etcd-backup"},
            role_name=role_name,
            check_prefix=layout.ETCD_PREFIX,
            instance_id=node.instance.id,
            depends_on=depends_on,
            parent=parent,
        )

    def etcd_member_joined(self, context: MemberContext) -> list[pulumi.Resource]:
        """KubeadmCluster's member hook: a further control-plane node's own snapshot timer, once it runs
        an etcd member (its uploads go under etcd/<kind>/<its name>/, beside the first node's)."""
        if self._etcd_writer is None or self._etcd_role is None:
            raise RuntimeError("etcd_member_joined runs after etcd_pre_upgrade (the role's policy)")
        return [
            self._etcd_timer(
                context.cluster_name,
                context.node,
                context.ssh,
                self._etcd_role,
                [self._etcd_writer, *context.after],
                context.parent,
            )
        ]

    def etcd_pre_upgrade(self, context: UpgradeContext) -> list[pulumi.Resource]:
        """KubeadmCluster's pre-upgrade hook: snapshots on every control-plane node, one now and one
        before any change of Kubernetes version, all before the control plane's upgrade step."""
        return self.etcd_snapshots(context, [context.control_plane])

    def etcd_snapshots(self, context: UpgradeContext, control_planes: Sequence[Node]) -> list[pulumi.Resource]:
        name = self._name
        policy = self._host_policy(
            f"{name}-etcd-writer", context.control_plane_role, layout.ETCD_PREFIX, context.parent
        )
        self._etcd_writer = policy
        self._etcd_role = context.control_plane_role
        setups: list[pulumi.Resource] = [
            self._etcd_timer(
                context.cluster_name,
                node,
                context.ssh,
                context.control_plane_role,
                [policy, *context.after],
                context.parent,
            )
            for node in control_planes
        ]
        # Replaced (so run again) whenever the upgrade target changes: the snapshot precedes kubeadm.
        pre_upgrade = remote_step(
            f"{context.cluster_name}-{context.control_plane.name}-etcd-pre-upgrade-snapshot",
            host=context.control_plane.ssh_host,
            private_key=context.ssh.private_key_openssh,
            script="backup/etcd-snapshot.sh",
            libs=BACKUP_LIBS,
            env={"SNAPSHOT_KIND": "pre-upgrade"},
            triggers=[
                context.control_plane.instance.id,
                *(f"{key}={value}" for key, value in sorted(context.target.items())),
            ],
            opts=pulumi.ResourceOptions(parent=context.parent, depends_on=setups),
        )
        return [policy, *setups, pre_upgrade]
