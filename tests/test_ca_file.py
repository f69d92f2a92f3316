"""The GitLab provider's CA file: real runs write it where the provider reads it; mocked runs never touch it.

A real `pulumi preview/up/refresh/destroy` configures the GitLab provider with
`cacert_file = build/gitlab-ca-<stack>.pem`, relative to the project directory where the CLI starts
the plugin. Tests, `make render` and `make cost` run the same program under mocks: they must not
replace that file with a mock CA, or the next real command would reject GitLab's certificate.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from components import gitlab_host
from tests.conftest import ADMIN
from tools import harness
from tools.harness import ROOT, run_fixture_stack


def _fingerprint(path: Path) -> tuple[bool, str, int]:
    if not path.exists():
        return False, "", 0
    return True, hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def test_a_mocked_run_leaves_the_projects_ca_file_alone() -> None:
    real = ROOT / gitlab_host.ca_file_path("dev")
    before = _fingerprint(real)
    run = run_fixture_stack("dev", ADMIN)
    assert _fingerprint(real) == before, "a mocked run rewrote build/gitlab-ca-dev.pem"
    provider = run.one("pulumi:providers:gitlab", "gitlab-gitlab").plain_inputs
    assert provider["cacertFile"] == "build/gitlab-ca-dev.pem"  # what state records: project-relative
    written = harness.provider_files_dir() / provider["cacertFile"]
    assert written.read_text() == run.outputs["gitlabCaPem"]
    assert ROOT not in written.parents


def test_the_harness_restores_the_environment_after_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    assert harness.PROVIDER_FILES_DIR_ENV == gitlab_host.PROVIDER_FILES_DIR_ENV
    monkeypatch.delenv(gitlab_host.PROVIDER_FILES_DIR_ENV, raising=False)
    run_fixture_stack("dev", ADMIN)
    assert gitlab_host.provider_files_dir() == gitlab_host.PROJECT_DIR  # a real run's default


def test_a_real_run_writes_the_file_under_the_project_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(gitlab_host.PROVIDER_FILES_DIR_ENV, raising=False)
    monkeypatch.setattr(gitlab_host, "PROJECT_DIR", tmp_path)  # stands for the checkout
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    assert gitlab_host.write_ca_file("build/gitlab-ca-dev.pem", pem) == "build/gitlab-ca-dev.pem"
    path = tmp_path / "build" / "gitlab-ca-dev.pem"
    assert path.read_text() == pem
    assert path.stat().st_mode & 0o777 == 0o644
    mtime = path.stat().st_mtime_ns
    gitlab_host.write_ca_file("build/gitlab-ca-dev.pem", pem)  # unchanged: not rewritten
    assert path.stat().st_mtime_ns == mtime
    assert list(path.parent.glob("*.tmp")) == []
