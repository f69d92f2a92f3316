"""This repository's own pipeline: preview on merge requests, up per stack, never unpinned."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())
MR = {"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'}
DEFAULT_BRANCH = "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"


def test_pipeline_passes_the_gitlab_ci_schema() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.gitlab-ci", str(ROOT / ".gitlab-ci.yml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_test_job_runs_ci_run() -> None:
    assert PIPELINE["test"]["script"] == ["bash .ci/run"]


def test_merge_requests_preview_every_stack_with_the_policy_pack() -> None:
    preview = PIPELINE["preview"]
    assert preview["rules"] == [MR]
    assert preview["parallel"]["matrix"] == [{"STACK": ["dev", "prod"]}]
    script = "\n".join(preview["script"])
    assert 'pulumi preview --stack "$STACK" --diff' in script
    assert '--policy-pack policy --policy-pack-config "policy/config.$STACK.json"' in script
    assert 'tee "build/preview-$STACK.txt"' in script
    assert (
        'python3 -m tools.mr_note --stack "$STACK" --file "build/preview-$STACK.txt" --cost "build/cost-$STACK.md"'
        in script
    )
    assert preview["artifacts"]["paths"] == ["build/preview-$STACK.txt", "build/cost-$STACK.md"]
    assert preview["resource_group"] == "pulumi-$STACK"
    assert preview["variables"]["AWS_ROLE_ARN"] == "$AWS_PREVIEW_ROLE_ARN"


def test_default_branch_deploys_dev_automatically_and_prod_by_hand() -> None:
    dev, prod = PIPELINE["deploy-dev"], PIPELINE["deploy-prod"]
    never_in_e2e = {"if": '$E2E_LANE == "true"', "when": "never"}
    assert dev["rules"] == [never_in_e2e, {"if": DEFAULT_BRANCH}], "an e2e pipeline never deploys dev"
    assert prod["rules"] == [never_in_e2e, {"if": DEFAULT_BRANCH, "when": "manual"}]
    assert prod["environment"]["name"] == "prod"
    for stack, job in (("dev", dev), ("prod", prod)):
        script = "\n".join(job["script"])
        assert f"pulumi up --stack {stack} --yes" in script
        assert f"--policy-pack policy --policy-pack-config policy/config.{stack}.json" in script
        assert job["resource_group"] == f"pulumi-{stack}"
        assert job["variables"]["AWS_ROLE_ARN"] == "$AWS_DEPLOY_ROLE_ARN"


def test_images_are_pinned_and_credentials_come_from_oidc() -> None:
    pulumi = PIPELINE[".pulumi"]
    assert pulumi["image"]["name"] == "pulumi/pulumi-python-3.12:3.272.0"
    assert pulumi["id_tokens"]["AWS_OIDC_TOKEN"]["aud"] == "sts.amazonaws.com"
    assert PIPELINE["test"]["image"].split(":")[1][0].isdigit()
    assert "AWS_SECRET_ACCESS_KEY" not in (ROOT / ".gitlab-ci.yml").read_text()


def test_merge_requests_get_each_stacks_cost_against_the_diff_base() -> None:
    script = "\n".join(PIPELINE["preview"]["script"])
    estimate = (
        'venv/bin/python -m tools.cost --stack "$STACK" --base-ref "$CI_MERGE_REQUEST_DIFF_BASE_SHA" '
        '--out "build/cost-$STACK.md"'
    )
    assert estimate in script
    # Before the preview, and never failing the job on its own: the note says when it is missing.
    assert script.index("tools.cost") < script.index("pulumi preview")
    assert '--out "build/cost-$STACK.md" || ' in script


def test_the_oidc_token_is_written_under_the_ignored_build_directory() -> None:
    pulumi = PIPELINE[".pulumi"]
    assert pulumi["variables"]["AWS_WEB_IDENTITY_TOKEN_FILE"] == "$CI_PROJECT_DIR/build/aws-oidc-token"
    assert 'mkdir -p "$CI_PROJECT_DIR/build"' in pulumi["before_script"]
    assert 'rm -f "$AWS_WEB_IDENTITY_TOKEN_FILE"' in pulumi["after_script"]
