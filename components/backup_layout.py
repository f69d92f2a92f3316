"""Where backups go in the stack's bucket, how long they stay, and who may write them: plain data.

Pure functions over plain values (no Pulumi): components/backups.py feeds them Outputs, the tests
read them directly, and tools/doctor.py reads the same prefixes to find the last backups.

Layout of the bucket. Every backup is a *set*: a "directory" of files and, written last, a
``SHA256SUMS`` file in `sha256sum -c` format. A set without ``SHA256SUMS`` is an upload that did
not finish; the restore scripts refuse it, the doctor does not count it.

    gitlab/daily/<backup id>/            the daily `gitlab-backup create` (GitLab host's timer)
    gitlab/pre-upgrade/<backup id>/      the one taken before each GitLab upgrade hop
    etcd/frequent/<node>/<UTC stamp>/    every etcdSnapshotIntervalMinutes, from every control-plane node
    etcd/daily/<node>/<UTC stamp>/       the first snapshot of each UTC day, uploaded a second time
    etcd/pre-upgrade/<node>/<UTC stamp>/ the one taken before a Kubernetes upgrade

Retention is S3 lifecycle, per prefix: the bucket is versioned, so an expiration only turns the
current version into a noncurrent one (S3 User Guide, lifecycle-expire-general-considerations), and
each rule also expires noncurrent versions after ``noncurrent_days``. A set is gone for good
``days + noncurrent_days`` after it was written. Hosts never delete.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

GITLAB_PREFIX = "gitlab/"
ETCD_PREFIX = "etcd/"
GITLAB_DAILY = "gitlab/daily/"
GITLAB_PRE_UPGRADE = "gitlab/pre-upgrade/"
ETCD_FREQUENT = "etcd/frequent/"
ETCD_DAILY = "etcd/daily/"
ETCD_PRE_UPGRADE = "etcd/pre-upgrade/"
SET_MARKER = "SHA256SUMS"  # written last: a set is complete when it has one
# S3 parts of an upload the CLI could not complete (a host has no AbortMultipartUpload): freed after
# this many days. Longer than any upload (a GitLab archive goes up in minutes to hours).
ABORT_INCOMPLETE_UPLOAD_DAYS = 2
# The tag the Data Lifecycle Manager policy selects the GitLab data volume by: unique per stack, as
# DLM targets every volume of the region carrying any of the policy's target tags.
DLM_TAG_KEY = "GitopsBackup"


@dataclass(frozen=True)
class Retention:
    """How long each kind of backup is kept, in days (config keys of the same meaning)."""

    gitlab_days: int  # gitlabBackupRetentionDays
    etcd_frequent_days: int  # etcdSnapshotRetentionDays
    etcd_daily_days: int  # etcdDailyRetentionDays
    pre_upgrade_days: int  # preUpgradeBackupRetentionDays
    noncurrent_days: int  # backupNoncurrentRetentionDays


def dlm_target_tag(project: str, stack: str) -> dict[str, str]:
    """The tag the GitLab data volume carries and the stack's DLM policy targets."""
    return {DLM_TAG_KEY: f"{project}-{stack}-gitlab-data"}


def lifecycle_rules(retention: Retention) -> list[dict[str, Any]]:
    """The bucket's lifecycle rules (BucketLifecycleConfiguration ``rules``, SDK field names)."""
    by_prefix = (
        ("gitlab-daily", GITLAB_DAILY, retention.gitlab_days),
        ("gitlab-pre-upgrade", GITLAB_PRE_UPGRADE, retention.pre_upgrade_days),
        ("etcd-frequent", ETCD_FREQUENT, retention.etcd_frequent_days),
        ("etcd-daily", ETCD_DAILY, retention.etcd_daily_days),
        ("etcd-pre-upgrade", ETCD_PRE_UPGRADE, retention.pre_upgrade_days),
    )
    rules: list[dict[str, Any]] = [
        {
            "id": rule_id,
            "status": "Enabled",
            "filter": {"prefix": prefix},
            "expiration": {"days": days},
            "noncurrent_version_expiration": {"noncurrent_days": retention.noncurrent_days},
        }
        for rule_id, prefix, days in by_prefix
    ]
    # Whole bucket: parts of uploads that never completed, and the delete markers expiration leaves
    # behind once their noncurrent versions are gone (Days and ExpiredObjectDeleteMarker cannot
    # share a rule).
    rules.append(
        {
            "id": "whole-bucket-cleanup",
            "status": "Enabled",
            "filter": {},
            "abort_incomplete_multipart_upload": {"days_after_initiation": ABORT_INCOMPLETE_UPLOAD_DAYS},
            "expiration": {"expired_object_delete_marker": True},
        }
    )
    return rules


def host_policy(bucket: str, prefix: str, partition: str = "aws") -> dict[str, Any]:
    """What a host's role may do in the bucket: exactly what its backup and restore scripts call.

    * ``s3:PutObject`` on its own prefix: `aws s3 cp` (single PUT, and the multipart calls
      CreateMultipartUpload, UploadPart and CompleteMultipartUpload, which S3 authorises as
      PutObject: S3 User Guide "Multipart upload and permissions").
    * ``s3:GetObject`` on its own prefix: the restore scripts download a set on the host (and
      head-object, which S3 authorises as GetObject). A host holds everything its backups hold.
    * ``s3:ListBucket`` on the bucket, only for keys under its prefix (``s3:prefix`` condition: the
      IAM home-folder example): the restore scripts and the setup check list sets.
    No delete of any kind, no ACL, retention, lifecycle or policy action: a host cannot remove or
    shorten history; an overwrite of a key makes a new version and keeps the old one for
    ``noncurrent_days`` (the bucket is versioned).
    """
    bucket_arn = f"arn:{partition}:s3:::{bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "WriteAndReadOwnBackups",
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:GetObject"],
                "Resource": f"{bucket_arn}/{prefix}*",
            },
            {
                "Sid": "ListOwnBackups",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": bucket_arn,
                "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}},
            },
        ],
    }


def bucket_policy(bucket: str, partition: str = "aws") -> dict[str, Any]:
    """The bucket's own policy: TLS only (aws:SecureTransport), for every principal and action."""
    bucket_arn = f"arn:{partition}:s3:::{bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def dlm_text(text: str, limit: int) -> str:
    """``text`` in the alphabet DLM accepts for a policy description (max 500) and a schedule name
    (max 120): ``[0-9A-Za-z _-]``, the API model's PolicyDescription and ScheduleName patterns (botocore
    dlm/2018-01-12 service-2.json), enforced by AWS; the provider checks the description already at
    `pulumi preview` (terraform-provider-aws internal/service/dlm/lifecycle_policy.go
    `^[0-9A-Za-z _-]+$`). Anything else becomes "-" (a stack name may hold "."), cut to ``limit``."""
    return re.sub(r"[^0-9A-Za-z _-]", "-", text)[:limit]


def dlm_description(project: str, stack: str) -> str:
    return dlm_text(f"{project}-{stack} daily snapshots of the GitLab data volume", 500)


DLM_SCHEDULE_NAME = "daily"


def dlm_schedule(hour_utc: int, retain_days: int) -> dict[str, Any]:
    """One daily DLM schedule: the snapshot starts within the hour after ``hour_utc``:00 UTC.

    DLM ``times`` is UTC "hh:mm" and the run happens "within a one-hour window following the
    specified time"; interval 24 HOURS; retention by age (DAYS). Volume tags are copied to the
    snapshots, so they carry the stack's tags (dlm/2018-01-12 CreateRule, RetainRule).
    """
    return {
        # Fixed: DLM stops managing (so never deletes) the snapshots of a renamed schedule (EBS user
        # guide, "Modify lifecycle policies"), so the hour and retention never go into the name.
        "name": DLM_SCHEDULE_NAME,
        "create_rule": {"interval": 24, "interval_unit": "HOURS", "times": f"{hour_utc:02d}:00"},
        "retain_rule": {"interval": retain_days, "interval_unit": "DAYS"},
        "copy_tags": True,
    }


def dlm_hour(backup_hour_utc: int) -> int:
    """DLM snapshots two hours after the GitLab backup starts: by then the archive has usually been
    uploaded and deleted, so a snapshot rarely catches a half-written one (either way it is only
    crash-consistent: README "Backups and restore")."""
    return (backup_hour_utc + 2) % 24


def gitlab_timer(hour_utc: int) -> str:
    """systemd OnCalendar of the daily GitLab backup (UTC, as DLM's schedule)."""
    return f"*-*-* {hour_utc:02d}:00:00 UTC"


def systemd_units(unit: str, description: str, program: str, schedule: dict[str, str], timeout: str) -> dict[str, str]:
    """A oneshot service running ``program`` and the timer that starts it (``schedule``: [Timer] keys).

    Persistent timers (OnCalendar) catch up a run missed while the host was off; monotonic ones
    (OnUnitActiveSec) restart counting at boot (OnBootSec). Low CPU and I/O priority for what runs
    on the host (checksums, archives, the upload): a backup must not starve GitLab or etcd. What a
    script starts inside a container (`docker exec`, `crictl exec`) runs in that container's cgroup,
    not as a child of the unit, so gitlab-backup.sh lowers the GitLab backup's priority there itself.
    """
    service = "\n".join(
        [
            "[Unit]",
            f"Description={description}",
            "After=network-online.target",
            "Wants=network-online.target",
            "",
            "[Service]",
            "Type=oneshot",
            f"Environment=STEP_NAME={unit}",
            f"ExecStart={program}",
            "Nice=10",
            "IOSchedulingClass=best-effort",
            "IOSchedulingPriority=7",
            f"TimeoutStartSec={timeout}",
            "",
        ]
    )
    timer = "\n".join(
        [
            "[Unit]",
            f"Description={description} (schedule)",
            "",
            "[Timer]",
            *(f"{key}={value}" for key, value in schedule.items()),
            "",
            "[Install]",
            "WantedBy=timers.target",
            "",
        ]
    )
    return {f"{unit}.service": service, f"{unit}.timer": timer}
