"""Behaviour of the GitLab backup, its restore and the timer setup, under bash with stub commands.

GitLab's own `gitlab-backup` cannot run here: the docker stub plays it (an archive with a
backup_information.yml, the output lines of gitlabhq lib/backup/manager.rb, or a failure with exit 1),
and the AWS CLI stub copies into a directory standing for the bucket (tests/test_backup_s3.py uploads
to a real S3 API). Each test is a statement about the host: what is uploaded and in what order, what
is refused before anything changes, and that a failed backup fails the upgrade that asked for it.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from components import backups
from tests.backup_support import AWS_STUB, BUCKET, run_backup_program
from tests.stub_host import StubHost

BACKUP_ID = "1764460800_2026_11_30_19.4.1"

DOCKER = r"""
state() { cat "$STATE/$1" 2>/dev/null || true; }
case "$1" in
  inspect) [ -f "$STATE/gitlab-down" ] && exit 1; echo true ;;
  exec)
    shift
    while [ "$1" = -e ]; do shift 2; done
    shift
    # the backup runs as `nice -n 10 ionice -t -c 2 -n 7 gitlab-backup create` in the container
    if [ "$1" = nice ]; then echo "$*" >"$STATE/backup-command"; shift 3; fi
    if [ "$1" = ionice ]; then shift 6; fi
    case "$1 $2" in
      "grep -q") [ ! -f "$STATE/no-registry-credentials" ] ;;
      "gitlab-backup create")
        id="$(state backup_id)"
        if [ ! -f "$STATE/no-archive" ] && { [ ! -f "$STATE/backup-fails" ] || [ -f "$STATE/packs-on-failure" ]; }; then
          work="$(mktemp -d)"
          printf -- '---\n:db_version: 20261101000000\n:gitlab_version: %s\n:skipped: ""\n' "$(state archive_version)" >"$work/backup_information.yml"
          filler="$(state filler)"
          head -c "$(( ${filler:-0} * 1048576 + 64 ))" /dev/urandom >"$work/db.sql.gz"
          mkdir -p "$FS_ROOT/srv/gitlab/data/backups"
          tar -cf "$FS_ROOT/srv/gitlab/data/backups/${id}_gitlab_backup.tar" -C "$work" backup_information.yml db.sql.gz
        fi
        if [ -f "$STATE/backup-fails" ]; then echo "Dumping PostgreSQL database gitlabhq_production ... failed: pg_dump: error"; exit 1; fi
        echo "Creating backup archive: ${id}_gitlab_backup.tar ... done"
        echo "Backup ${id} is done." ;;
      "gitlab-backup restore")
        # Whether another program could take the backup lock while GitLab restores (flock(1) opens its own).
        if flock --nonblock "$FS_ROOT/var/lib/gitops/backups/gitlab-backup.lock" true; then
          echo free >"$STATE/lock-during-restore"
        else
          echo held >"$STATE/lock-during-restore"
        fi ;;
    esac ;;
esac
"""

# `df --output=avail -B1 <dir>`: the data volume's free bytes, from $STATE/free_bytes (default 100 GiB).
DF = r"""
printf '   Avail\n%s\n' "$(cat "$STATE/free_bytes" 2>/dev/null || echo 107374182400)"
"""


class GitLabHost:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.host = StubHost(tmp_path)
        self.host.stub("docker", DOCKER).stub("aws", AWS_STUB).stub("df", DF)
        self.host.set(backup_id=BACKUP_ID, archive_version="19.4.1")
        root = self.host.root
        config = root / "srv/gitlab/config"
        (config / "ssl").mkdir(parents=True)
        (config / "config_backup").mkdir()
        (config / "gitlab-secrets.json").write_text('{"gitlab_rails": {"secret_key_base": "before"}}\n')
        (config / "gitlab.rb").write_text("# template\n")
        (config / "ssh_host_ed25519_key").write_text("key\n")
        (config / "config_backup/gitlab_config_1_2026_11_29.tar").write_text("old\n")
        (root / "srv/gitlab/data/gitlab-rails").mkdir(parents=True)
        (root / "srv/gitlab/data/gitlab-rails/VERSION").write_text("19.4.1\n")
        (root / "etc/gitops").mkdir(parents=True)
        (root / "etc/gitops/gitlab-omnibus.rb").write_text("external_url 'https://gitlab.example.test'\n")
        (root / "etc/gitops/gitlab.env").write_text("GITLAB_IMAGE=gitlab/gitlab-ce:19.4.1-ce.0\n")

    def run(self, script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_backup_program(self.host, self.tmp, script, args, {**env})

    def bucket(self) -> Path:
        return self.host.state / "s3" / BUCKET


@pytest.fixture
def gitlab(tmp_path: Path) -> GitLabHost:
    return GitLabHost(tmp_path)


def test_daily_backup_uploads_the_archive_and_the_configuration_then_sha256sums(gitlab: GitLabHost) -> None:
    result = gitlab.run("backup/gitlab-backup.sh")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"s3://{BUCKET}/gitlab/daily/{BACKUP_ID}/\n"
    backup_set = gitlab.bucket() / "gitlab/daily" / BACKUP_ID
    uploads = [call.split()[4].rsplit("/", 1)[1] for call in gitlab.host.calls("aws")]
    assert uploads == [f"{BACKUP_ID}_gitlab_backup.tar", "gitlab-config.tar.gz", "SHA256SUMS"]
    check = subprocess.run(["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=backup_set, capture_output=True)
    assert check.returncode == 0, check.stdout
    with tarfile.open(backup_set / "gitlab-config.tar.gz") as archive:
        names = set(archive.getnames())
    # What gitlab-backup leaves out (secrets, gitlab.rb, host keys) and the product's rendered config.
    assert {
        "srv/gitlab/config/gitlab-secrets.json",
        "srv/gitlab/config/gitlab.rb",
        "srv/gitlab/config/ssh_host_ed25519_key",
        "etc/gitops/gitlab-omnibus.rb",
        "etc/gitops/gitlab.env",
    } <= names
    assert not any("config_backup" in name for name in names)
    # The local archive is gone once uploaded: the data volume does not fill up.
    assert not list((gitlab.host.root / "srv/gitlab/data/backups").glob("*.tar"))
    assert not (gitlab.host.root / "srv/gitlab/gitops-backup").exists()
    metadata = gitlab.host.calls("aws")[0]
    assert "--metadata sha256=" in metadata and "gitlab-version=19.4.1" in metadata


def test_a_failed_gitlab_backup_uploads_nothing_and_fails(gitlab: GitLabHost) -> None:
    gitlab.host.set(**{"backup-fails": ""})
    result = gitlab.run("backup/gitlab-backup.sh", "pre-upgrade", "19.4.1", "19.5.2")
    assert result.returncode == 1
    assert "Dumping PostgreSQL database gitlabhq_production ... failed" in result.stderr
    assert "gitlab-backup create failed (exit 1" in result.stderr
    assert gitlab.host.calls("aws") == []


def test_a_failed_create_that_still_packed_an_archive_leaves_no_archive_behind(gitlab: GitLabHost) -> None:
    # lib/backup/manager.rb packs the tar even when a task failed, then the rake task exits 1.
    gitlab.host.set(**{"backup-fails": "", "packs-on-failure": ""})
    old = gitlab.host.root / "srv/gitlab/data/backups/1764374400_2026_11_29_19.4.1_gitlab_backup.tar"
    old.parent.mkdir(parents=True)
    old.write_text("an operator's own archive\n")
    result = gitlab.run("backup/gitlab-backup.sh")
    assert result.returncode == 1
    assert f"removed {BACKUP_ID}_gitlab_backup.tar, left by this failed run" in result.stderr
    # Only this run's archive goes: one that was there before stays.
    assert [p.name for p in old.parent.iterdir()] == [old.name]
    assert gitlab.host.calls("aws") == []


def test_a_failed_upload_removes_the_local_archive_and_records_no_success(gitlab: GitLabHost) -> None:
    gitlab.host.stub("aws", 'echo "upload failed: connection reset" >&2; exit 1\n').stub("sleep", "")
    result = gitlab.run("backup/gitlab-backup.sh")
    assert result.returncode == 1 and "failed (3 attempts)" in result.stderr
    assert not list((gitlab.host.root / "srv/gitlab/data/backups").glob("*.tar"))
    assert not (gitlab.host.root / "srv/gitlab/gitops-backup").exists()
    assert not (gitlab.host.root / "var/lib/gitops/backups/gitlab-last-success").exists()


def test_too_little_free_space_refuses_before_gitlab_writes_anything(gitlab: GitLabHost) -> None:
    gitlab.host.set(filler="3")  # a 3 MiB archive
    assert gitlab.run("backup/gitlab-backup.sh", RESERVE_MIB="1").returncode == 0
    recorded = int((gitlab.host.root / "var/lib/gitops/backups/gitlab-last-archive-bytes").read_text())
    assert recorded > 3 * 1048576
    # Twice the last archive plus the reserve: 1 byte short is refused, before `docker exec`.
    gitlab.host.set(free_bytes=str(2 * recorded + 1048576 - 1))
    calls_before = len(gitlab.host.calls("docker"))
    refused = gitlab.run("backup/gitlab-backup.sh", RESERVE_MIB="1")
    assert refused.returncode == 1
    assert "not enough free space for a GitLab backup" in refused.stderr and "nothing was written" in refused.stderr
    assert not [call for call in gitlab.host.calls("docker")[calls_before:] if call.startswith("docker exec")]
    gitlab.host.set(free_bytes=str(2 * recorded + 1048576))
    assert gitlab.run("backup/gitlab-backup.sh", RESERVE_MIB="1").returncode == 0


def test_without_the_registry_databases_credentials_the_daily_backup_refuses_before_writing(gitlab: GitLabHost) -> None:
    gitlab.host.set(**{"no-registry-credentials": ""})
    result = gitlab.run("backup/gitlab-backup.sh")
    assert result.returncode == 1
    assert "no credentials for the registry database's backup" in result.stderr and "nothing was" in result.stderr
    assert not [call for call in gitlab.host.calls("docker") if "gitlab-backup create" in call]
    assert gitlab.host.calls("aws") == []
    # Before an upgrade it warns and backs up the rest: install.sh runs the hook before it writes
    # the configuration that brings the credentials, so the first upgrade after them must not stop.
    upgrade = gitlab.run("backup/gitlab-backup.sh", "pre-upgrade", "19.4.1", "19.5.2")
    assert upgrade.returncode == 0, upgrade.stderr
    assert "WARNING: GitLab has no credentials for the registry database's backup" in upgrade.stderr
    assert upgrade.stdout == f"s3://{BUCKET}/gitlab/pre-upgrade/{BACKUP_ID}/\n"


def test_the_backup_runs_at_low_priority_inside_the_container(gitlab: GitLabHost) -> None:
    assert gitlab.run("backup/gitlab-backup.sh").returncode == 0
    assert (gitlab.host.state / "backup-command").read_text() == "nice -n 10 ionice -t -c 2 -n 7 gitlab-backup create\n"


def test_exit_zero_without_a_new_archive_is_a_failure(gitlab: GitLabHost) -> None:
    gitlab.host.set(**{"no-archive": ""})
    result = gitlab.run("backup/gitlab-backup.sh")
    assert result.returncode == 1
    assert "exited 0 but wrote no new *_gitlab_backup.tar" in result.stderr
    assert gitlab.host.calls("aws") == []


def test_before_an_upgrade_a_stopped_gitlab_fails_unless_the_operator_skips_once(gitlab: GitLabHost) -> None:
    gitlab.host.set(**{"gitlab-down": ""})
    result = gitlab.run("backup/gitlab-backup.sh", "pre-upgrade", "19.4.1", "19.5.2")
    assert result.returncode == 1
    assert "sudo touch /etc/gitops/gitlab-upgrade-skip-backup" in result.stderr
    skip = gitlab.host.root / "etc/gitops/gitlab-upgrade-skip-backup"
    skip.touch()
    result = gitlab.run("backup/gitlab-backup.sh", "pre-upgrade", "19.4.1", "19.5.2")
    assert result.returncode == 0, result.stderr
    assert "WITHOUT a backup" in result.stderr and not skip.exists()
    # The daily timer never skips, and leaves the file to the upgrade it was made for.
    skip.touch()
    assert gitlab.run("backup/gitlab-backup.sh").returncode == 1
    assert skip.exists()
    # A file over a day old (an earlier upgrade that stopped before its hook) skips nothing: removed.
    old = time.time() - 25 * 3600
    os.utime(skip, (old, old))
    result = gitlab.run("backup/gitlab-backup.sh", "pre-upgrade", "19.4.1", "19.5.2")
    assert result.returncode == 1 and "over a day old" in result.stderr and not skip.exists()


def test_a_refused_pre_upgrade_upload_says_how_to_upgrade_without_a_backup_and_the_skip_works(
    gitlab: GitLabHost,
) -> None:
    # The hook left behind on a host whose backups are off (remove-timer.sh failed closed): GitLab runs,
    # but the host's role may no longer write to the bucket.
    gitlab.host.stub("aws", 'echo "upload failed: An error occurred (AccessDenied)" >&2; exit 1\n').stub("sleep", "")
    result = gitlab.run("backup/gitlab-backup.sh", "pre-upgrade", "19.4.1", "19.5.2")
    assert result.returncode == 1 and "AccessDenied" in result.stderr
    assert "before the GitLab upgrade 19.4.1 -> 19.5.2" in result.stderr
    assert "sudo touch /etc/gitops/gitlab-upgrade-skip-backup" in result.stderr
    assert not list((gitlab.host.root / "srv/gitlab/data/backups").glob("*.tar"))
    skip = gitlab.host.root / "etc/gitops/gitlab-upgrade-skip-backup"
    skip.touch()
    gitlab.host.clear_calls()
    result = gitlab.run("backup/gitlab-backup.sh", "pre-upgrade", "19.4.1", "19.5.2")
    assert result.returncode == 0, result.stderr
    assert "upgrading GitLab 19.4.1 -> 19.5.2 WITHOUT a backup" in result.stderr and not skip.exists()
    assert gitlab.host.calls("docker", "aws") == []
    # Used once: the next upgrade tries its backup again.
    assert gitlab.run("backup/gitlab-backup.sh", "pre-upgrade", "19.5.2", "19.6.0").returncode == 1


def test_the_pre_upgrade_hook_runs_the_backup_and_install_stops_when_it_fails(gitlab: GitLabHost) -> None:
    hook = backups.gitlab_files(BUCKET, "eu-west-3", 3)[backups.GITLAB_UPGRADE_HOOK]["content"]
    assert hook.splitlines()[-1] == 'exec /usr/local/lib/gitops/gitlab-backup pre-upgrade "$@"'
    # install.sh runs the hook with the old and new versions and dies when it fails.
    install = (Path(__file__).resolve().parent.parent / "userdata/gitlab/install.sh").read_text()
    assert '"$PRE_UPGRADE_HOOK" "$old" "$new" || die "${PRE_UPGRADE_HOOK} failed; GitLab was not stopped"' in install
    result = gitlab.run("backup/gitlab-backup.sh", "pre-upgrade", "19.4.1", "19.5.2")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"s3://{BUCKET}/gitlab/pre-upgrade/{BACKUP_ID}/\n"


def uploaded_set(gitlab: GitLabHost) -> str:
    assert gitlab.run("backup/gitlab-backup.sh").returncode == 0
    gitlab.host.clear_calls()
    return f"s3://{BUCKET}/gitlab/daily/{BACKUP_ID}/"


def test_restore_puts_secrets_first_then_restores_in_gitlabs_documented_order(gitlab: GitLabHost) -> None:
    url = uploaded_set(gitlab)
    secrets = gitlab.host.root / "srv/gitlab/config/gitlab-secrets.json"
    backed_up = secrets.read_text()
    secrets.write_text('{"gitlab_rails": {"secret_key_base": "fresh host"}}\n')  # a fresh host's own
    result = gitlab.run("backup/gitlab-restore.sh", url)
    assert result.returncode == 0, result.stderr
    assert secrets.read_text() == backed_up
    (kept,) = secrets.parent.glob("gitlab-secrets.json.before-restore-*")
    assert "fresh host" in kept.read_text()
    calls = [call for call in gitlab.host.calls("docker", "systemctl") if not call.startswith("docker inspect")]
    assert calls == [
        "docker exec gitlab gitlab-ctl reconfigure",
        "docker exec gitlab gitlab-ctl stop puma",
        "docker exec gitlab gitlab-ctl stop sidekiq",
        f"docker exec gitlab chown git:git /var/opt/gitlab/backups/{BACKUP_ID}_gitlab_backup.tar",
        f"docker exec -e GITLAB_ASSUME_YES=1 gitlab gitlab-backup restore BACKUP={BACKUP_ID}",
        "systemctl restart gitlab.service",
        "docker exec gitlab gitlab-ctl status",
        "docker exec gitlab gitlab-rake gitlab:check SANITIZE=true",
        "docker exec gitlab gitlab-rake gitlab:doctor:secrets",
    ]
    assert not (gitlab.host.root / "srv/gitlab/gitops-restore").exists()


def test_restore_holds_the_backup_lock_and_waits_for_a_backup_or_install_that_holds_it(gitlab: GitLabHost) -> None:
    url = uploaded_set(gitlab)
    lock = gitlab.host.root / "var/lib/gitops/backups/gitlab-backup.lock"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # the daily backup, or install.sh about to restart GitLab
        result = gitlab.run("backup/gitlab-restore.sh", url, LOCK_WAIT_SECONDS="1")
    assert result.returncode == 1
    assert "waiting for a GitLab backup (the daily timer or a pre-upgrade hook) or a pulumi up" in result.stderr
    assert "still holds" in result.stderr and "nothing was changed" in result.stderr
    # Refused before it asked anything of GitLab or the bucket.
    assert gitlab.host.calls("docker", "systemctl", "aws") == []
    assert "before" in (gitlab.host.root / "srv/gitlab/config/gitlab-secrets.json").read_text()
    assert not (gitlab.host.root / "srv/gitlab/gitops-restore").exists()
    # Once released, the restore runs, and holds the lock while gitlab-backup restore runs.
    result = gitlab.run("backup/gitlab-restore.sh", url)
    assert result.returncode == 0, result.stderr
    assert (gitlab.host.state / "lock-during-restore").read_text() == "held\n"


def refused(gitlab: GitLabHost, result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 1, result.stderr
    assert message in result.stderr and "Nothing was changed." in result.stderr
    assert [call for call in gitlab.host.calls("docker") if not call.startswith("docker inspect")] == []
    assert gitlab.host.calls("systemctl") == []
    assert "before" in (gitlab.host.root / "srv/gitlab/config/gitlab-secrets.json").read_text()


def test_restore_refuses_another_gitlab_version(gitlab: GitLabHost) -> None:
    url = uploaded_set(gitlab)
    (gitlab.host.root / "srv/gitlab/data/gitlab-rails/VERSION").write_text("19.5.2\n")
    refused(
        gitlab, gitlab.run("backup/gitlab-restore.sh", url), "the backup is from GitLab 19.4.1, this host runs 19.5.2"
    )


def test_restore_refuses_a_damaged_missing_or_mislabelled_set(gitlab: GitLabHost) -> None:
    url = uploaded_set(gitlab)
    archive = gitlab.bucket() / "gitlab/daily" / BACKUP_ID / f"{BACKUP_ID}_gitlab_backup.tar"
    original = archive.read_bytes()
    archive.write_bytes(original[:-1024])
    refused(gitlab, gitlab.run("backup/gitlab-restore.sh", url), "checksum mismatch")
    archive.write_bytes(original)
    missing = f"s3://{BUCKET}/gitlab/daily/1764374400_2026_11_29_19.4.1/"
    refused(gitlab, gitlab.run("backup/gitlab-restore.sh", missing), "no SHA256SUMS in s3://")
    # An archive whose backup_information.yml names another version than its name.
    gitlab.host.set(backup_id="1764547200_2026_12_01_19.4.1", archive_version="19.3.0")
    assert gitlab.run("backup/gitlab-backup.sh").returncode == 0
    gitlab.host.clear_calls()
    result = gitlab.run("backup/gitlab-restore.sh", f"s3://{BUCKET}/gitlab/daily/1764547200_2026_12_01_19.4.1/")
    refused(gitlab, result, "records GitLab 19.3.0, its name says 19.4.1")


def setup_env(files: dict[str, dict[str, str]], **extra: str) -> dict[str, str]:
    return {
        "UNIT": backups.GITLAB_UNIT,
        "FILES_JSON": json.dumps(files),
        "BACKUP_BUCKET": BUCKET,
        "AWS_DEFAULT_REGION": "eu-west-3",
        "NOW": "check",
        "CHECK_PREFIX": "gitlab/",
        "ROLE_NAME": "gitlab-role-1234",
        **extra,
    }


# The AWS CLI on a host: `sts get-caller-identity` answers with the role in $STATE/arn (the first
# $STATE/old_role_answers calls answer with the instance's previous role); every other call succeeds.
AWS_HOST = r"""
[ "$1" = --version ] && { echo "aws-cli/2.9.19 Python/3.11.2 Linux source/x86_64.debian.12"; exit 0; }
if [ "$1 $2" = "sts get-caller-identity" ]; then
  old="$(cat "$STATE/old_role_answers" 2>/dev/null || echo 0)"
  if [ "$old" -gt 0 ]; then
    echo $((old - 1)) >"$STATE/old_role_answers"
    echo "arn:aws:sts::123456789012:assumed-role/gitops-k8s-role-0001/i-0abc"; exit 0
  fi
  echo "arn:aws:sts::123456789012:assumed-role/$(cat "$STATE/role" 2>/dev/null || echo gitlab-role-1234)/i-0abc"
fi
exit 0
"""


def test_the_setup_step_installs_the_cli_timer_and_hook_once_then_checks_the_bucket(tmp_path: Path) -> None:
    host = StubHost(tmp_path)
    host.stub("aws", AWS_HOST)
    (tmp_path / "bin/aws").rename(tmp_path / "aws")  # not installed yet: apt-get brings it
    host.stub(
        "apt-get", 'for a in "$@"; do [ "$a" = awscli ] && cp "$STATE/../aws" "$STATE/../bin/aws"; done; exit 0\n'
    )
    # The host's own programs, without any AWS CLI this machine may have.
    system = tmp_path / "system-bin"
    system.mkdir()
    for directory in ("/usr/local/bin", "/usr/bin", "/bin"):
        for program in Path(directory).iterdir():
            if program.name != "aws" and not (system / program.name).exists():
                (system / program.name).symlink_to(program)
    files = backups.gitlab_files(BUCKET, "eu-west-3", 3)
    path = f"{host.bin}:{system}"
    result = host.run("backup/install-timer.sh", {**setup_env(files), "PATH": path})
    assert result.returncode == 0, result.stderr
    assert any("install -y -qq --no-install-recommends awscli" in call for call in host.calls("apt-get"))
    for file, spec in files.items():
        target = host.root / file.lstrip("/")
        assert target.read_text() == spec["content"]
        assert oct(target.stat().st_mode & 0o777) == "0o" + spec["mode"].lstrip("0")
    timer = (host.root / "etc/systemd/system/gitops-gitlab-backup.timer").read_text()
    assert "OnCalendar=*-*-* 03:00:00 UTC" in timer and "Persistent=true" in timer
    assert "systemctl enable --now gitops-gitlab-backup.timer" in host.calls("systemctl")
    assert f"aws s3api list-objects-v2 --bucket {BUCKET} --prefix gitlab/ --max-items 1" in host.calls("aws")
    # A second run installs nothing and writes nothing.
    host.clear_calls()
    again = host.run("backup/install-timer.sh", {**setup_env(files), "PATH": path})
    assert again.returncode == 0, again.stderr
    assert host.calls("apt-get") == [] and "wrote" not in again.stderr


def test_the_setup_waits_until_the_host_acts_as_its_new_role_before_it_runs_the_backup(tmp_path: Path) -> None:
    # An instance moved to a new instance profile in place: IMDS serves the old role's credentials a while.
    host = StubHost(tmp_path)
    host.stub("aws", AWS_HOST).stub("sleep", "")
    host.set(old_role_answers="3")
    files = {"/usr/local/lib/gitops/etcd-backup": {"mode": "0755", "content": "#!/bin/sh\necho snapshot taken\n"}}
    env = setup_env(files, NOW="run", PROGRAM="/usr/local/lib/gitops/etcd-backup", CHECK_PREFIX="etcd/")
    result = host.run("backup/install-timer.sh", env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "snapshot taken\n"
    assert host.calls("aws").count("aws sts get-caller-identity --query Arn --output text") == 4
    assert host.calls("aws")[-1] == f"aws s3api list-objects-v2 --bucket {BUCKET} --prefix etcd/ --max-items 1"
    # A host that never gets the role fails, saying so, and runs nothing.
    host.set(role="someone-else")
    stuck = host.run("backup/install-timer.sh", {**env, "ROLE_WAIT_SECONDS": "0"})
    assert stuck.returncode == 1 and "still acts as" in stuck.stderr and "not role gitlab-role-1234" in stuck.stderr
    assert "snapshot taken" not in stuck.stdout


def test_removing_the_step_stops_the_timer_and_removes_its_files_on_its_own_instance_only(tmp_path: Path) -> None:
    host = StubHost(tmp_path)
    # IMDSv2: a token, then the instance id of the host the step reaches.
    host.stub("curl", 'case "$*" in *api/token*) echo token ;; *instance-id*) cat "$STATE/instance" ;; esac\n')
    files = backups.gitlab_files(BUCKET, "eu-west-3", 3)
    for path in files:
        (host.root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (host.root / path.lstrip("/")).write_text("x")
    env = {"UNIT": backups.GITLAB_UNIT, "FILE_PATHS": " ".join(sorted(files)), "INSTANCE_ID": "i-0old"}
    # The instance was replaced and the Elastic IP reaches the new one: its timer stays.
    host.set(instance="i-0new")
    result = host.run("backup/remove-timer.sh", env)
    assert result.returncode == 0, result.stderr
    assert "left in place" in result.stderr and host.calls("systemctl") == []
    assert all((host.root / path.lstrip("/")).exists() for path in files)
    # The metadata service does not answer: fail closed, the timer stays (and the step does not fail),
    # and the warning says how to remove the timer and its files by hand, the upgrade hook by name.
    host.set(instance="")
    result = host.run("backup/remove-timer.sh", env)
    assert result.returncode == 0, result.stderr
    assert "left in place" in result.stderr and host.calls("systemctl") == []
    assert f"sudo rm -f {env['FILE_PATHS']}" in result.stderr
    hook = backups.GITLAB_UPGRADE_HOOK
    assert f"that includes {hook}, which runs a backup before each GitLab upgrade" in result.stderr
    assert "sudo touch /etc/gitops/gitlab-upgrade-skip-backup" in result.stderr
    assert all((host.root / path.lstrip("/")).exists() for path in files)
    host.set(instance="i-0old")
    result = host.run("backup/remove-timer.sh", env)
    assert result.returncode == 0, result.stderr
    assert host.calls("systemctl")[0] == "systemctl disable --now gitops-gitlab-backup.timer"
    assert not any((host.root / path.lstrip("/")).exists() for path in files)
