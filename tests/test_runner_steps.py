"""The runner manager's steps, run under bash as they are sent (common.sh first) with stub commands.

The stubs record every call; apt and dpkg keep the installed versions in the state directory, so a
second run sees the first one's work, as on a real host. FS_ROOT points the files a step writes at
a scratch directory.
"""

from __future__ import annotations

import re
import stat
import tomllib
from pathlib import Path

import pytest

from components import runner_config
from components.gitlab_config import secret_bundle
from components.runners import DRAIN_SECONDS
from tests.stub_host import StubHost
from tests.test_runner_config import fleet

FINGERPRINT = "F6403F6544A38863DAA0B6E03F01618A51312F3F"
# `gpg --show-keys --with-colons`: the fingerprint is the 10th field of the fpr line.
GPG = 'printf "pub:-:4096:1:3F01618A51312F3F:::::::\\nfpr:::::::::%s:\\n" "$(cat "$STATE/fingerprint")"\n'
# apt-get install pkg=version: dpkg now knows that version.
APT_GET = r"""
for arg in "$@"; do
  case "$arg" in *=*) echo "${arg#*=}" >"$STATE/pkg-${arg%%=*}" ;; esac
done
"""
DPKG_QUERY = 'for last; do :; done\ncat "$STATE/pkg-$last" 2>/dev/null || exit 1\n'
CURL = 'while [ $# -gt 0 ]; do [ "$1" = -o ] && { echo key >"$2"; shift; }; shift; done\n'
# `gitlab-runner fleeting --config FILE install|list`, `verify --config FILE`, `--version`. The
# install keeps the configuration it was given; install-fails and verify-fails make them fail.
GITLAB_RUNNER = r"""
echo "$FLEETING_PLUGIN_PATH" >"$STATE/plugin-path"
case "$1" in
  --version) echo "Version: 19.4.1" ;;
  fleeting)
    if [ "$4" = install ]; then
      cp "$3" "$STATE/plugin-install-config" 2>/dev/null || true
      [ ! -f "$STATE/install-fails" ] || { echo "install/update error: registry.gitlab.com: i/o timeout" >&2; exit 1; }
    fi ;;
  verify) [ ! -f "$STATE/verify-fails" ] || { echo "ERROR: Verifying runner... is not valid" >&2; exit 1; } ;;
esac
"""
# A restart starts the service with the config.toml on disk at that moment: running-config is what
# the runner process then runs (autoscaler settings are read at start only).
SYSTEMCTL = r"""
case "$1" in
  is-active) [ -f "$STATE/active" ] ;;
  restart)
    touch "$STATE/active"
    cp "$FS_ROOT/etc/gitlab-runner/config.toml" "$STATE/running-config" 2>/dev/null || rm -f "$STATE/running-config" ;;
esac
"""
# GitLab answers unless gitlab-down is set.
CURL_MANAGER = 'case "$*" in *users/sign_in*) [ ! -f "$STATE/gitlab-down" ] || exit 7 ;; esac\n' + CURL
TOKEN = "glrt-t1_Zx8Kq2Lm4Np6Rs8Tv0Wy"
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
CA = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUYk0b\n-----END CERTIFICATE-----\n"


@pytest.fixture
def manager(tmp_path: Path) -> StubHost:
    host = StubHost(tmp_path)
    host.stub("apt-get", APT_GET).stub("apt-mark").stub("dpkg-query", DPKG_QUERY).stub("curl", CURL_MANAGER)
    host.stub("gpg", GPG).stub("gitlab-runner", GITLAB_RUNNER).stub("systemctl", SYSTEMCTL)
    host.set(fingerprint=FINGERPRINT)
    (host.root / "etc").mkdir(parents=True)
    (host.root / "etc/os-release").write_text("ID=debian\nVERSION_CODENAME=bookworm\n")
    return host


# ---- install-runner.sh -----------------------------------------------------------------------------
def install(host: StubHost, version: str = "19.4.1"):
    return host.run("runners/install-runner.sh", {"GITLAB_RUNNER_VERSION": version})


def test_the_pinned_runner_comes_from_gitlabs_repository_signed_by_its_key(manager: StubHost) -> None:
    result = install(manager)
    assert result.returncode == 0, result.stderr
    sources = (manager.root / "etc/apt/sources.list.d/gitlab-runner.list").read_text()
    assert sources == (
        "deb [signed-by=/etc/apt/keyrings/gitlab-runner.asc] https://packages.gitlab.com/runner/gitlab-runner/debian/"
        " bookworm main\n"
    )
    assert (manager.root / "etc/apt/keyrings/gitlab-runner.asc").exists()
    assert "curl -fsSL --max-time 60 -o" in "\n".join(manager.calls("curl"))
    assert any("https://packages.gitlab.com/gpgkey/gpg.key" in call for call in manager.calls("curl"))
    [install_call] = [call for call in manager.calls("apt-get") if "gitlab-runner=" in call]
    assert "gitlab-runner=19.4.1-1 gitlab-runner-helper-images=19.4.1-1" in install_call
    assert "--no-install-recommends" in install_call
    assert "apt-mark hold gitlab-runner gitlab-runner-helper-images" in manager.calls("apt-mark")
    assert manager.get("pkg-gitlab-runner").strip() == "19.4.1-1"


def test_a_second_run_installs_nothing_and_a_new_version_installs_it(manager: StubHost) -> None:
    assert install(manager).returncode == 0
    manager.clear_calls()
    result = install(manager)
    assert result.returncode == 0, result.stderr
    assert manager.calls("apt-get", "curl") == []
    assert "gitlab-runner 19.4.1-1 is installed" in result.stderr
    manager.clear_calls()
    assert install(manager, "19.5.0").returncode == 0
    assert any("gitlab-runner=19.5.0-1 gitlab-runner-helper-images=19.5.0-1" in c for c in manager.calls("apt-get"))


def test_a_key_with_another_fingerprint_installs_nothing(manager: StubHost) -> None:
    manager.set(fingerprint="0000000000000000000000000000000000000000")
    result = install(manager)
    assert result.returncode == 1
    assert f"not {FINGERPRINT}" in result.stderr
    assert not any("gitlab-runner=" in call for call in manager.calls("apt-get"))


def test_a_version_that_is_not_a_release_is_refused(manager: StubHost) -> None:
    result = install(manager, "alpine-v19.4.1")
    assert result.returncode == 1 and "is not a release such as 19.4.1" in result.stderr
    assert manager.calls("apt-get") == []


# ---- configure-runner.sh ---------------------------------------------------------------------------
def configure(
    host: StubHost, *, stdin: str | None = None, extra_env: dict[str, str] | None = None, **fleet_overrides: object
):
    toml = runner_config.to_toml(runner_config.manager_config(fleet(**fleet_overrides)))
    env = {
        "RUNNER_CONFIG_TOML": toml,
        "FLEETING_PLUGIN": runner_config.FLEETING_PLUGIN,
        "GITLAB_HOSTNAME": "gitlab.example.com",
        "GITLAB_CA_PEM": CA,
        "AWS_SHARED_CONFIG": runner_config.aws_shared_config("us-east-1"),
        "RUNNER_CONFIG_FILE": runner_config.CONFIG_FILE,
        "RUNNER_CA_FILE": runner_config.CA_FILE,
        "FLEETING_KEY_FILE": runner_config.FLEETING_KEY_FILE,
        "AWS_CONFIG_FILE": runner_config.AWS_CONFIG_FILE,
        "FLEETING_PLUGIN_PATH": runner_config.FLEETING_PLUGIN_PATH,
        "RUNNER_DRAIN_SECONDS": str(DRAIN_SECONDS),
        **(extra_env or {}),
    }
    bundle = secret_bundle({"runner_token": TOKEN, "fleeting_key": PRIVATE_KEY}) if stdin is None else stdin
    return host.run("runners/configure-runner.sh", env, stdin=bundle)


def file(host: StubHost, path: str) -> Path:
    return host.root / path.lstrip("/")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_configuration_lands_with_the_token_in_place_and_private_files_private(manager: StubHost) -> None:
    result = configure(manager)
    assert result.returncode == 0, result.stderr
    config = file(manager, runner_config.CONFIG_FILE)
    text = config.read_text()
    assert f'token = "{TOKEN}"' in text and "@@RUNNER_TOKEN@@" not in text
    assert 'executor = "docker-autoscaler"' in text
    assert mode(config) == 0o600
    key = file(manager, runner_config.FLEETING_KEY_FILE)
    assert key.read_text() == PRIVATE_KEY and mode(key) == 0o600
    assert mode(key.parent) == 0o700
    assert file(manager, runner_config.CA_FILE).read_text() == CA
    assert file(manager, runner_config.AWS_CONFIG_FILE).read_text() == "[default]\nregion = us-east-1\n"
    drop_in = file(manager, "/etc/systemd/system/gitlab-runner.service.d/gitops.conf").read_text()
    assert f"Environment=FLEETING_PLUGIN_PATH={runner_config.FLEETING_PLUGIN_PATH}\n" in drop_in
    assert "KillSignal=SIGQUIT\n" in drop_in and f"TimeoutStopSec={DRAIN_SECONDS}\n" in drop_in
    # SIGQUIT to the runner alone: the fleeting plugin (its child) must outlive the drain to delete
    # job VMs; systemd's default (control-group) would signal it too.
    assert "KillMode=mixed\n" in drop_in
    # Secrets never reach an argument list.
    log = "\n".join(manager.calls())
    assert TOKEN not in log and "OPENSSH PRIVATE KEY" not in log


def test_the_plugin_is_installed_then_the_runner_started_and_verified(manager: StubHost) -> None:
    assert configure(manager).returncode == 0
    calls = manager.calls("gitlab-runner", "systemctl")
    [install] = [
        call for call in calls if call.startswith("gitlab-runner fleeting --config ") and call.endswith(" install")
    ]
    [listed] = [
        call for call in calls if call.startswith("gitlab-runner fleeting --config ") and call.endswith(" list")
    ]
    assert calls.index(install) < calls.index(listed) < calls.index("systemctl daemon-reload")
    assert calls.index("systemctl daemon-reload") < calls.index("systemctl restart gitlab-runner.service")
    assert calls.index("systemctl restart gitlab-runner.service") < calls.index(
        f"gitlab-runner verify --config {runner_config.CONFIG_FILE}"
    )
    assert manager.get("plugin-path").strip() == runner_config.FLEETING_PLUGIN_PATH
    assert manager.calls("curl")  # GitLab answered through its name with the stack's CA
    # The runner process started with the file this run wrote.
    assert manager.get("running-config") == file(manager, runner_config.CONFIG_FILE).read_text()


def test_the_plugin_is_installed_from_a_configuration_naming_it_alone(manager: StubHost) -> None:
    """`fleeting install` reads the plugin names only (gitlab-runner commands/fleeting/fleeting.go
    getPlugins): the install needs neither the token nor the live config.toml."""
    assert configure(manager).returncode == 0
    document = tomllib.loads(manager.get("plugin-install-config"))
    assert document == {
        "runners": [
            {
                "name": "fleeting-plugin-install",
                "executor": "docker-autoscaler",
                "autoscaler": {"plugin": runner_config.FLEETING_PLUGIN},
            }
        ]
    }
    assert TOKEN not in manager.get("plugin-install-config")


def test_the_same_configuration_again_restarts_nothing(manager: StubHost) -> None:
    assert configure(manager).returncode == 0
    manager.clear_calls()
    result = configure(manager)
    assert result.returncode == 0, result.stderr
    assert "systemctl restart gitlab-runner.service" not in manager.calls()
    assert "configuration unchanged since the last successful run: gitlab-runner keeps running" in result.stderr


def test_a_capacity_change_rewrites_the_file_and_restarts_the_runner(manager: StubHost) -> None:
    assert configure(manager).returncode == 0
    manager.clear_calls()
    result = configure(manager, max_instances=4)
    assert result.returncode == 0, result.stderr
    assert "max_instances = 4" in file(manager, runner_config.CONFIG_FILE).read_text()
    assert "systemctl restart gitlab-runner.service" in manager.calls()
    assert "running jobs finish first" in result.stderr


# ---- converging on a retry (a run that failed leaves no runner on an old configuration) ---------------
RESTART = "systemctl restart gitlab-runner.service"


def test_a_first_run_that_failed_restarts_the_already_running_service_on_the_retry(manager: StubHost) -> None:
    """The package's post-install starts gitlab-runner before any configuration exists. A first run
    that fails (the plugin download here) must not leave that process running on the next, green, run:
    it never had the plugin path, nor the autoscaler settings, which are read at start only."""
    manager.set(active="", **{"install-fails": ""})
    failed = configure(manager)
    assert failed.returncode == 1 and "install/update error" in failed.stderr
    # Nothing live changed: the plugin comes before the configuration.
    assert not file(manager, runner_config.CONFIG_FILE).exists()
    assert RESTART not in manager.calls()
    (manager.state / "install-fails").unlink()
    manager.clear_calls()
    retried = configure(manager)
    assert retried.returncode == 0, retried.stderr
    assert RESTART in manager.calls()
    assert manager.get("running-config") == file(manager, runner_config.CONFIG_FILE).read_text()


def test_a_day_two_change_that_failed_is_applied_by_the_retry(manager: StubHost) -> None:
    """A capacity change in the same `up` as a GitLab upgrade: GitLab does not answer in time, the
    step fails; the next `up` runs it again with the same inputs and the runner restarts on them."""
    assert configure(manager).returncode == 0
    manager.set(**{"gitlab-down": ""})
    failed = configure(manager, max_instances=4, extra_env={"GITLAB_WAIT_SECONDS": "1"})
    assert failed.returncode == 1 and "timed out after 1s waiting for https://gitlab.example.com" in failed.stderr
    assert "max_instances = 2" in manager.get("running-config")
    (manager.state / "gitlab-down").unlink()
    manager.clear_calls()
    retried = configure(manager, max_instances=4)
    assert retried.returncode == 0, retried.stderr
    assert RESTART in manager.calls()
    assert "max_instances = 4" in manager.get("running-config")


def test_a_run_that_failed_after_the_restart_restarts_again_then_settles(manager: StubHost) -> None:
    """The marker of what was applied is written only once the service runs the files and GitLab
    accepted the token: a run that failed in between restarts on the retry, and a third run restarts nothing."""
    manager.set(**{"verify-fails": ""})
    assert configure(manager).returncode == 1
    assert not file(manager, "/var/lib/gitops/gitlab-runner-applied.sha256").exists()
    (manager.state / "verify-fails").unlink()
    manager.clear_calls()
    assert configure(manager).returncode == 0
    assert RESTART in manager.calls()
    marker = file(manager, "/var/lib/gitops/gitlab-runner-applied.sha256")
    assert re.fullmatch(r"[0-9a-f]{64}\n", marker.read_text()) and mode(marker) == 0o600
    manager.clear_calls()
    assert configure(manager).returncode == 0
    assert RESTART not in manager.calls()


def test_a_stopped_runner_is_started_even_when_its_configuration_was_applied(manager: StubHost) -> None:
    assert configure(manager).returncode == 0
    (manager.state / "active").unlink()
    manager.clear_calls()
    result = configure(manager)
    assert result.returncode == 0, result.stderr
    assert RESTART in manager.calls() and "it is not running" in result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FLEETING_PLUGIN": "aws:latest"}, "is not a pinned plugin reference such as aws:1.1.0"),
        ({"FLEETING_PLUGIN": "aws:1.0.1"}, "RUNNER_CONFIG_TOML does not name the plugin aws:1.0.1"),
        ({"GITLAB_WAIT_SECONDS": "10m"}, "GITLAB_WAIT_SECONDS 10m is not a number of seconds"),
    ],
)
def test_bad_parameters_change_nothing(manager: StubHost, env: dict[str, str], message: str) -> None:
    result = configure(manager, extra_env=env)
    assert result.returncode == 1 and message in result.stderr
    assert not file(manager, runner_config.CONFIG_FILE).exists()
    assert manager.calls("systemctl", "gitlab-runner") == []


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        (secret_bundle({"runner_token": TOKEN}), "stdin holds no fleeting_key"),
        (secret_bundle({"fleeting_key": PRIVATE_KEY}), "stdin holds no runner_token"),
        (
            secret_bundle({"runner_token": "GR1348941legacy", "fleeting_key": PRIVATE_KEY}),
            "is not a runner authentication token",
        ),
        ("runner_token not-base64!\n", "is not base64"),
    ],
)
def test_bad_stdin_writes_nothing(manager: StubHost, stdin: str, message: str) -> None:
    result = configure(manager, stdin=stdin)
    assert result.returncode == 1 and message in result.stderr
    assert not file(manager, runner_config.CONFIG_FILE).exists()
    assert manager.calls("systemctl") == []
