"""The GitLab host's steps, run under bash as they are sent (common.sh first) with stub commands.

The stubs (docker, systemctl, curl, the mount tools, sleep...) record every call in a file and
answer from a small state directory; HOST_ROOT points the steps' host paths at a scratch
directory. The tests assert what a real host would see happen: which commands run, in which
order, and that a second run with the same inputs does nothing.
"""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.gitlab_config import gitlab_version, secret_bundle, upgrade_stop_tags, upgrade_stops
from components.remote import step_script

VOLUME_ID = "vol-0123abcd"
HOSTNAME = "gitlab.example.com"

# Each stub logs "<name> <args>" to $CALLS, then behaves as the state directory $STATE says. What a
# real GitLab container would do is modelled where the step depends on it: a start (systemctl
# restart) runs the image gitlab.env names, whose reconfigure writes the Rails VERSION file to the
# data volume; nginx serves the certificate file it read at its last start or HUP (served-<port>).
SERVE_CERTIFICATE = r"""
serve() {
  for cert in "$HOST_ROOT"/srv/gitlab/config/ssl/*.crt; do
    cp "$cert" "$STATE/served-443"; cp "$cert" "$STATE/served-5050"
  done
}
"""
STUBS = {
    "docker": SERVE_CERTIFICATE
    + r"""
for last; do :; done
case "$1" in
  image)
    case "$2" in
      inspect) grep -qxF "$3" "$STATE/images" 2>/dev/null ;;
      ls) cat "$STATE/images" 2>/dev/null ;;
      rm) grep -vxF "$3" "$STATE/images" >"$STATE/images.new"; mv "$STATE/images.new" "$STATE/images" ;;
    esac ;;
  pull) [ -f "$STATE/pull-fails" ] && exit 1; echo "$3" >>"$STATE/images" ;;
  logs) echo "gitlab Reconfigured!" ;;
  inspect)
    case "$last:$*" in
      gitlab-runner:*) echo true ;;
      *State.Running*) if [ -f "$STATE/active" ]; then echo true; else echo false; fi ;;
      *Config.Image*) cat "$STATE/running-image" 2>/dev/null ;;
    esac ;;
  run) exit 0 ;;
  exec)
    shift
    [ "$1" = "-i" ] && shift
    shift  # the container
    case "$1" in
      curl) exit 0 ;;
      gitlab-ctl)
        if [ "$2" = hup ]; then
          [ -f "$STATE/hup-fails" ] && exit 1
          serve
        fi
        exit 0 ;;
      gitlab-rails)
        if [ "$3" = "-e" ]; then  # the Sidekiq-based migrations check
          echo "DEPRECATION WARNING: noise"
          cat "$STATE/sidekiq" 2>/dev/null || echo 0
          exit 0
        fi
        cat >"$STATE/runner-stdin"; cat "$STATE/runner-output" ;;
      gitlab-psql)
        running="$(sed 's/.*://; s/-ce.*//' "$STATE/running-image" 2>/dev/null)"
        { [ -f "$STATE/psql-fails" ] || [ -f "$STATE/psql-fails-$running" ]; } && exit 1
        case "$4" in
          *"status = 4"*) cat "$STATE/failed-$running" 2>/dev/null || cat "$STATE/failed" 2>/dev/null || echo 0 ;;
          *)
            left="$(cat "$STATE/pending" 2>/dev/null || echo 0)"
            echo "$left"
            [ "$left" -gt 0 ] && echo $((left - 1)) >"$STATE/pending"
            exit 0 ;;
        esac ;;
    esac ;;
esac
""",
    "systemctl": SERVE_CERTIFICATE
    + r"""
case "$1" in
  is-active) [ -f "$STATE/active" ] ;;
  restart)
    touch "$STATE/active"
    image="$(sed -n 's/^GITLAB_IMAGE=//p' "$HOST_ROOT/etc/gitops/gitlab.env")"
    echo "$image" >"$STATE/running-image"
    serve
    if [ ! -f "$STATE/reconfigure-fails" ]; then
      version="${image#*:}"
      mkdir -p "$HOST_ROOT/srv/gitlab/data/gitlab-rails"
      echo "${version%%-ce*}" >"$HOST_ROOT/srv/gitlab/data/gitlab-rails/VERSION"
    fi ;;
esac
exit $?
""",
    "openssl": r"""
command="$1"
shift
case "$command" in
  s_client)
    while [ $# -gt 0 ]; do [ "$1" = -connect ] && port="${2##*:}"; shift; done
    cat "$STATE/served-$port" 2>/dev/null ;;
  x509)
    file=""
    while [ $# -gt 0 ]; do [ "$1" = -in ] && file="$2"; shift; done
    if [ -n "$file" ]; then pem="$(cat "$file")"; else pem="$(cat)"; fi
    [ -n "$pem" ] || exit 1
    # The first certificate of the chain, as openssl x509 reads it.
    echo "sha256 Fingerprint=$(printf '%s\n' "$pem" | sed -n '1,/END CERTIFICATE/p' | sha256sum | cut -c1-16)" ;;
esac
""",
    "curl": r"""
for arg in "$@"; do [ "$arg" = "--write-out" ] && { echo 401; exit 0; }; done
exit 0
""",
    "blkid": r"""
case "$*" in
  *TYPE*) echo ext4 ;;
  *UUID*) echo 1b4e28ba-2fa1-11d2-883f-0016d3cca427 ;;
esac
""",
    "mountpoint": '[ -f "$STATE/mounted" ]\n',
    "mount": 'touch "$STATE/mounted"\n',
    "findmnt": 'cat "$STATE/device"\n',
    "mkfs.ext4": "exit 0\n",
    "cloud-init": "exit 0\n",
    "ssh-keygen": 'echo "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPublicHalfOf $4"\n',
    "sleep": "exit 0\n",
}


@dataclass
class Host:
    """A scratch GitLab host: its root, the stubs' state and the log of their calls."""

    root: Path
    state: Path
    bin: Path
    calls_file: Path

    def calls(self) -> list[str]:
        return self.calls_file.read_text().splitlines() if self.calls_file.exists() else []

    def clear_calls(self) -> None:
        self.calls_file.write_text("")

    def run(self, script: str, env: dict[str, str], stdin: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", step_script(script), script],
            input=stdin,
            env={
                "PATH": f"{self.bin}:{os.environ['PATH']}",
                "STEP_NAME": script,
                "HOST_ROOT": str(self.root),
                "STATE": str(self.state),
                "CALLS": str(self.calls_file),
                **env,
            },
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )


@pytest.fixture
def host(tmp_path: Path) -> Host:
    root, state, bin_dir = tmp_path / "root", tmp_path / "state", tmp_path / "bin"
    for directory in (root, state, bin_dir):
        directory.mkdir()
    device = root / "dev/disk/by-id" / f"nvme-Amazon_Elastic_Block_Store_{VOLUME_ID.replace('-', '')}"
    device.parent.mkdir(parents=True)
    device.write_text("")
    (state / "device").write_text(f"{device}\n")
    (root / "etc").mkdir()
    (root / "etc/fstab").write_text("")
    for name, body in STUBS.items():
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >>"$CALLS"\n{body}')
        stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    return Host(root, state, bin_dir, tmp_path / "calls")


# ---- install.sh ------------------------------------------------------------------------------------
SECRETS = secret_bundle(
    {
        "tls_key": "-----BEGIN EC PRIVATE KEY-----\nkey-1\n-----END EC PRIVATE KEY-----\n",
        "ssh_host_ed25519_key": "ed25519-private",
        "ssh_host_ecdsa_key": "ecdsa-private",
        "ssh_host_rsa_key": "rsa-private",
        "root_password": "Root-Passw0rd-123",
        "registry_backup_password": "Registry-Backup-1",
        "registry_restore_password": "Registry-Restore-1",
    }
)


def install_env(tag: str = "19.4.1-ce.0", **overrides: str) -> dict[str, str]:
    env = {
        "GITLAB_HOSTNAME": HOSTNAME,
        "GITLAB_IMAGE": f"gitlab/gitlab-ce:{tag}",
        "GITLAB_VERSION": gitlab_version(tag),
        "GITLAB_UPGRADE_STOPS": upgrade_stops(),
        "GITLAB_UPGRADE_STOP_TAGS": upgrade_stop_tags(),
        "DATA_VOLUME_ID": VOLUME_ID,
        "GITLAB_CA_PEM": "-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n",
        "GITLAB_TLS_CERT": "-----BEGIN CERTIFICATE-----\nserver-1\n-----END CERTIFICATE-----\n",
        "GITLAB_OMNIBUS_CONFIG": f"external_url 'https://{HOSTNAME}'\n",
    }
    return {**env, **overrides}


def install(host: Host, **env: str) -> subprocess.CompletedProcess[str]:
    return host.run("gitlab/install.sh", install_env(**env), SECRETS)


def volume_ran(host: Host, version: str, *, running: bool = True, postgresql: str = "17") -> None:
    """The data volume as GitLab `version` left it (and, if running, its container up)."""
    data = host.root / "srv/gitlab/data"
    (data / "gitlab-rails").mkdir(parents=True, exist_ok=True)
    (data / "gitlab-rails/VERSION").write_text(f"{version}\n")
    (data / "postgresql/data").mkdir(parents=True, exist_ok=True)
    (data / "postgresql/data/PG_VERSION").write_text(f"{postgresql}\n")
    (host.state / "mounted").write_text("")
    if running:
        (host.state / "active").write_text("")
        (host.state / "running-image").write_text(f"gitlab/gitlab-ce:{version}-ce.0\n")
    else:
        (host.state / "active").unlink(missing_ok=True)
        (host.state / "running-image").unlink(missing_ok=True)


def restarts(calls: list[str]) -> list[str]:
    return [call for call in calls if call.startswith("systemctl restart")]


def reloads(calls: list[str]) -> list[str]:
    return [call for call in calls if "gitlab-ctl hup" in call]


def test_first_install_places_everything_starts_gitlab_once_and_a_second_run_does_nothing(host: Host) -> None:
    first = install(host)
    assert first.returncode == 0, first.stderr
    assert restarts(host.calls()) == ["systemctl restart gitlab.service"]
    assert "docker pull --quiet gitlab/gitlab-ce:19.4.1-ce.0" in host.calls()
    config = host.root / "srv/gitlab/config"
    assert (config / f"ssl/{HOSTNAME}.crt").read_text() == install_env()["GITLAB_TLS_CERT"]
    assert (config / f"ssl/{HOSTNAME}.key").stat().st_mode & 0o777 == 0o600
    assert (host.root / "etc/gitops/gitlab.env").read_text() == "GITLAB_IMAGE=gitlab/gitlab-ce:19.4.1-ce.0\n"
    assert (host.root / "etc/gitops/gitlab-omnibus.rb").read_text() == install_env()["GITLAB_OMNIBUS_CONFIG"]
    assert "UUID=1b4e28ba-2fa1-11d2-883f-0016d3cca427 /srv/gitlab ext4" in (host.root / "etc/fstab").read_text()
    assert not (config / "pulumi_initial_root_password").exists(), "the root password seed is deleted"
    # The registry database's backup roles: root-only, kept (Omnibus reads them at every reconfigure).
    assert (config / "pulumi_registry_backup_password").read_text() == "Registry-Backup-1"
    assert (config / "pulumi_registry_restore_password").stat().st_mode & 0o777 == 0o600
    # A new volume: nothing to compare with, no background migrations to wait for.
    assert not any("gitlab-psql" in call for call in host.calls())

    host.clear_calls()
    second = install(host)
    assert second.returncode == 0, second.stderr
    assert restarts(host.calls()) == [] and reloads(host.calls()) == []
    assert not any(call.startswith(("docker pull", "mkfs", "mount ")) for call in host.calls())
    assert "GitLab's configuration is unchanged" in second.stderr


def served(host: Host, port: int) -> str:
    """The certificate nginx serves on a port, as the stubs model it."""
    path = host.state / f"served-{port}"
    return path.read_text() if path.exists() else ""


def running_image(host: Host) -> str:
    return (host.state / "running-image").read_text().strip()


def test_a_renewed_certificate_reloads_nginx_without_a_restart(host: Host) -> None:
    assert install(host).returncode == 0
    host.clear_calls()
    renewed = "-----BEGIN CERTIFICATE-----\nserver-2\n-----END CERTIFICATE-----\n"
    result = install(host, GITLAB_TLS_CERT=renewed)
    assert result.returncode == 0, result.stderr
    calls = host.calls()
    assert restarts(calls) == []
    # nginx terminates TLS for 443 and the registry's 5050 (registry_nginx): one HUP loads both;
    # the registry process itself speaks plain HTTP behind it, so it has nothing to reload.
    assert reloads(calls) == ["docker exec gitlab gitlab-ctl hup nginx"]
    assert (host.root / f"srv/gitlab/config/ssl/{HOSTNAME}.crt").read_text() == renewed
    assert served(host, 443) == served(host, 5050) == renewed
    # The reload comes from comparing what nginx serves with the file, on both ports...
    assert any(call.startswith("openssl s_client -connect 127.0.0.1:5050") for call in calls)
    # ...and the step still checks that GitLab serves before it reports success.
    assert calls.index("docker exec gitlab gitlab-ctl hup nginx") < max(
        i for i, call in enumerate(calls) if call.startswith("curl")
    )


def test_a_reload_that_failed_once_is_made_by_the_next_run(host: Host) -> None:
    """Review finding M1: the reload follows what nginx serves, not whether the file just changed."""
    assert install(host).returncode == 0
    renewed = "-----BEGIN CERTIFICATE-----\nserver-2\n-----END CERTIFICATE-----\n"
    (host.state / "hup-fails").write_text("")
    failed = install(host, GITLAB_TLS_CERT=renewed)
    assert failed.returncode == 1
    assert "nginx still serves another certificate" in failed.stderr
    (host.state / "hup-fails").unlink()
    host.clear_calls()
    retry = install(host, GITLAB_TLS_CERT=renewed)  # the file is already in place
    assert retry.returncode == 0, retry.stderr
    assert reloads(host.calls()) == ["docker exec gitlab gitlab-ctl hup nginx"]
    assert served(host, 443) == served(host, 5050) == renewed


def test_rerun_after_failed_hup_still_reloads(host: Host) -> None:
    """The review's reproduction of M1 (its stub switch is the hup-fails state file here)."""
    assert install(host).returncode == 0
    volume_ran(host, "19.4.1")
    cert = "-----BEGIN CERTIFICATE-----\nserver-2\n-----END CERTIFICATE-----\n"
    (host.state / "hup-fails").write_text("")
    assert install(host, GITLAB_TLS_CERT=cert).returncode != 0
    (host.state / "hup-fails").unlink()
    host.clear_calls()
    assert install(host, GITLAB_TLS_CERT=cert).returncode == 0
    assert reloads(host.calls())


def test_a_configuration_change_restarts_and_does_not_bother_to_reload(host: Host) -> None:
    assert install(host).returncode == 0
    host.clear_calls()
    result = install(
        host,
        GITLAB_OMNIBUS_CONFIG="external_url 'https://gitlab.example.com'\nnginx['x'] = 1\n",
        GITLAB_TLS_CERT="-----BEGIN CERTIFICATE-----\nserver-2\n-----END CERTIFICATE-----\n",
    )
    assert result.returncode == 0, result.stderr
    assert restarts(host.calls()) == ["systemctl restart gitlab.service"]
    assert reloads(host.calls()) == []


def test_a_restart_waits_for_a_running_gitlab_backup_and_gives_up_without_restarting(host: Host) -> None:
    assert install(host).returncode == 0
    host.clear_calls()
    lock = host.root / "var/lib/gitops/backups/gitlab-backup.lock"
    changed = "external_url 'https://gitlab.example.com'\nnginx['x'] = 1\n"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # the daily backup is running gitlab-backup create
        result = install(host, GITLAB_OMNIBUS_CONFIG=changed, BACKUP_LOCK_WAIT_SECONDS="1")
    assert result.returncode == 1
    assert "a GitLab backup or restore is running" in result.stderr and "GitLab was not restarted" in result.stderr
    assert restarts(host.calls()) == []
    # Nothing changed either: the re-run still sees the change and restarts.
    assert (host.root / "etc/gitops/gitlab-omnibus.rb").read_text() != changed
    # Once the backup has finished, the next run restarts.
    assert install(host, GITLAB_OMNIBUS_CONFIG=changed).returncode == 0
    assert restarts(host.calls()) == ["systemctl restart gitlab.service"]


def test_a_new_gitlab_ca_restarts_the_whole_container_so_kas_trusts_it(host: Host) -> None:
    """KAS calls GitLab's API over its external URL and trusts /etc/gitlab/trusted-certs, but a
    reconfigure restarts only puma, pages and workhorse for a new trusted certificate
    (omnibus-gitlab add_trusted_certs.rb): the step restarts the container, whose reconfigure
    re-creates every service after linking the certificates (docker/assets/init-container)."""
    assert install(host).returncode == 0
    host.clear_calls()
    new_ca = "-----BEGIN CERTIFICATE-----\nca-2\n-----END CERTIFICATE-----\n"
    result = install(host, GITLAB_CA_PEM=new_ca)
    assert result.returncode == 0, result.stderr
    assert restarts(host.calls()) == ["systemctl restart gitlab.service"]
    assert (host.root / "srv/gitlab/config/trusted-certs/gitops-gitlab-ca.crt").read_text() == new_ca
    assert not any("gitlab-ctl reconfigure" in call for call in host.calls())


def test_gitlab_running_another_image_than_wanted_is_restarted(host: Host) -> None:
    """The decision follows the running container, not the files: gitlab.env may already be right."""
    assert install(host).returncode == 0
    (host.state / "running-image").write_text("gitlab/gitlab-ce:19.4.1-ce.1\n")
    host.clear_calls()
    result = install(host)
    assert result.returncode == 0, result.stderr
    assert restarts(host.calls()) == ["systemctl restart gitlab.service"]
    assert running_image(host) == "gitlab/gitlab-ce:19.4.1-ce.0"


@pytest.mark.parametrize(
    ("previous", "tag", "stops", "unpinned", "path"),
    [
        ("18.5.3", "19.4.1-ce.0", "18.8 18.11 19.2", "18.8", "18.5.3 -> 18.8.x -> 18.11.11 -> 19.2.4 -> 19.4.1"),
        ("19.2.4", "19.6.0-ce.0", "19.5", "19.5", "19.2.4 -> 19.5.x -> 19.6.0"),
        ("19.4.1", "19.9.0-ce.0", "19.5 19.8", "19.5 19.8", "19.4.1 -> 19.5.x -> 19.8.x -> 19.9.0"),
    ],
)
def test_a_jump_across_a_stop_without_a_pinned_release_is_refused_before_anything_stops(
    host: Host, previous: str, tag: str, stops: str, unpinned: str, path: str
) -> None:
    volume_ran(host, previous)
    result = install(host, tag=tag)
    assert result.returncode == 1
    assert f"crosses the required upgrade stop(s) {stops}" in result.stderr
    assert f"pins no release for {unpinned} (components/versions.py" in result.stderr
    assert f"Path: {path}." in result.stderr
    assert "Nothing was stopped." in result.stderr
    calls = host.calls()
    assert restarts(calls) == [] and not any(call.startswith(("docker pull", "systemctl stop")) for call in calls)
    assert not (host.root / "etc/gitops/gitlab.env").exists(), "no file changed either"


def test_the_old_default_walks_to_the_new_one_through_the_pinned_stop_in_one_run(host: Host) -> None:
    """Review finding M3: a stack on 18.11.12 (the previous default) takes the new default in one `up`."""
    assert install(host, tag="18.11.12-ce.0").returncode == 0
    volume_ran(host, "18.11.12")
    (host.state / "pending").write_text("1\n")
    host.clear_calls()
    result = install(host, tag="19.4.1-ce.0")
    assert result.returncode == 0, result.stderr
    assert "18.11.12 -> 19.2.4 -> 19.4.1" in result.stderr
    calls = host.calls()
    # One restart per hop, each on its pinned image, each image pulled before its hop changes anything.
    assert restarts(calls) == ["systemctl restart gitlab.service"] * 2
    first, second = (i for i, call in enumerate(calls) if call == "systemctl restart gitlab.service")
    assert calls.index("docker pull --quiet gitlab/gitlab-ce:19.2.4-ce.0") < first
    assert first < calls.index("docker pull --quiet gitlab/gitlab-ce:19.4.1-ce.0") < second
    # Every hop waits for the running version's background migrations before it stops it, and for
    # the new version's after it serves.
    queries = [i for i, call in enumerate(calls) if "gitlab-psql" in call and "NOT IN (3, 6)" in call]
    assert queries[0] < first and any(first < i < second for i in queries) and queries[-1] > second
    assert result.stderr.count("no pre-upgrade hook") == 2
    assert "upgrade 18.11.12 19.2.4" in result.stderr and "upgrade 19.2.4 19.4.1" in result.stderr
    assert (host.root / "srv/gitlab/data/gitlab-rails/VERSION").read_text() == "19.4.1\n"
    assert (host.root / "etc/gitops/gitlab.env").read_text() == "GITLAB_IMAGE=gitlab/gitlab-ce:19.4.1-ce.0\n"
    assert not (host.root / "srv/gitlab/.gitops-upgrade-in-progress").exists()
    # The older images are removed from the root disk once they no longer run.
    assert (host.state / "images").read_text().split() == ["gitlab/gitlab-ce:19.4.1-ce.0"]

    host.clear_calls()
    again = install(host, tag="19.4.1-ce.0")
    assert again.returncode == 0 and restarts(host.calls()) == []


def test_a_failing_hop_stops_the_walk_there_and_a_retry_continues_from_it(host: Host) -> None:
    assert install(host, tag="18.11.12-ce.0").returncode == 0
    volume_ran(host, "18.11.12")
    # GitLab 19.2.4 starts, then one of its batched background migrations fails.
    (host.state / "failed-19.2.4").write_text("1\n")
    host.clear_calls()
    failed = install(host, tag="19.4.1-ce.0")
    assert failed.returncode == 1
    assert "1 batched background migration(s) failed" in failed.stderr
    assert restarts(host.calls()) == ["systemctl restart gitlab.service"], "the walk stopped at 19.2.4"
    assert running_image(host) == "gitlab/gitlab-ce:19.2.4-ce.0"
    assert (host.root / "etc/gitops/gitlab.env").read_text() == "GITLAB_IMAGE=gitlab/gitlab-ce:19.2.4-ce.0\n"
    assert "GitLab 19.4.1 serves" not in failed.stderr

    (host.state / "failed-19.2.4").write_text("0\n")  # the operator retried it in Admin > Monitoring
    host.clear_calls()
    retry = install(host, tag="19.4.1-ce.0")
    assert retry.returncode == 0, retry.stderr
    assert "upgrading GitLab 19.2.4 -> 19.4.1 (no required upgrade stop in between)" in retry.stderr
    assert restarts(host.calls()) == ["systemctl restart gitlab.service"]
    assert running_image(host) == "gitlab/gitlab-ce:19.4.1-ce.0"
    assert (host.root / "srv/gitlab/data/gitlab-rails/VERSION").read_text() == "19.4.1\n"


def test_a_walk_from_before_18_11_takes_both_pinned_stops(host: Host) -> None:
    volume_ran(host, "18.8.9", postgresql="17")
    result = install(host, tag="19.4.1-ce.0")
    assert result.returncode == 0, result.stderr
    assert "18.8.9 -> 18.11.11 -> 19.2.4 -> 19.4.1" in result.stderr
    assert restarts(host.calls()) == ["systemctl restart gitlab.service"] * 3


def test_rerun_after_failed_pre_upgrade_migration_still_upgrades(host: Host) -> None:
    """The review's reproduction of B1, verbatim."""
    assert install(host, tag="19.2.4-ce.0").returncode == 0
    volume_ran(host, "19.2.4")
    (host.state / "failed").write_text("1\n")
    assert install(host, tag="19.4.1-ce.0").returncode == 1  # refused, as designed
    (host.state / "failed").write_text("0\n")  # operator retries the migration
    host.clear_calls()
    assert install(host, tag="19.4.1-ce.0").returncode == 0  # "then run pulumi up again"
    assert restarts(host.calls()) == ["systemctl restart gitlab.service"]


@pytest.mark.parametrize("failure", ["pull", "hook", "migration"])
def test_an_upgrade_refused_before_the_restart_changes_no_file_and_the_retry_upgrades(host: Host, failure: str) -> None:
    """Review finding B1: the pull, the migration wait and the hook come before any file is written."""
    assert install(host, tag="19.2.4-ce.0").returncode == 0
    volume_ran(host, "19.2.4")
    hook = host.root / "etc/gitops/hooks/pre-gitlab-upgrade"
    hook.parent.mkdir(parents=True)
    hook.write_text(f'#!/bin/sh\n[ -f "{host.state}/hook-fails" ] && exit 1\nexit 0\n')
    hook.chmod(0o755)
    switch = {"pull": "pull-fails", "hook": "hook-fails", "migration": "failed"}[failure]
    (host.state / switch).write_text("1\n")
    files = {path: path.read_bytes() for path in (host.root / "etc").rglob("*") if path.is_file()}
    host.clear_calls()
    refused = install(host, tag="19.4.1-ce.0")
    assert refused.returncode == 1
    assert restarts(host.calls()) == []
    assert {path: path.read_bytes() for path in files} == files, "no file changed"
    assert running_image(host) == "gitlab/gitlab-ce:19.2.4-ce.0"

    (host.state / switch).unlink()
    host.clear_calls()
    retry = install(host, tag="19.4.1-ce.0")
    assert retry.returncode == 0, retry.stderr
    assert restarts(host.calls()) == ["systemctl restart gitlab.service"]
    assert running_image(host) == "gitlab/gitlab-ce:19.4.1-ce.0"
    assert "GitLab 19.4.1 serves https://" in retry.stderr


def test_the_step_fails_when_the_started_gitlab_does_not_run_the_wanted_version(host: Host) -> None:
    """Review finding B1.3: the last log line can never claim a version that is not running."""
    assert install(host, tag="19.2.4-ce.0").returncode == 0
    volume_ran(host, "19.2.4")
    (host.state / "reconfigure-fails").write_text("")
    result = install(host, tag="19.4.1-ce.0")
    assert result.returncode == 1
    assert "says 19.2.4, not 19.4.1" in result.stderr
    assert "GitLab 19.4.1 serves" not in result.stderr


@pytest.mark.parametrize(
    ("previous", "tag"), [("19.4.1", "19.2.4-ce.0"), ("19.4.1", "19.4.0-ce.0"), ("19.2.4", "18.11.12-ce.0")]
)
def test_a_downgrade_is_refused(host: Host, previous: str, tag: str) -> None:
    volume_ran(host, previous)
    result = install(host, tag=tag)
    assert result.returncode == 1
    assert f"refusing to downgrade GitLab: {VOLUME_ID} was last run by GitLab {previous}" in result.stderr
    assert restarts(host.calls()) == []


@pytest.mark.parametrize("tag", ["19.2.4-ce.0", "19.4.1-ce.0"])
def test_gitlab_19_is_refused_on_postgresql_16_with_the_way_out(host: Host, tag: str) -> None:
    volume_ran(host, "18.11.12", postgresql="16")
    result = install(host, tag=tag)
    assert result.returncode == 1
    assert "GitLab 19 requires PostgreSQL 17" in result.stderr
    assert "gitlab-ctl pg-upgrade -V 17" in result.stderr
    assert restarts(host.calls()) == [] and not any(call.startswith("docker pull") for call in host.calls())


def test_an_upgrade_to_the_next_stop_waits_for_migrations_before_and_after(host: Host) -> None:
    assert install(host, tag="19.2.4-ce.0").returncode == 0
    volume_ran(host, "19.2.4")
    (host.state / "pending").write_text("2\n")
    host.clear_calls()
    result = install(host, tag="19.4.1-ce.0")
    assert result.returncode == 0, result.stderr
    calls = host.calls()
    restart = calls.index("systemctl restart gitlab.service")
    queries = [i for i, call in enumerate(calls) if "gitlab-psql" in call and "NOT IN (3, 6)" in call]
    # GitLab 19.2's migrations are finished (polled until zero) before it is stopped...
    assert queries and queries[0] < restart
    assert "upgrading GitLab 19.2.4 -> 19.4.1" in result.stderr
    assert "no backup is taken before this upgrade" in result.stderr
    # ...and 19.4's after it serves again; then the upgrade is over.
    assert any(i > restart for i in queries)
    assert "every background migration has finished" in result.stderr
    assert not (host.root / "srv/gitlab/.gitops-upgrade-in-progress").exists()
    assert (host.root / "etc/gitops/gitlab.env").read_text() == "GITLAB_IMAGE=gitlab/gitlab-ce:19.4.1-ce.0\n"


def test_the_older_sidekiq_based_migrations_are_waited_for_too(host: Host) -> None:
    """Review finding m4: doc/update/background_migrations.md checks both kinds."""
    assert install(host, tag="19.2.4-ce.0").returncode == 0
    volume_ran(host, "19.2.4")
    (host.state / "sidekiq").write_text("3\n")
    host.clear_calls()
    result = install(host, tag="19.4.1-ce.0")
    assert result.returncode == 1, "they never finish here"
    assert "3 Sidekiq-based left" in result.stderr
    assert restarts(host.calls()) == []
    sidekiq_checks = [call for call in host.calls() if "gitlab-rails runner -e production" in call]
    assert sidekiq_checks and "Gitlab::BackgroundMigration" in sidekiq_checks[0]
    assert "respond_to?(:remaining)" in sidekiq_checks[0], "a release without the method has none left"


def test_the_pre_upgrade_check_needs_only_the_database_not_the_web_ui(host: Host) -> None:
    """Review finding m3: a failing readiness probe (the registry, say) no longer skips the check."""
    assert install(host, tag="19.2.4-ce.0").returncode == 0
    volume_ran(host, "19.2.4")
    (host.state / "failed").write_text("1\n")
    curl = host.bin / "curl"
    curl.write_text(curl.read_text().replace("echo 401", "echo 502"))  # the registry is down
    result = install(host, tag="19.4.1-ce.0")
    assert result.returncode == 1
    assert "1 batched background migration(s) failed" in result.stderr
    assert restarts(host.calls()) == ["systemctl restart gitlab.service"], "only the first install's start"


@pytest.mark.parametrize("cause", ["not running", "database silent"])
def test_an_upgrade_whose_migrations_cannot_be_checked_is_refused_unless_the_operator_says_so(
    host: Host, cause: str
) -> None:
    assert install(host, tag="19.2.4-ce.0").returncode == 0
    volume_ran(host, "19.2.4", running=cause != "not running")
    if cause == "database silent":
        (host.state / "psql-fails-19.2.4").write_text("")  # GitLab 19.2.4's PostgreSQL does not answer
    host.clear_calls()
    refused = install(host, tag="19.4.1-ce.0")
    assert refused.returncode == 1
    assert "its background migrations cannot be checked before the upgrade to 19.4.1" in refused.stderr
    assert "sudo touch /etc/gitops/gitlab-upgrade-skip-migration-check" in refused.stderr
    assert "Nothing was stopped." in refused.stderr
    assert restarts(host.calls()) == []

    override = host.root / "etc/gitops/gitlab-upgrade-skip-migration-check"
    override.write_text("")
    accepted = install(host, tag="19.4.1-ce.0")
    assert accepted.returncode == 0, accepted.stderr
    assert "without checking its background migrations" in accepted.stderr
    assert not override.exists(), "used once"


def test_a_failed_background_migration_stops_the_upgrade_with_directions(host: Host) -> None:
    assert install(host, tag="19.2.4-ce.0").returncode == 0
    volume_ran(host, "19.2.4")
    (host.state / "failed").write_text("1\n")
    result = install(host, tag="19.4.1-ce.0")
    assert result.returncode == 1
    assert "1 batched background migration(s) failed" in result.stderr
    assert "Admin > Monitoring > Background migrations" in result.stderr
    assert restarts(host.calls()) == ["systemctl restart gitlab.service"], "only the first install's start"


def test_the_pre_upgrade_hook_runs_with_both_versions_before_gitlab_stops(host: Host) -> None:
    assert install(host, tag="19.2.4-ce.0").returncode == 0
    volume_ran(host, "19.2.4")
    hook = host.root / "etc/gitops/hooks/pre-gitlab-upgrade"
    hook.parent.mkdir(parents=True)
    # The hook's backup takes the backup lock itself: install.sh must not hold it yet (a 3-hour stall).
    lock = host.root / "var/lib/gitops/backups/gitlab-backup.lock"
    hook.write_text(
        f'#!/bin/sh\nmkdir -p "{lock.parent}"\nflock --nonblock "{lock}" true && echo "hook $*" >>"{host.calls_file}"\n'
    )
    hook.chmod(0o755)
    host.clear_calls()
    assert install(host, tag="19.4.1-ce.0").returncode == 0
    calls = host.calls()
    assert calls.index("hook 19.2.4 19.4.1") < calls.index("systemctl restart gitlab.service")


def test_a_patch_release_within_a_minor_is_an_ordinary_upgrade(host: Host) -> None:
    assert install(host, tag="19.4.0-ce.0").returncode == 0
    volume_ran(host, "19.4.0")
    host.clear_calls()
    result = install(host, tag="19.4.1-ce.0")
    assert result.returncode == 0, result.stderr
    assert restarts(host.calls()) == ["systemctl restart gitlab.service"]


# ---- seed-admin-token.sh ---------------------------------------------------------------------------
def seed(host: Host, changed: str, cache_seconds: int = 60) -> subprocess.CompletedProcess[str]:
    (host.state / "runner-output").write_text(
        f"DEPRECATION WARNING: noise\nexpires_at=2027-11-29\nsettings_changed={changed}\n"
        f"settings_cache_seconds={cache_seconds}\n"
    )
    return host.run("gitlab/seed-admin-token.sh", {"GITLAB_HOSTNAME": HOSTNAME}, "puts 'the program'\n")


def slept(calls: list[str]) -> int:
    return sum(int(call.split()[1]) for call in calls if call.startswith("sleep "))


def test_changed_settings_are_waited_out_past_every_workers_cache(host: Host) -> None:
    result = seed(host, "yes")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "expires_at=2027-11-29\n", "stdout carries the expiry only"
    # Settings (60 s) and feature flags (60 s) plus a margin, in heartbeats a user can see.
    assert slept(host.calls()) == 70
    assert result.stderr.count("dropped its cached settings") >= 4
    assert (host.state / "runner-stdin").read_text() == "puts 'the program'\n", "the program went to stdin"


def test_a_longer_configured_settings_cache_is_waited_out_too(host: Host) -> None:
    assert seed(host, "yes", cache_seconds=300).returncode == 0
    assert slept(host.calls()) == 310


def test_settings_already_in_place_cost_no_wait(host: Host) -> None:
    result = seed(host, "no")
    assert result.returncode == 0, result.stderr
    assert slept(host.calls()) == 0
    assert "nothing to wait for" in result.stderr


def test_a_seeding_program_that_reports_nothing_fails_the_step(host: Host) -> None:
    (host.state / "runner-output").write_text("expires_at=2027-11-29\n")
    result = host.run("gitlab/seed-admin-token.sh", {"GITLAB_HOSTNAME": HOSTNAME}, "puts 1\n")
    assert result.returncode == 1
    assert "printed no settings_changed line" in result.stderr


# ---- remove-runner.sh ------------------------------------------------------------------------------
# What the removal step queries and removes, with a Docker whose objects live in $STATE files.
REMOVAL_DOCKER = r"""#!/bin/sh
echo "docker $*" >>"$CALLS"
case "$1 $2" in
  "container inspect") [ -f "$STATE/runner-container" ] ;;
  "rm --force")
    if [ "$3" = gitlab-runner ]; then rm -f "$STATE/runner-container"; else rm -f "$STATE/job-containers"; fi ;;
  "ps --all") cat "$STATE/job-containers" 2>/dev/null || true ;;
  "volume ls") cat "$STATE/job-volumes" 2>/dev/null || true ;;
  "volume rm") rm -f "$STATE/job-volumes" ;;
  "network ls") cat "$STATE/job-networks" 2>/dev/null || true ;;
  "network rm") rm -f "$STATE/job-networks" ;;
  "image ls") cat "$STATE/images" 2>/dev/null || true ;;
  "image rm")
    shift 3
    for image in "$@"; do
      case "$image" in
        *"<none>"*) echo "Error response from daemon: invalid reference format" >&2; exit 1 ;;
      esac
      # By ID or by repository:tag; $STATE/images holds `ID REPOSITORY TAG` lines.
      awk -v ref="$image" '$1 != ref && $2 ":" $3 != ref' "$STATE/images" >"$STATE/images.new"
      mv "$STATE/images.new" "$STATE/images"
    done ;;
esac
"""
GITLAB_IMAGE = "gitlab/gitlab-ce:19.4.1-ce.0"
RUNNER_IMAGES = [
    "gitlab/gitlab-runner:alpine-v19.4.1",
    "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v19.4.1",
]
# An older runner image a newer pull of the same tag left untagged: removable by its ID only.
UNTAGGED_RUNNER_IMAGE = "5d3c1b2a9e8f gitlab/gitlab-runner <none>"


def image_lines(*refs: str) -> str:
    """`docker image ls --format '{{.ID}} {{.Repository}} {{.Tag}}'` for these images."""
    lines = []
    for number, ref in enumerate(refs):
        repository, tag = ref.rsplit(":", 1)
        lines.append(f"{number:012x} {repository} {tag}")
    return "\n".join(lines) + "\n"


def host_with_the_old_runner(host: Host) -> Host:
    """A GitLab host as register-runner.sh left it: unit, container, config, job leftovers, images."""
    (host.bin / "docker").write_text(REMOVAL_DOCKER)
    unit = host.root / "etc/systemd/system/gitlab-runner.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/usr/bin/docker run --rm --name gitlab-runner gitlab/gitlab-runner\n")
    (host.root / "etc/gitlab-runner/certs").mkdir(parents=True)
    (host.root / "etc/gitlab-runner/config.toml").write_text('token = "glrt-old"\n')
    (host.root / "etc/gitops").mkdir(parents=True)
    (host.root / "etc/gitops/gitlab-runner.env").write_text("GITLAB_RUNNER_IMAGE=gitlab/gitlab-runner:alpine-v19.4.1\n")
    (host.root / "etc/gitops/gitlab.env").write_text(f"GITLAB_IMAGE={GITLAB_IMAGE}\n")
    (host.state / "runner-container").write_text("")
    (host.state / "job-containers").write_text("3f2a\n9c1d\n")
    (host.state / "job-volumes").write_text("runner-abc-cache-1\n")
    (host.state / "job-networks").write_text("runner-abc-network\n")
    (host.state / "images").write_text(image_lines(GITLAB_IMAGE, *RUNNER_IMAGES) + UNTAGGED_RUNNER_IMAGE + "\n")
    return host


def test_the_old_runner_is_removed_and_gitlab_is_left_alone(host: Host) -> None:
    host_with_the_old_runner(host)
    result = host.run("gitlab/remove-runner.sh", {}, "")
    assert result.returncode == 0, result.stderr
    calls = host.calls()
    assert "systemctl disable --now --quiet gitlab-runner.service" in calls
    assert calls.index("systemctl disable --now --quiet gitlab-runner.service") < calls.index(
        "docker rm --force gitlab-runner"
    )
    assert "docker rm --force --volumes 3f2a 9c1d" in calls
    assert "docker volume rm --force runner-abc-cache-1" in calls
    assert "docker network rm runner-abc-network" in calls
    assert f"docker image rm --force {' '.join(RUNNER_IMAGES)} 5d3c1b2a9e8f" in calls
    assert not (host.root / "etc/systemd/system/gitlab-runner.service").exists()
    assert not (host.root / "etc/gitlab-runner").exists()
    assert not (host.root / "etc/gitops/gitlab-runner.env").exists()
    # GitLab itself: its image, its env file and its container are untouched.
    assert (host.state / "images").read_text() == image_lines(GITLAB_IMAGE)
    assert (host.root / "etc/gitops/gitlab.env").exists()
    assert not any(" gitlab " in f" {call} " and call.startswith("docker rm") for call in calls)
    assert "removed from the GitLab host: the gitlab-runner.service unit, the gitlab-runner container" in result.stderr
    assert "3 runner image(s)" in result.stderr


def test_removing_the_runner_twice_or_from_a_new_host_changes_nothing(host: Host) -> None:
    host_with_the_old_runner(host)
    assert host.run("gitlab/remove-runner.sh", {}, "").returncode == 0
    host.clear_calls()
    result = host.run("gitlab/remove-runner.sh", {}, "")
    assert result.returncode == 0, result.stderr
    changes = [c for c in host.calls() if c.startswith(("systemctl disable", "docker rm", "docker volume rm"))]
    changes += [c for c in host.calls() if c.startswith(("docker network rm", "docker image rm"))]
    assert changes == []
    assert "no runner on this host: nothing to remove" in result.stderr
