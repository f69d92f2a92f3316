"""Backup policy: prod refuses a stack without its bucket, snapshots and timers; dev may turn them off."""

from __future__ import annotations

from typing import Any

from policy.tests import resources as r
from policy.tests.cases import Case
from tools.harness import run_fixture_stack
from tools.policy_runner import Resource, analyze_program, stack_config_file

REQUIRED = {"backups-enabled": {"required": True}}
DATA_TAGS = {**r.tags("gitlab-data"), "GitopsBackup": "gitops-dev-gitlab-data"}


def bucket(protect: bool = True) -> Resource:
    inputs = {"bucketPrefix": "gitops-dev-backups-", "tags": r.tags("backups-bucket")}
    return Resource("aws:s3/bucket:Bucket", "backups-bucket", inputs, protect=protect)


def versioning(status: str = "Enabled") -> Resource:
    inputs = {"bucket": "gitops-dev-backups-0123", "versioningConfiguration": {"status": status}}
    return Resource("aws:s3/bucketVersioning:BucketVersioning", "backups-versioning", inputs, protect=True)


def snapshots(target: dict[str, str] | None = None) -> Resource:
    inputs: dict[str, Any] = {
        "description": "gitops-dev: daily snapshots of the GitLab data volume",
        "executionRoleArn": "arn:aws:iam::123456789012:role/backups-dlm-role",
        "state": "ENABLED",
        "policyDetails": {
            "resourceTypes": ["VOLUME"],
            "targetTags": target or {"GitopsBackup": "gitops-dev-gitlab-data"},
            "schedules": [{"name": "daily", "createRule": {"interval": 24}, "retainRule": {"interval": 7}}],
        },
        "tags": r.tags("backups-gitlab-data-snapshots"),
    }
    return Resource("aws:dlm/lifecyclePolicy:LifecyclePolicy", "backups-gitlab-data-snapshots", inputs)


def timer(unit: str) -> Resource:
    step = r.remote_step(f"backups-{unit}", stdout="", stdout_secret=False, stdin=False)
    step.inputs["create"] = (
        f"sudo env STEP_NAME=backup/install-timer.sh UNIT={unit} bash -c '...' backup/install-timer.sh"
    )
    step.outputs = {**(step.outputs or {}), "create": step.inputs["create"]}
    return step


def backed_up(**overrides: Any) -> list[Resource]:
    parts = {
        "bucket": bucket(),
        "versioning": versioning(),
        "volume": r.volume("gitlab-data", tags=DATA_TAGS),
        "snapshots": snapshots(),
        "gitlab": timer("gitops-gitlab-backup"),
        "etcd": timer("gitops-etcd-backup"),
    }
    parts.update(overrides)
    return [part for part in parts.values() if part is not None]


CASES = [
    Case(
        "backups-enabled",
        "prod-stack-without-a-bucket",
        bad=backed_up(bucket=None, versioning=None),
        expect="no versioned backup bucket",
        good=backed_up(),
        config=REQUIRED,
    ),
    Case(
        "backups-enabled",
        "bucket-not-protected",
        bad=backed_up(bucket=bucket(protect=False)),
        expect="is not protected",
        good=backed_up(),
        config=REQUIRED,
    ),
    Case(
        "backups-enabled",
        "data-volume-without-snapshots",
        bad=backed_up(snapshots=snapshots({"GitopsBackup": "another-stack-gitlab-data"})),
        expect="the data volume gitlab-data has no enabled snapshot policy",
        good=backed_up(),
        config=REQUIRED,
    ),
    Case(
        "backups-enabled",
        "no-etcd-snapshots",
        bad=backed_up(etcd=None),
        expect="no step installs the etcd snapshots (gitops-etcd-backup.timer)",
        good=backed_up(),
        config=REQUIRED,
    ),
]


def test_prod_with_backups_off_is_stopped_and_dev_may_turn_them_off() -> None:
    prod = run_fixture_stack("prod", {"adminCidrs": ["203.0.113.7/32"], "backups": False})
    report = analyze_program(prod, config_file=stack_config_file("prod"))
    assert {v.policy for v in report.mandatory} == {"backups-enabled"}
    # The kept bucket is still there (backups off keeps it): the messages name the missing timers and
    # snapshot policy, and the key that removed them.
    assert all("is `backups` false?" in v.message for v in report.mandatory), [v.message for v in report.mandatory]
    assert report.blocks()
    dev = run_fixture_stack("dev", {"adminCidrs": ["203.0.113.7/32"], "backups": False})
    assert analyze_program(dev, config_file=stack_config_file("dev")).mandatory == []
