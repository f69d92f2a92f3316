"""The e2e lane's jobs in .gitlab-ci.yml: never on merge requests, both modes, cleanup whatever happens."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from components import versions

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())
NEVER_ON_MR = {"if": '$CI_PIPELINE_SOURCE == "merge_request_event"', "when": "never"}
STARTED_ON_PURPOSE = '$E2E_LANE == "true" && ($CI_PIPELINE_SOURCE == "schedule" || $CI_PIPELINE_SOURCE == "web")'


def job(name: str) -> dict:
    """A job with its `extends` chain merged the way GitLab does (hashes deep-merged, the job wins)."""

    def merge(base: dict, over: dict) -> dict:
        merged = dict(base)
        for key, value in over.items():
            merged[key] = (
                merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
            )
        return merged

    definition = PIPELINE[name]
    parents = definition.get("extends", [])
    merged: dict = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        merged = merge(merged, job(parent))
    return merge(merged, {k: v for k, v in definition.items() if k != "extends"})


@pytest.mark.parametrize("mode", ["pull", "push"])
def test_each_mode_has_a_lane_and_a_cleanup_that_runs_whatever_the_lane_did(mode: str) -> None:
    lane, cleanup = job(f"e2e-{mode}"), job(f"e2e-cleanup-{mode}")
    assert lane["variables"]["E2E_DELIVERY"] == cleanup["variables"]["E2E_DELIVERY"] == mode
    assert lane["stage"] == "e2e" and cleanup["stage"] == "e2e-cleanup"
    assert PIPELINE["stages"][-2:] == ["e2e", "e2e-cleanup"]
    assert lane["script"] == ["bash ci/e2e/lane.sh"]
    assert cleanup["script"][-1] == 'PATH="/tmp/awscli/bin:$PATH" bash ci/e2e/cleanup.sh'
    # The cleanup waits for its own lane only, and runs when that lane failed (gitlab-org/gitlab#368733:
    # a job whose rule says `when: always` runs even when a job it needs failed).
    assert cleanup["needs"] == [f"e2e-{mode}"]
    assert cleanup["rules"] == [NEVER_ON_MR, {"if": STARTED_ON_PURPOSE, "when": "always"}]


@pytest.mark.parametrize("name", ["e2e-pull", "e2e-push", "e2e-cleanup-pull", "e2e-cleanup-push"])
def test_the_lane_runs_only_when_started_on_purpose_never_on_merge_requests(name: str) -> None:
    rules = job(name)["rules"]
    assert rules[0] == NEVER_ON_MR
    assert [rule["if"] for rule in rules[1:]] == [STARTED_ON_PURPOSE]
    assert "merge_request" not in STARTED_ON_PURPOSE


@pytest.mark.parametrize("name", ["e2e-pull", "e2e-cleanup-pull"])
def test_the_lane_uses_the_pulumi_template_and_its_own_role(name: str) -> None:
    merged = job(name)
    # The .pulumi template's pinned image, OIDC token and before_script (venv, policy venv, login).
    assert merged["image"] == PIPELINE[".pulumi"]["image"]
    assert merged["before_script"] == PIPELINE[".pulumi"]["before_script"]
    assert merged["id_tokens"] == PIPELINE[".pulumi"]["id_tokens"]
    assert merged["variables"]["AWS_ROLE_ARN"] == "$AWS_E2E_ROLE_ARN"
    for own in (".e2e", ".e2e-lane", ".e2e-cleanup", name):
        assert "image" not in PIPELINE[own]


def test_the_cleanup_installs_a_pinned_aws_cli_in_its_own_venv() -> None:
    install = job("e2e-cleanup-push")["script"][0]
    # The pin lives in components/versions.py with the others (REFERENCE.md section 1).
    assert install == (
        f"python -m venv /tmp/awscli && /tmp/awscli/bin/pip install --quiet awscli=={versions.AWS_CLI_VERSION}"
    )


def test_jobs_are_bounded_in_time() -> None:
    assert job("e2e-pull")["timeout"] == "3h"
    assert job("e2e-cleanup-pull")["timeout"] == "1h"
