"""The Backups component under mocks: the bucket and its settings, who may write where, the timers and
the snapshot policy, and how they are wired to the GitLab install and the Kubernetes upgrade.

Behaviour of the scripts is tested against stubs (test_backup_steps.py), a real etcd
(test_backup_etcd.py) and a real S3 API (test_backup_s3.py); moto does not check IAM conditions, so
the ``s3:prefix`` condition is held to the policy JSON here.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from components import backup_layout as layout
from components.backups import GITLAB_UPGRADE_HOOK, bucket_prefix
from tests.conftest import ADMIN
from tools.harness import FIXTURE_STACKS, ProgramRun, Registration, run_program
from tools.plan import run_twice

COMMAND = "command:remote:Command"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
PROFILE = "aws:iam/instanceProfile:InstanceProfile"
BUCKET_TYPE = "aws:s3/bucket:Bucket"
DLM_TYPE = "aws:dlm/lifecyclePolicy:LifecyclePolicy"
# DLM's alphabet for a policy description (1..500) and a schedule name (1..120): botocore
# dlm/2018-01-12 service-2.json PolicyDescription and ScheduleName; the provider checks the
# description at `pulumi preview` (terraform-provider-aws internal/service/dlm/lifecycle_policy.go).
DLM_TEXT = re.compile(r"^[0-9A-Za-z _-]+$")


def env(step: Registration, command: str = "create") -> dict[str, str]:
    words = shlex.split(step.plain_inputs[command])
    return dict(word.split("=", 1) for word in words[2 : words.index("bash")])


def files(step: Registration) -> dict[str, dict[str, str]]:
    return json.loads(env(step)["FILES_JSON"])


def statements(run: ProgramRun, name: str) -> dict[str, dict]:
    policy = json.loads(run.one(ROLE_POLICY, name).plain_inputs["policy"])
    return {statement["Sid"]: statement for statement in policy["Statement"]}


def test_the_bucket_is_private_encrypted_versioned_tls_only_and_kept_by_destroy(dev: ProgramRun) -> None:
    bucket = dev.one(BUCKET_TYPE, "backups-bucket")
    assert bucket.plain_inputs["bucketPrefix"] == "gitops-dev-backups-"
    assert not bucket.plain_inputs.get("forceDestroy")
    settings = {
        "aws:s3/bucketOwnershipControls:BucketOwnershipControls": "backups-ownership",
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": "backups-public-access",
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": "backups-encryption",
        "aws:s3/bucketVersioning:BucketVersioning": "backups-versioning",
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": "backups-retention",
        "aws:s3/bucketPolicy:BucketPolicy": "backups-policy",
    }
    # Protected, all of them: `make destroy` (--exclude-protected) keeps a bucket with its settings.
    assert bucket.protect and all(dev.one(kind, name).protect for kind, name in settings.items())
    access = dev.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "backups-public-access").plain_inputs
    assert all(
        access[key] is True
        for key in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    )
    ownership = dev.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls", "backups-ownership").plain_inputs
    assert ownership["rule"]["objectOwnership"] == "BucketOwnerEnforced"
    encryption = dev.named("backups-encryption").plain_inputs["rules"][0]
    assert encryption["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"
    assert encryption["blockedEncryptionTypes"] == ["SSE-C"]  # no host can write what the operator cannot read
    assert dev.named("backups-versioning").plain_inputs["versioningConfiguration"]["status"] == "Enabled"
    tls = json.loads(dev.named("backups-policy").plain_inputs["policy"])["Statement"][0]
    assert tls["Effect"] == "Deny" and tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert tls["Resource"] == [bucket.state["arn"], bucket.state["arn"] + "/*"]
    assert dev.outputs["backupBucket"] == bucket.state["bucket"]
    assert dev.outputs["backupRegion"] == "us-east-1"


def test_retention_follows_config_and_frees_noncurrent_versions(run_stack) -> None:
    run = run_stack("dev", gitlabBackupRetentionDays=45, backupNoncurrentRetentionDays=3)
    lifecycle = run.named("backups-retention")
    assert run.named("backups-versioning").urn in lifecycle.depends_on
    rules = {rule["id"]: rule for rule in lifecycle.plain_inputs["rules"]}
    assert rules["gitlab-daily"]["filter"] == {"prefix": "gitlab/daily/"}
    assert rules["gitlab-daily"]["expiration"] == {"days": 45}
    assert rules["etcd-frequent"]["expiration"] == {"days": 7}
    assert rules["etcd-daily"]["expiration"] == {"days": 90}
    assert rules["gitlab-pre-upgrade"]["expiration"] == rules["etcd-pre-upgrade"]["expiration"] == {"days": 90}
    # In a versioned bucket an expiration only adds a delete marker: every rule frees noncurrent versions.
    assert all(
        rule["noncurrentVersionExpiration"] == {"noncurrentDays": 3}
        for key, rule in rules.items()
        if key != "whole-bucket-cleanup"
    )
    cleanup = rules["whole-bucket-cleanup"]
    assert cleanup["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 2}
    assert cleanup["expiration"] == {"expiredObjectDeleteMarker": True}


def test_each_host_role_may_only_put_get_and_list_its_own_prefix(dev: ProgramRun) -> None:
    bucket = dev.one(BUCKET_TYPE, "backups-bucket").state["arn"]
    gitlab_role = dev.one(PROFILE, "gitlab-profile").plain_inputs["role"]
    control_plane_role = dev.one(PROFILE, "gitops-k8s-control-plane-profile").plain_inputs["role"]
    worker_role = dev.one(PROFILE, "gitops-k8s-profile").plain_inputs["role"]
    assert dev.one(ROLE_POLICY, "backups-gitlab-writer").plain_inputs["role"] == gitlab_role
    assert dev.one(ROLE_POLICY, "backups-etcd-writer").plain_inputs["role"] == control_plane_role
    # Workers get no permission at all: only the control plane writes etcd snapshots.
    assert all(policy.plain_inputs["role"] != worker_role for policy in dev.all(ROLE_POLICY))
    for name, prefix in (("backups-gitlab-writer", "gitlab/"), ("backups-etcd-writer", "etcd/")):
        found = statements(dev, name)
        assert found["WriteAndReadOwnBackups"]["Action"] == ["s3:PutObject", "s3:GetObject"]
        assert found["WriteAndReadOwnBackups"]["Resource"] == f"{bucket}/{prefix}*"
        # moto does not check conditions: the prefix limit on listing is held here.
        assert found["ListOwnBackups"] == {
            "Sid": "ListOwnBackups",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": bucket,
            "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}},
        }
        actions = [a for s in found.values() for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
        assert not any("Delete" in action or "Acl" in action or "Retention" in action for action in actions)


def test_the_control_plane_has_its_own_instance_profile(dev: ProgramRun) -> None:
    master = dev.one("aws:ec2/instance:Instance", "gitops-k8s-master").plain_inputs["iamInstanceProfile"]
    worker = dev.one("aws:ec2/instance:Instance", "gitops-k8s-worker1").plain_inputs["iamInstanceProfile"]
    assert master == dev.one(PROFILE, "gitops-k8s-control-plane-profile").state["name"]
    assert worker == dev.one(PROFILE, "gitops-k8s-profile").state["name"]


def test_gitlab_installs_its_backup_timer_and_upgrade_hook_before_the_install_step(dev: ProgramRun) -> None:
    timer = dev.one(COMMAND, "backups-gitlab-timer")
    install = dev.one(COMMAND, "gitlab-install")
    assert timer.urn in install.depends_on  # the hook exists before install.sh may upgrade
    assert dev.named("backups-gitlab-writer").urn in timer.depends_on
    step = env(timer)
    assert step["UNIT"] == "gitops-gitlab-backup" and step["NOW"] == "check" and step["CHECK_PREFIX"] == "gitlab/"
    assert step["ROLE_NAME"] == dev.one(PROFILE, "gitlab-profile").plain_inputs["role"]
    installed = files(timer)
    bucket = dev.outputs["backupBucket"]
    assert (
        installed["/etc/gitops/gitlab-backup.env"]["content"]
        == f"AWS_DEFAULT_REGION=us-east-1\nBACKUP_BUCKET={bucket}\n"
    )
    assert installed[GITLAB_UPGRADE_HOOK]["mode"] == "0755"
    assert "OnCalendar=*-*-* 03:00:00 UTC" in installed["/etc/systemd/system/gitops-gitlab-backup.timer"]["content"]
    service = installed["/etc/systemd/system/gitops-gitlab-backup.service"]["content"]
    assert "ExecStart=/usr/local/lib/gitops/gitlab-backup daily" in service
    # Removed with the step: the timer is stopped and every file it installed goes.
    assert env(timer, "delete")["FILE_PATHS"].split() == sorted(installed)


def test_the_data_volume_gets_daily_snapshots_from_its_own_dlm_policy(run_stack) -> None:
    run = run_stack("dev", backupHourUtc=23, gitlabSnapshotRetentionDays=14)
    volume_tags = run.one("aws:ebs/volume:Volume", "gitlab-data").plain_inputs["tags"]
    dlm = run.one("aws:dlm/lifecyclePolicy:LifecyclePolicy", "backups-gitlab-data-snapshots").plain_inputs
    target = dlm["policyDetails"]["targetTags"]
    assert target == layout.dlm_target_tag("gitops", "dev") and target.items() <= volume_tags.items()
    (schedule,) = dlm["policyDetails"]["schedules"]
    assert schedule["createRule"] == {"interval": 24, "intervalUnit": "HOURS", "times": "01:00"}  # 2 h after 23:00
    assert schedule["retainRule"] == {"interval": 14, "intervalUnit": "DAYS"}
    assert dlm["state"] == "ENABLED" and dlm["policyDetails"]["resourceTypes"] == ["VOLUME"]
    role = run.one("aws:iam/role:Role", "backups-dlm-role")
    trust = json.loads(role.plain_inputs["assumeRolePolicy"])["Statement"][0]
    assert trust["Principal"] == {"Service": "dlm.amazonaws.com"}
    attachment = run.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "backups-dlm-role-policy").plain_inputs
    assert attachment["policyArn"] == "arn:aws:iam::aws:policy/service-role/AWSDataLifecycleManagerServiceRole"


def assert_dlm_accepts(run: ProgramRun) -> None:
    (policy,) = run.all(DLM_TYPE)
    description = policy.plain_inputs["description"]
    assert DLM_TEXT.match(description) and len(description) <= 500, description
    names = [schedule["name"] for schedule in policy.plain_inputs["policyDetails"]["schedules"]]
    assert names and all(DLM_TEXT.match(name) and len(name) <= 120 for name in names), names


def test_the_dlm_policy_names_are_in_the_alphabet_dlm_accepts(dev: ProgramRun, prod: ProgramRun) -> None:
    assert_dlm_accepts(dev)
    assert_dlm_accepts(prod)


def test_a_stack_name_with_dots_still_gives_dlm_names_it_accepts(tmp_path: Path) -> None:
    # A user's stack: Pulumi stack names may hold letters, digits, "-", "_" and ".".
    shutil.copy(FIXTURE_STACKS / "Pulumi.dev.yaml", tmp_path / "Pulumi.team.prod_eu-1.yaml")
    run = run_program("team.prod_eu-1", {**ADMIN, "backupHourUtc": 22}, stack_dir=tmp_path)
    assert_dlm_accepts(run)
    assert (
        run.one(DLM_TYPE, "backups-gitlab-data-snapshots")
        .plain_inputs["description"]
        .startswith("gitops-team-prod_eu-1 ")
    )


@pytest.mark.parametrize("project", ["gitops", "my.project_2", "a" * 100])
@pytest.mark.parametrize("stack", ["dev", "org.team.prod", "x" * 400])
@pytest.mark.parametrize(("hour", "days"), [(0, 1), (23, 3650)])
def test_dlm_names_fit_the_pattern_for_any_project_and_stack(project: str, stack: str, hour: int, days: int) -> None:
    description = layout.dlm_description(project, stack)
    assert DLM_TEXT.match(description) and 1 <= len(description) <= 500
    name = layout.dlm_schedule(hour, days)["name"]
    assert DLM_TEXT.match(name) and len(name) <= 120


def test_every_control_plane_snapshots_etcd_and_an_upgrade_waits_for_a_fresh_snapshot(run_stack) -> None:
    run = run_stack("dev", etcdSnapshotIntervalMinutes=30)
    setup = run.one(COMMAND, "gitops-k8s-master-etcd-backup")
    assert env(setup)["NOW"] == "run" and env(setup)["PROGRAM"] == "/usr/local/lib/gitops/etcd-backup"
    assert env(setup)["CHECK_PREFIX"] == "etcd/"
    assert env(setup)["ROLE_NAME"] == run.one(PROFILE, "gitops-k8s-control-plane-profile").plain_inputs["role"]
    installed = files(setup)
    assert "NODE_NAME=master\n" in installed["/etc/gitops/etcd-backup.env"]["content"]
    assert "OnUnitActiveSec=30min" in installed["/etc/systemd/system/gitops-etcd-backup.timer"]["content"]
    assert run.named("gitops-k8s-control-plane-ready").urn in setup.depends_on  # etcd runs
    assert run.named("backups-etcd-writer").urn in setup.depends_on
    snapshot = run.one(COMMAND, "gitops-k8s-master-etcd-pre-upgrade-snapshot")
    assert env(snapshot)["SNAPSHOT_KIND"] == "pre-upgrade" and setup.urn in snapshot.depends_on
    # Replaced, so run again, whenever the upgrade target changes; the upgrade waits for it.
    assert "TARGET_MINOR=1.36" in snapshot.plain_inputs["triggers"]
    assert snapshot.urn in run.one(COMMAND, "gitops-k8s-master-upgrade").depends_on


def test_with_three_control_plane_nodes_each_member_snapshots_under_its_own_name_once_joined(run_stack) -> None:
    """No leader election: every member's timer uploads under etcd/<kind>/<its name>/ (make doctor checks each)."""
    run = run_stack("dev", controlPlaneCount=3)
    profile = run.one(PROFILE, "gitops-k8s-control-plane-profile").state["name"]
    for member in ("master2", "master3"):
        assert (
            run.one("aws:ec2/instance:Instance", f"gitops-k8s-{member}").plain_inputs["iamInstanceProfile"] == profile
        )
        setup = run.one(COMMAND, f"gitops-k8s-{member}-etcd-backup")
        assert f"NODE_NAME={member}\n" in files(setup)["/etc/gitops/etcd-backup.env"]["content"]
        assert run.named(f"gitops-k8s-{member}-join").urn in setup.depends_on  # its etcd member runs
        assert run.named("backups-etcd-writer").urn in setup.depends_on
        assert env(setup, "delete")["INSTANCE_ID"] == run.one("aws:ec2/instance:Instance", f"gitops-k8s-{member}").id
    # One pre-upgrade snapshot, on the first node, before its upgrade (any member holds the whole keyspace).
    assert [step.name for step in run.all(COMMAND) if step.name.endswith("-etcd-pre-upgrade-snapshot")] == [
        "gitops-k8s-master-etcd-pre-upgrade-snapshot"
    ]


def test_backups_off_keeps_only_the_protected_bucket_and_stops_every_backup(run_stack) -> None:
    run = run_stack("dev", backups=False)
    # The bucket and its settings stay registered (protected): turning backups off never deletes them.
    (bucket,) = run.all(BUCKET_TYPE)
    assert bucket.protect and run.named("backups-retention").protect
    assert run.all("aws:dlm/lifecyclePolicy:LifecyclePolicy") == []
    assert [policy.name for policy in run.all(ROLE_POLICY) if policy.name.startswith("backups-")] == []
    assert not [step for step in run.all(COMMAND) if "backup" in step.name]
    assert run.outputs["backupBucket"] == bucket.state["bucket"]
    # No schedule exported: `make doctor` skips the backup checks.
    assert "etcdSnapshotIntervalMinutes" not in run.outputs


def test_turning_backups_off_keeps_the_bucket_and_removes_timers_hook_and_snapshot_policy() -> None:
    plan = run_twice(before={**ADMIN, "backups": True}, after={"backups": False}).plan
    # Nothing protected is deleted: a protected delete would fail `pulumi up` (plan.errors).
    assert plan.errors == []
    assert plan.touched("aws:ec2/instance:Instance") == {}
    kept = {f"backups-{part}" for part in ("bucket", "ownership", "public-access", "encryption", "versioning")}
    kept |= {"backups-policy", "backups-retention"}
    assert kept.isdisjoint(plan.touched()), plan.describe()
    deleted = set(plan.with_action("delete"))
    assert {
        "backups-gitlab-timer",
        "gitops-k8s-master-etcd-backup",
        "gitops-k8s-master-etcd-pre-upgrade-snapshot",
        "backups-gitlab-writer",
        "backups-etcd-writer",
        "backups-gitlab-data-snapshots",
        "backups-dlm-role",
        "backups-dlm-role-policy",
    } <= deleted, plan.describe()
    assert set(plan.touched().values()) == {"delete"}, plan.describe()


def test_turning_backups_on_later_touches_no_instance_and_only_adds() -> None:
    plan = run_twice(before={**ADMIN, "backups": False}, after={"backups": True}).plan
    assert plan.touched("aws:ec2/instance:Instance") == {}
    changes = plan.touched()
    # Everything is new (the data volume carries its snapshot tag whether backups are on or off).
    assert set(changes.values()) == {"create"}, changes
    # The GitLab install step does not re-run: it only waits for the new timer from now on.
    assert "gitlab-install" not in changes


@pytest.mark.parametrize(
    ("project", "stack", "prefix"),
    [
        ("gitops", "dev", "gitops-dev-backups-"),
        ("My_Project", "Prod.EU", "my-project-prod-eu-backups-"),
        # S3 reserves these starts whatever follows (bucket naming rules).
        ("xn--app", "dev", "gitops-xn--app-dev-backups-"),
        ("sthree-x", "dev", "gitops-sthree-x-dev-backups-"),
        ("_", "_", "gitops-backups-"),
    ],
)
def test_bucket_prefix_is_a_valid_bucket_name_start(project: str, stack: str, prefix: str) -> None:
    assert bucket_prefix(project, stack) == prefix and len(prefix) <= 37


def test_a_new_backup_hour_or_retention_keeps_the_dlm_schedule_name_so_old_snapshots_stay_managed() -> None:
    """DLM stops managing (and so never deletes) the snapshots of a renamed schedule (EBS user guide,
    "Modify lifecycle policies"): a change of hour or retention updates the schedule, never its name."""
    result = run_twice(
        before={**ADMIN, "backupHourUtc": 1, "gitlabSnapshotRetentionDays": 7},
        after={"backupHourUtc": 4, "gitlabSnapshotRetentionDays": 30},
    )
    assert result.plan.touched("aws:dlm/lifecyclePolicy:LifecyclePolicy") == {"backups-gitlab-data-snapshots": "update"}
    (before,) = result.before.all("aws:dlm/lifecyclePolicy:LifecyclePolicy")
    (after,) = result.after.all("aws:dlm/lifecyclePolicy:LifecyclePolicy")
    schedules = [run.plain_inputs["policyDetails"]["schedules"][0] for run in (before, after)]
    assert schedules[0]["name"] == schedules[1]["name"] == "daily"
    assert schedules[0]["retainRule"]["interval"] == 7 and schedules[1]["retainRule"]["interval"] == 30
