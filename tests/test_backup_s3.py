"""Uploads, downloads and permissions against a real S3 API (moto's server on loopback) with the real
AWS CLI the hosts run (Debian 12's awscli, aws-cli/2.9.19).

moto enforces identity policies' actions and resources once `reset-auth` switches IAM on, not their
conditions and not lifecycle execution: the ``s3:prefix`` condition and the lifecycle rules are held
to their JSON in tests/test_backups.py, and here the rules only have to be accepted by the S3 API.
The statements: the host policy lets our scripts back up and restore, each of its actions is needed
by one of them (remove it and that script fails), and a host can neither write outside its prefix
nor delete anything.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components import backup_layout as layout
from tests.backup_support import MotoServer, aws_cli
from tests.test_backup_steps import BACKUP_ID, GitLabHost
from tools import doctor

BUCKET = "gitops-backups-test"
REGION = "us-east-1"


class S3:
    def __init__(self, tmp_path: Path) -> None:
        self.cli = aws_cli()
        self.moto = MotoServer(tmp_path / "moto.log")
        self.keys: dict[str, dict[str, str]] = {"admin": {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}}

    def aws(self, who: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.cli, "--endpoint-url", self.moto.url, "--region", REGION, *args],
            env={
                **os.environ,
                **self.keys[who],
                "AWS_CONFIG_FILE": "/dev/null",
                "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            },
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def json(self, who: str, *args: str) -> Any:
        return json.loads(self.aws(who, *args, "--output", "json").stdout or "null")

    def user(self, name: str, policy: dict[str, Any]) -> None:
        self.aws("admin", "iam", "create-user", "--user-name", name)
        self.put_policy(name, policy)
        key = self.json("admin", "iam", "create-access-key", "--user-name", name)["AccessKey"]
        self.keys[name] = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}

    def put_policy(self, user: str, policy: dict[str, Any]) -> None:
        self.aws("admin", "iam", "put-user-policy", "--user-name", user, "--policy-name", "backups",
                 "--policy-document", json.dumps(policy))  # fmt: skip


def api_lifecycle(rules: list[dict[str, Any]]) -> dict[str, Any]:
    """The SDK's rule fields (snake_case) as the S3 API's LifecycleConfiguration."""

    def camel(value: Any) -> Any:
        if isinstance(value, dict):
            return {"".join(part.title() for part in key.split("_")): camel(item) for key, item in value.items()}
        return value

    converted = []
    for rule in rules:
        item = camel(rule)
        item["ID"] = item.pop("Id")
        converted.append(item)
    return {"Rules": converted}


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3]:
    s3 = S3(tmp_path)
    admin = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    s3.user("operator", admin)
    s3.keys["admin"] = s3.keys["operator"]
    s3.aws("admin", "s3api", "create-bucket", "--bucket", BUCKET)
    s3.aws(
        "admin", "s3api", "put-bucket-versioning", "--bucket", BUCKET, "--versioning-configuration", "Status=Enabled"
    )
    retention = layout.Retention(30, 7, 90, 90, 7)
    s3.aws("admin", "s3api", "put-bucket-lifecycle-configuration", "--bucket", BUCKET,
           "--lifecycle-configuration", json.dumps(api_lifecycle(layout.lifecycle_rules(retention))))  # fmt: skip
    s3.user("gitlab-host", layout.host_policy(BUCKET, layout.GITLAB_PREFIX))
    s3.user("control-plane", layout.host_policy(BUCKET, layout.ETCD_PREFIX))
    s3.moto.enforce_iam()
    yield s3
    s3.moto.stop()


def gitlab_on(tmp_path: Path, s3: S3) -> GitLabHost:
    gitlab = GitLabHost(tmp_path / "gitlab")
    # The real CLI behind the call log, pointed at moto with the host's own keys.
    keys = " ".join(f"{name}={value}" for name, value in s3.keys["gitlab-host"].items())
    gitlab.host.stub(
        "aws", f'exec env {keys} AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null {s3.cli} "$@"\n'
    )
    return gitlab


def test_lifecycle_rules_are_accepted_by_the_s3_api(s3: S3) -> None:
    rules = s3.json("admin", "s3api", "get-bucket-lifecycle-configuration", "--bucket", BUCKET)["Rules"]
    by_id = {rule["ID"]: rule for rule in rules}
    assert by_id["etcd-daily"]["Filter"] == {"Prefix": "etcd/daily/"}
    assert by_id["etcd-daily"]["Expiration"] == {"Days": 90}
    assert by_id["etcd-daily"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 7
    assert by_id["whole-bucket-cleanup"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 2}


def test_the_gitlab_host_backs_up_and_restores_with_its_policy(s3: S3, tmp_path: Path) -> None:
    gitlab = gitlab_on(tmp_path, s3)
    env = {"S3_ENDPOINT_URL": s3.moto.url, "AWS_DEFAULT_REGION": REGION}
    # A 9 MiB archive: above the CLI's 8 MiB multipart threshold, so CreateMultipartUpload, UploadPart
    # and CompleteMultipartUpload run, all authorised by s3:PutObject.
    gitlab.host.set(filler="9")
    (gitlab.host.root / "srv/gitlab/data/backups").mkdir(parents=True, exist_ok=True)
    backup = gitlab.run("backup/gitlab-backup.sh", **env)
    assert backup.returncode == 0, backup.stderr
    listed = s3.json("admin", "s3api", "list-objects-v2", "--bucket", BUCKET, "--prefix", "gitlab/daily/")
    keys = sorted(item["Key"] for item in listed["Contents"])
    assert keys == sorted(
        f"gitlab/daily/{BACKUP_ID}/{name}"
        for name in (f"{BACKUP_ID}_gitlab_backup.tar", "gitlab-config.tar.gz", layout.SET_MARKER)
    )
    head = s3.json("admin", "s3api", "head-object", "--bucket", BUCKET, "--key", keys[0])
    assert head["Metadata"]["gitlab-version"] == "19.4.1" and len(head["Metadata"]["sha256"]) == 64

    restore = gitlab.run("backup/gitlab-restore.sh", f"s3://{BUCKET}/gitlab/daily/{BACKUP_ID}/", **env)
    assert restore.returncode == 0, restore.stderr


def test_a_host_cannot_write_outside_its_prefix_nor_delete(s3: S3, tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.write_text("x")
    assert s3.aws("gitlab-host", "s3", "cp", str(probe), f"s3://{BUCKET}/gitlab/daily/x/probe").returncode == 0
    denied = s3.aws("gitlab-host", "s3", "cp", str(probe), f"s3://{BUCKET}/etcd/daily/master/x/probe", check=False)
    assert denied.returncode == 1 and "AccessDenied" in denied.stderr
    denied = s3.aws("control-plane", "s3", "cp", str(probe), f"s3://{BUCKET}/gitlab/daily/x/probe", check=False)
    assert denied.returncode == 1 and "AccessDenied" in denied.stderr
    removed = s3.aws("gitlab-host", "s3", "rm", f"s3://{BUCKET}/gitlab/daily/x/probe", check=False)
    assert removed.returncode == 1 and "AccessDenied" in removed.stderr
    version = s3.json("admin", "s3api", "list-object-versions", "--bucket", BUCKET, "--prefix", "gitlab/")["Versions"][
        0
    ]
    deleted = s3.aws("gitlab-host", "s3api", "delete-object", "--bucket", BUCKET, "--key", version["Key"],
                     "--version-id", version["VersionId"], check=False)  # fmt: skip
    assert deleted.returncode != 0 and "AccessDenied" in deleted.stderr
    # An overwrite is a new version: the old one stays (noncurrent, kept backupNoncurrentRetentionDays).
    assert s3.aws("gitlab-host", "s3", "cp", str(probe), f"s3://{BUCKET}/gitlab/daily/x/probe").returncode == 0
    versions = s3.json("admin", "s3api", "list-object-versions", "--bucket", BUCKET, "--prefix", "gitlab/daily/x/")
    assert len(versions["Versions"]) == 2


@pytest.mark.parametrize(
    ("action", "script"),
    [("s3:PutObject", "backup"), ("s3:GetObject", "restore"), ("s3:ListBucket", "check")],
)
def test_every_action_of_the_host_policy_is_needed_by_a_script(
    s3: S3, tmp_path: Path, action: str, script: str
) -> None:
    gitlab = gitlab_on(tmp_path, s3)
    env = {"S3_ENDPOINT_URL": s3.moto.url, "AWS_DEFAULT_REGION": REGION}
    assert gitlab.run("backup/gitlab-backup.sh", **env).returncode == 0
    policy = layout.host_policy(BUCKET, layout.GITLAB_PREFIX)
    for statement in policy["Statement"]:
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        statement["Action"] = [item for item in actions if item != action] or ["s3:GetBucketLocation"]
    s3.put_policy("gitlab-host", policy)
    gitlab.host.set(backup_id="1764547200_2026_12_01_19.4.1")
    if script == "backup":
        result = gitlab.run("backup/gitlab-backup.sh", **env)
        assert result.returncode == 1 and "upload to s3://" in result.stderr
    elif script == "restore":
        result = gitlab.run("backup/gitlab-restore.sh", f"s3://{BUCKET}/gitlab/daily/{BACKUP_ID}/", **env)
        assert result.returncode == 1 and "no SHA256SUMS in s3://" in result.stderr
    else:
        listed = s3.aws(
            "gitlab-host", "s3api", "list-objects-v2", "--bucket", BUCKET, "--prefix", "gitlab/", check=False
        )
        assert listed.returncode != 0 and "AccessDenied" in listed.stderr


# --------------------------------------------------------------------------------------------
# The doctor reads the last backups with the operator's credentials
# --------------------------------------------------------------------------------------------
def doctor_outputs() -> dict[str, Any]:
    nodes = [{"name": "master", "role": "control-plane"}, {"name": "worker1", "role": "worker"}]
    return {"backupBucket": BUCKET, "backupRegion": REGION, "etcdSnapshotIntervalMinutes": 60, "nodes": nodes}


def run_backup_checks(s3: S3, monkeypatch: pytest.MonkeyPatch, now: datetime.datetime) -> dict[str, doctor.Result]:
    monkeypatch.setenv(doctor.AWS_CLI_ENV, s3.cli)
    monkeypatch.setenv(doctor.S3_ENDPOINT_ENV, s3.moto.url)
    for name, value in s3.keys["operator"].items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    ctx = doctor.Context(outputs=doctor_outputs(), now=now, timeout=10)
    checks = {check.name: check for check in doctor.CHECKS}
    return {name: doctor.run_check(checks[name], ctx) for name in ("gitlab-backup", "etcd-backup")}


def test_the_doctor_finds_the_newest_complete_sets_and_flags_missed_runs(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    empty = run_backup_checks(s3, monkeypatch, now)
    # A new stack: no GitLab backup before the first daily run (a warning); the first `up` took an etcd one.
    assert empty["gitlab-backup"].verdict == "WARN" and "no complete GitLab backup" in empty["gitlab-backup"].message
    assert empty["etcd-backup"].verdict == "FAIL" and "master: none" in empty["etcd-backup"].message
    probe = tmp_path / "file"
    probe.write_text("x")
    for key in (
        f"gitlab/daily/{BACKUP_ID}/SHA256SUMS",
        "gitlab/daily/1764547200_2026_12_01_19.4.1/gitlab-config.tar.gz",  # unfinished: no SHA256SUMS
        "etcd/frequent/master/20261130T110000Z/SHA256SUMS",
    ):
        s3.aws("admin", "s3", "cp", str(probe), f"s3://{BUCKET}/{key}")
    fresh = run_backup_checks(s3, monkeypatch, now)
    assert fresh["gitlab-backup"].verdict == "PASS", fresh["gitlab-backup"]
    assert f"s3://{BUCKET}/gitlab/daily/{BACKUP_ID}/" in fresh["gitlab-backup"].message
    assert fresh["etcd-backup"].verdict == "PASS" and "master" in fresh["etcd-backup"].message
    later = run_backup_checks(s3, monkeypatch, now + datetime.timedelta(hours=31))
    assert (
        later["gitlab-backup"].verdict == "FAIL" and "journalctl -u gitops-gitlab-backup" in later["gitlab-backup"].fix
    )
    assert later["etcd-backup"].verdict == "FAIL" and "late" in later["etcd-backup"].message


def etcd_set(s3: S3, probe: Path, kind: str, taken: datetime.datetime) -> None:
    """A complete etcd set taken at ``taken`` (its key's stamp, as etcd-snapshot.sh names it)."""
    s3.aws("admin", "s3", "cp", str(probe), f"s3://{BUCKET}/etcd/{kind}/master/{taken:%Y%m%dT%H%M%SZ}/SHA256SUMS")


def test_the_doctor_fails_a_stack_that_never_completed_a_gitlab_backup_after_its_first_day(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = tmp_path / "file"
    probe.write_text("x")
    now = datetime.datetime.now(datetime.UTC)
    etcd_set(s3, probe, "daily", now)
    # The first etcd set was just taken: a new stack, a warning until its first daily GitLab run.
    assert run_backup_checks(s3, monkeypatch, now)["gitlab-backup"].verdict == "WARN"
    # 31 h later still no GitLab set: every daily run failed.
    old = run_backup_checks(s3, monkeypatch, now + datetime.timedelta(hours=31))["gitlab-backup"]
    assert old.verdict == "FAIL" and "every daily GitLab backup since has failed" in old.message


def test_the_doctor_judges_a_missing_gitlab_backup_by_how_long_backups_have_run_since_turned_back_on(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = tmp_path / "file"
    probe.write_text("x")
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    # Backups were on 60 to 40 days ago (their GitLab sets have expired, the daily etcd sets stay 90
    # days), then off, and turned on again 2 h ago: the setup step took an etcd snapshot at once.
    for days_ago in (60, 59, 58, 40):
        etcd_set(s3, probe, "daily", now - days_ago * day)
    etcd_set(s3, probe, "frequent", now - datetime.timedelta(hours=2))
    etcd_set(s3, probe, "daily", now - datetime.timedelta(hours=2))
    etcd_set(s3, probe, "frequent", now - datetime.timedelta(hours=1))
    fresh = run_backup_checks(s3, monkeypatch, now)["gitlab-backup"]
    assert fresh.verdict == "WARN" and "no complete GitLab backup" in fresh.message, fresh
    # Over a day later, sets without a break since then (the frequent ones in between: not needed,
    # a day between daily sets is no break), still no GitLab set.
    for hours in (22, 31):
        etcd_set(s3, probe, "daily", now + datetime.timedelta(hours=hours))
    later = run_backup_checks(s3, monkeypatch, now + datetime.timedelta(hours=31))["gitlab-backup"]
    assert later.verdict == "FAIL", later
    since = now - datetime.timedelta(hours=2)
    assert f"without a break since {since:%Y-%m-%d %H:%M} UTC" in later.message


def test_the_doctor_says_which_credentials_it_needs_when_listing_is_refused(
    s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.keys["operator"] = s3.keys["gitlab-host"]  # may list gitlab/ only by condition, and etcd/ not at all
    s3.put_policy(
        "gitlab-host",
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]},
    )
    result = run_backup_checks(s3, monkeypatch, datetime.datetime.now(datetime.UTC))["gitlab-backup"]
    assert result.verdict == "FAIL" and "AccessDenied" in result.message
    assert "your own AWS credentials" in result.fix and "s3:ListBucket" in result.fix


def test_without_an_aws_cli_the_doctor_warns_and_says_what_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(doctor.AWS_CLI_ENV, "/nonexistent/aws")
    ctx = doctor.Context(outputs=doctor_outputs(), now=datetime.datetime.now(datetime.UTC), timeout=5)
    for check in (c for c in doctor.CHECKS if c.name.endswith("-backup")):
        result = doctor.run_check(check, ctx)
        assert result.verdict == "WARN" and "is not installed" in result.message and "s3:ListBucket" in result.fix
