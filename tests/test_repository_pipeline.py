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
    assert "python3 -m tools.mr_note" in script
    assert preview["artifacts"]["paths"] == ["preview-$STACK.txt"]
    assert preview["resource_group"] == "pulumi-$STACK"
    assert preview["variables"]["AWS_ROLE_ARN"] == "$AWS_PREVIEW_ROLE_ARN"


def test_default_branch_deploys_dev_automatically_and_prod_by_hand() -> None:
    dev, prod = PIPELINE["deploy-dev"], PIPELINE["deploy-prod"]
    assert dev["rules"] == [{"if": DEFAULT_BRANCH}]
    assert prod["rules"] == [{"if": DEFAULT_BRANCH, "when": "manual"}]
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
