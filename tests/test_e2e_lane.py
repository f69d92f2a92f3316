"""The real-cloud e2e lane's scripts (ci/e2e/), run offline against stubs of pulumi, aws and the tools.

Each stub is a small bash script first on PATH that appends its arguments to a shared call log and
answers from files a test writes (does the stack exist, does `up` fail, what the tagging API lists,
what each resource's own API says). The tests assert the order of operations, that a failure stops
the lane but never the cleanup, the bounded waits' messages, and the leak check failing on a
leftover. Nothing here talks to AWS or Pulumi: the lane has not been run on a real account.
"""

from __future__ import annotations

import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from components.gitlab_host import ca_file_path

ROOT = Path(__file__).resolve().parent.parent
E2E = ROOT / "ci" / "e2e"
STACK = "e2e-4242-pull"
PIPELINE = yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())

PULUMI_STUB = r"""#!/usr/bin/env bash
printf 'pulumi %s\n' "$*" >>"$CALLS"
state="$STUB_STATE"
fail_if() { if [[ -f "$state/$1" ]]; then n="$(cat "$state/$1")"; if ((n > 0)); then echo $((n - 1)) >"$state/$1"; echo "error: $1 failed" >&2; exit 1; fi; fi; }
case "$1 $2" in
  "stack select") [[ -f "$state/stack" ]] || { echo "error: no stack named '$3' found" >&2; exit 255; } ;;
  "stack init") touch "$state/stack" ;;
  "stack rm") rm -f "$state/stack" ;;
  "stack output") file="$state/ca.pem"; [[ "$3" == backupBucket ]] && file="$state/bucket"; [[ -f "$file" ]] && cat "$file" || { echo "error: current stack does not have output property '$3'" >&2; exit 255; } ;;
  "config get") cat "$state/config-$3" ;;
  "config set") printf '%s' "$4" >"$state/config-$3" ;;
  "up --stack") fail_if up ;;
  "preview --stack") fail_if preview; if [[ " $* " != *" --expect-no-changes "* ]]; then mkdir -p build; echo PEM >"build/gitlab-ca-$3.pem"; fi ;;
  "destroy --stack") fail_if destroy ;;
  "cancel --stack" | "state unprotect") ;;
  *) echo "pulumi stub: unexpected: $*" >&2; exit 2 ;;
esac
"""

AWS_STUB = r"""#!/usr/bin/env bash
printf 'aws %s\n' "$*" >>"$CALLS"
state="$STUB_STATE"
case "$1 $2" in
  "resourcegroupstaggingapi get-resources")
    [[ -f "$state/tagging-error" ]] && { echo "AccessDeniedException: not authorized" >&2; exit 254; }
    # One listing per call: tagged-1, tagged-2, ... then the last one again.
    n="$(cat "$state/tag-calls" 2>/dev/null || echo 0)"; n=$((n + 1)); echo "$n" >"$state/tag-calls"
    file="$state/tagged-$n"; [[ -f "$file" ]] || file="$(ls "$state"/tagged-* 2>/dev/null | sort | tail -n 1)"
    if [[ -n "$file" && -s "$file" ]]; then paste -s "$file"; else echo ""; fi ;;
  "ec2 describe-instances") id="$6"; cat "$state/instance-$id" ;;
  "ec2 describe-tags") id="${6#Name=resource-id,Values=}"; if [[ -f "$state/exists-$id" ]]; then echo 2; else echo 0; fi ;;
  "ec2 delete-snapshot") : ;;
  "iam get-role") echo "An error occurred (NoSuchEntity) when calling the GetRole operation" >&2; exit 254 ;;
  "s3api list-object-versions")
    # One page per call: versions-1, versions-2, ... then nothing.
    n="$(cat "$state/version-calls" 2>/dev/null || echo 0)"; n=$((n + 1)); echo "$n" >"$state/version-calls"
    cat "$state/versions-$n" 2>/dev/null || echo '{}' ;;
  "s3api delete-objects") : ;;
  *) echo "aws stub: unexpected: $*" >&2; exit 2 ;;
esac
"""

# Stands in for venv/bin/python running the repository's tools: exit codes from a list per tool.
PYTHON_STUB = r"""#!/usr/bin/env bash
printf 'python %s\n' "$*" >>"$CALLS"
tool="${2#tools.}"
file="$STUB_STATE/$tool-exits"
[[ -f "$file" ]] || exit 0
code="$(head -n 1 "$file")"; tail -n +2 "$file" >"$file.next"; mv "$file.next" "$file"
[[ -n "$code" ]] || code=0
echo "$tool report (exit $code)"
exit "$code"
"""


@dataclass
class Lane:
    tmp: Path
    state: Path
    env: dict[str, str]

    def write(self, name: str, content: str) -> None:
        (self.state / name).write_text(content)

    def run(self, script: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(E2E / script)],
            capture_output=True,
            text=True,
            env={**self.env, **env},
            cwd=self.tmp / "checkout",
            timeout=60,
            check=False,
        )

    def calls(self) -> list[str]:
        path = self.tmp / "calls"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def lane(tmp_path: Path) -> Lane:
    bin_dir, state, checkout = tmp_path / "bin", tmp_path / "state", tmp_path / "checkout"
    for directory in (bin_dir, state, checkout):
        directory.mkdir()
    (checkout / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    for name, body in (("pulumi", PULUMI_STUB), ("aws", AWS_STUB), ("python", PYTHON_STUB)):
        (bin_dir / name).write_text(body)
    (bin_dir / "sleep").write_text('#!/usr/bin/env bash\nprintf "sleep %s\\n" "$*" >>"$CALLS"\n')
    for stub in bin_dir.iterdir():
        stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    (state / "config-workerCount").write_text("2")
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "CALLS": str(tmp_path / "calls"),
        "STUB_STATE": str(state),
        "CI_PIPELINE_ID": "4242",
        "E2E_DELIVERY": "pull",
        "PYTHON": str(bin_dir / "python"),
        "AWS_REGION": "us-east-1",
        "E2E_POLL_SECONDS": "30",
    }
    return Lane(tmp_path, state, env)


def pulumi_calls(lane: Lane) -> list[str]:
    return [call for call in lane.calls() if call.startswith("pulumi ")]


# --------------------------------------------------------------------------------------------
# lane.sh
# --------------------------------------------------------------------------------------------
POLICY = "--policy-pack policy --policy-pack-config policy/config.dev.json"
DAILY = "--exclude **::gitops-k8s-master-certificates"  # re-runs once a UTC day by design


def test_the_lane_runs_every_step_in_order_on_its_own_stack(lane: Lane) -> None:
    result = lane.run("lane.sh")
    assert result.returncode == 0, result.stderr
    assert lane.calls() == [
        f"pulumi stack select {STACK} --non-interactive",
        f"pulumi stack init {STACK} --copy-config-from dev --non-interactive",
        f"pulumi config set delivery pull --stack {STACK} --non-interactive",
        f"pulumi up --stack {STACK} --yes --non-interactive {POLICY}",
        f"python -m tools.doctor --stack {STACK}",
        f"python -m tools.gitops_loop --stack {STACK} --timeout 1800 --text This app is working: e2e 4242 (pull)",
        f"pulumi preview --stack {STACK} --expect-no-changes --non-interactive {POLICY} {DAILY}",
        f"pulumi config get workerCount --stack {STACK} --non-interactive",
        f"pulumi config set workerCount 3 --stack {STACK} --non-interactive",
        f"pulumi up --stack {STACK} --yes --non-interactive {POLICY}",
        f"python -m tools.doctor --stack {STACK}",
        f"pulumi preview --stack {STACK} --expect-no-changes --non-interactive {POLICY} {DAILY}",
    ]
    assert "the lane passed for e2e-4242-pull" in result.stderr


def test_push_mode_gets_its_own_stack_and_a_retried_job_reuses_it(lane: Lane) -> None:
    lane.write("stack", "")
    result = lane.run("lane.sh", E2E_DELIVERY="push", E2E_SECRETS_PROVIDER="awskms://alias/e2e")
    assert result.returncode == 0, result.stderr
    calls = lane.calls()
    assert calls[:2] == [
        "pulumi stack select e2e-4242-push --non-interactive",
        "pulumi config set delivery push --stack e2e-4242-push --non-interactive",
    ]
    assert "stack e2e-4242-push exists (a retried job): reusing it" in result.stderr


def test_a_new_stack_can_use_another_secrets_provider(lane: Lane) -> None:
    assert lane.run("lane.sh", E2E_SECRETS_PROVIDER="awskms://alias/e2e").returncode == 0
    assert (
        f"pulumi stack init {STACK} --copy-config-from dev --non-interactive --secrets-provider awskms://alias/e2e"
        in lane.calls()
    )


def test_day2_settings_are_applied_one_up_and_doctor_each(lane: Lane) -> None:
    result = lane.run("lane.sh", E2E_DAY2_SETTINGS="kubernetesVersion=1.37 gitlabImageTag=19.4.1-ce.0")
    assert result.returncode == 0, result.stderr
    calls = lane.calls()
    start = calls.index(f"pulumi config set kubernetesVersion 1.37 --stack {STACK} --non-interactive")
    assert calls[start + 1 : start + 4] == [
        f"pulumi up --stack {STACK} --yes --non-interactive {POLICY}",
        f"python -m tools.doctor --stack {STACK}",
        f"pulumi config set gitlabImageTag 19.4.1-ce.0 --stack {STACK} --non-interactive",
    ]
    assert calls[-1].startswith(f"pulumi preview --stack {STACK} --expect-no-changes")


def test_the_doctor_is_polled_until_it_passes(lane: Lane) -> None:
    lane.write("doctor-exits", "1\n1\n0\n")
    result = lane.run("lane.sh")
    assert result.returncode == 0, result.stderr
    calls = lane.calls()
    first_up = calls.index(f"pulumi up --stack {STACK} --yes --non-interactive {POLICY}")
    assert calls[first_up + 1 : first_up + 6] == [
        f"python -m tools.doctor --stack {STACK}",
        "sleep 30",
        f"python -m tools.doctor --stack {STACK}",
        "sleep 30",
        f"python -m tools.doctor --stack {STACK}",
    ]
    assert "doctor: attempt 1/61 failed, retrying in 30s" in result.stderr


def test_the_doctor_wait_is_bounded_and_says_so(lane: Lane) -> None:
    lane.write("doctor-exits", "1\n" * 10)
    result = lane.run("lane.sh", E2E_DOCTOR_TIMEOUT_SECONDS="90")
    assert result.returncode == 1
    assert [c for c in lane.calls() if "tools.doctor" in c] == [f"python -m tools.doctor --stack {STACK}"] * 4
    assert "doctor: still failing after 4 attempt(s)" in result.stderr
    assert "ERROR: the doctor still reports failures after 90s (last report above)" in result.stderr
    assert "doctor report (exit 1)" in result.stdout
    assert not [c for c in lane.calls() if "gitops_loop" in c]  # the lane stopped there


def test_a_failed_up_stops_the_lane(lane: Lane) -> None:
    lane.write("up", "1")
    result = lane.run("lane.sh")
    assert result.returncode != 0
    assert lane.calls()[-1] == f"pulumi up --stack {STACK} --yes --non-interactive {POLICY}"
    assert "error: up failed" in result.stderr


def test_a_change_on_the_second_run_fails_the_lane(lane: Lane) -> None:
    lane.write("preview", "1")
    result = lane.run("lane.sh")
    assert result.returncode == 1
    assert "a second run would change the stack (above): the program is not idempotent" in result.stderr
    assert not [c for c in lane.calls() if "workerCount" in c]


def test_a_gitops_loop_timeout_fails_the_lane(lane: Lane) -> None:
    lane.write("gitops_loop-exits", "1\n")
    result = lane.run("lane.sh", E2E_LOOP_TIMEOUT_SECONDS="600")
    assert result.returncode == 1
    assert lane.calls()[-1].startswith(f"python -m tools.gitops_loop --stack {STACK} --timeout 600 ")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"E2E_DELIVERY": "pulll"}, "E2E_DELIVERY is 'pulll'; expected pull or push"),
        ({"E2E_STACK": "dev"}, "refusing to work on stack 'dev': the lane only touches stacks named e2e-*"),
        ({"CI_PIPELINE_ID": ""}, "set E2E_STACK, or CI_PIPELINE_ID and E2E_DELIVERY"),
    ],
)
def test_the_scripts_refuse_any_stack_but_an_ephemeral_one(lane: Lane, env: dict[str, str], message: str) -> None:
    for script in ("lane.sh", "cleanup.sh", "leak-check.sh"):
        result = lane.run(script, **env)
        assert result.returncode == 1, script
        assert message in result.stderr, script
        assert not lane.calls(), script


# --------------------------------------------------------------------------------------------
# cleanup.sh and leak-check.sh
# --------------------------------------------------------------------------------------------
CLEAN_TAGS = (
    "aws resourcegroupstaggingapi get-resources --region us-east-1 --tag-filters Key=Project,Values=gitops "
    f"Key=Stack,Values={STACK} Key=ManagedBy,Values=pulumi --query ResourceTagMappingList[].ResourceARN --output text"
)


def test_cleanup_unprotects_this_stack_only_destroys_checks_leaks_then_removes_it(lane: Lane) -> None:
    lane.write("stack", "")
    lane.write("ca.pem", "-----BEGIN CERTIFICATE-----\n")
    result = lane.run("cleanup.sh")
    assert result.returncode == 0, result.stderr
    assert lane.calls() == [
        f"pulumi stack select {STACK} --non-interactive",
        f"pulumi cancel --stack {STACK} --yes --non-interactive",
        f"pulumi stack output gitlabCaPem --stack {STACK} --non-interactive",
        f"pulumi state unprotect --all --stack {STACK} --yes --non-interactive",
        f"pulumi stack output backupBucket --stack {STACK} --non-interactive",
        f"pulumi destroy --stack {STACK} --yes --non-interactive --continue-on-error",
        CLEAN_TAGS,
        f"pulumi stack rm {STACK} --yes --non-interactive",
    ]
    # The GitLab provider reads its CA from the file the program writes; a fresh checkout gets it back.
    ca = lane.tmp / "checkout" / ca_file_path(STACK)
    assert ca.read_text() == "-----BEGIN CERTIFICATE-----\n"


def test_cleanup_empties_the_backup_bucket_every_version_before_the_destroy(lane: Lane) -> None:
    lane.write("stack", "")
    lane.write("ca.pem", "-----BEGIN CERTIFICATE-----\n")
    lane.write("bucket", "gitops-e2e-4242-pull-backups-0123")
    version = '{"Key": "etcd/frequent/master/20261130T110000Z/snapshot.db", "VersionId": "v1"}'
    marker = '{"Key": "etcd/frequent/master/20261101T110000Z/SHA256SUMS", "VersionId": "v2"}'
    lane.write("versions-1", f'{{"Versions": [{version}], "DeleteMarkers": [{marker}]}}')
    result = lane.run("cleanup.sh")
    assert result.returncode == 0, result.stderr
    calls = lane.calls()
    bucket = "--bucket gitops-e2e-4242-pull-backups-0123"
    deletes = [call for call in calls if call.startswith("aws s3api delete-objects")]
    assert deletes == [
        f"aws s3api delete-objects {bucket} --delete "
        + '{"Objects": [{"Key": "etcd/frequent/master/20261130T110000Z/snapshot.db", "VersionId": "v1"}, '
        + '{"Key": "etcd/frequent/master/20261101T110000Z/SHA256SUMS", "VersionId": "v2"}], "Quiet": true}'
    ]
    # Listed until nothing is left, then destroyed.
    assert calls.index(deletes[0]) < calls.index(
        f"pulumi destroy --stack {STACK} --yes --non-interactive --continue-on-error"
    )
    assert len([call for call in calls if call.startswith("aws s3api list-object-versions")]) == 2
    assert "emptied the backup bucket" in result.stderr


def test_cleanup_lets_a_preview_write_the_ca_file_when_the_first_up_never_finished(lane: Lane) -> None:
    lane.write("stack", "")
    result = lane.run("cleanup.sh")
    assert result.returncode == 0, result.stderr
    calls = pulumi_calls(lane)
    assert calls[3] == f"pulumi preview --stack {STACK} --non-interactive"
    assert calls[4].startswith("pulumi state unprotect --all")
    assert (lane.tmp / "checkout" / ca_file_path(STACK)).exists()


def test_a_failed_destroy_is_retried_then_still_leak_checked_and_the_stack_kept(lane: Lane) -> None:
    lane.write("stack", "")
    lane.write("destroy", "2")
    lane.write("tagged-1", "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc\n")
    lane.write("instance-i-0abc", "running")
    result = lane.run("cleanup.sh", E2E_LEAK_TIMEOUT_SECONDS="60")
    assert result.returncode == 1
    calls = lane.calls()
    assert calls.count(f"pulumi destroy --stack {STACK} --yes --non-interactive --continue-on-error") == 2
    # The bucket is emptied before each attempt: a backup timer may have uploaded after the first.
    assert calls.count(f"pulumi stack output backupBucket --stack {STACK} --non-interactive") == 2
    assert CLEAN_TAGS in calls
    assert not [c for c in calls if c.startswith("pulumi stack rm")]
    assert f"stack {STACK} kept: its state still lists resources. Retry this job" in result.stderr
    assert "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc" in result.stderr


def test_a_destroy_that_passes_on_the_second_try_is_clean(lane: Lane) -> None:
    lane.write("stack", "")
    lane.write("ca.pem", "PEM")
    lane.write("destroy", "1")
    result = lane.run("cleanup.sh")
    assert result.returncode == 0, result.stderr
    assert "pulumi destroy: attempt 1/2 failed, retrying in 60s" in result.stderr
    assert lane.calls()[-1] == f"pulumi stack rm {STACK} --yes --non-interactive"


def test_cleanup_of_a_stack_never_created_still_runs_the_leak_check(lane: Lane) -> None:
    result = lane.run("cleanup.sh")
    assert result.returncode == 0, result.stderr
    assert lane.calls() == [f"pulumi stack select {STACK} --non-interactive", CLEAN_TAGS]
    assert "nothing to destroy" in result.stderr


def test_the_leak_check_fails_on_a_leftover_and_names_it(lane: Lane) -> None:
    vpc = "arn:aws:ec2:us-east-1:123456789012:vpc/vpc-0leak"
    lane.write("tagged-1", vpc + "\n")
    lane.write("exists-vpc-0leak", "")
    result = lane.run("leak-check.sh", E2E_LEAK_TIMEOUT_SECONDS="90")
    assert result.returncode == 1
    assert lane.calls().count(CLEAN_TAGS) == 4  # bounded: 90 s at 30 s intervals
    assert f"LEAK: 1 resource(s) tagged Stack={STACK} still exist after the destroy:\n  {vpc}\n" in result.stderr
    assert "Tag Editor with tag Stack=e2e-4242-pull" in result.stderr


def test_the_leak_check_waits_for_deletions_and_ignores_what_is_already_gone(lane: Lane) -> None:
    account = "arn:aws:ec2:us-east-1:123456789012"
    lane.write(
        "tagged-1",
        f"{account}:instance/i-0gone\n{account}:volume/vol-0deleting\n{account}:snapshot/snap-0backup\n"
        "arn:aws:iam::123456789012:role/gitlab-host-role-1a2b3c4\n",
    )
    lane.write("exists-vol-0deleting", "")  # first poll: the volume is still being deleted
    lane.write("instance-i-0gone", "terminated")  # the tagging API lists terminated instances for a while
    lane.write("tagged-2", f"{account}:instance/i-0gone\n")
    result = lane.run("leak-check.sh")
    assert result.returncode == 0, result.stderr
    calls = lane.calls()
    assert "aws ec2 delete-snapshot --region us-east-1 --snapshot-id snap-0backup" in calls
    assert "aws iam get-role --role-name gitlab-host-role-1a2b3c4 --query Role.RoleName --output text" in calls
    assert calls.count(CLEAN_TAGS) == 2
    assert "no leftover: every tagged resource of e2e-4242-pull is gone" in result.stderr


def test_the_leak_check_fails_when_the_tagging_api_cannot_be_read(lane: Lane) -> None:
    lane.write("tagging-error", "")
    result = lane.run("leak-check.sh", E2E_LEAK_TIMEOUT_SECONDS="0")
    assert result.returncode == 1
    assert "AccessDeniedException" in result.stderr
    assert "(the tagging API could not be read: the error is above)" in result.stderr


def test_the_scripts_pass_shellcheck() -> None:
    shellcheck = Path(os.environ.get("VIRTUAL_ENV", ROOT / "venv")) / "bin" / "shellcheck"
    shellcheck = shellcheck if shellcheck.exists() else ROOT / "venv" / "bin" / "shellcheck"
    scripts = sorted(E2E.glob("*.sh"))
    assert {s.name for s in scripts} == {"lib.sh", "lane.sh", "cleanup.sh", "leak-check.sh"}
    result = subprocess.run([str(shellcheck), "-x", *map(str, scripts)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for script in scripts:
        head = script.read_text().splitlines()
        assert head[0] == "#!/usr/bin/env bash"
        assert "set -euo pipefail" in script.read_text() or 'source "${HERE}/lib.sh"' in script.read_text()
