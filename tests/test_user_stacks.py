"""The user's own stack files (Pulumi.<stack>.yaml in the project) are held to invariants only.

A user commits their settings (worker count, visibility, instance types, admin CIDRs) and CI runs
these tests before deploying: they must stay green for any valid edit. So nothing here asserts a
default's value; the program's own behaviour is tested against the fixture stacks
(tests/fixtures/stacks, tools/harness.py FIXTURE_STACKS). `make render` and `make cost` must show
the stack file as it is: its values (region included), stand-ins only for what it lacks, every
instance counted and either priced or said to be unpriced.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from policy.gitops_policies.common import INGRESS_TYPES, ingress_rules
from tests.conftest import ADMIN
from tools import cost, harness, render
from tools.harness import ROOT, ProgramRun, run_program
from tools.policy_runner import POLICY_DIR, analyze_program

USER_STACKS = sorted(path.name.split(".")[1] for path in ROOT.glob("Pulumi.*.yaml"))
# Exports that grant access: secret whatever the stack's settings.
SENSITIVE_OUTPUTS = (
    "gitlabRootPassword",
    "gitlabAdminPassword",
    "gitlabAdminToken",
    "gitlabAdminUserToken",
    "kubeconfig",
)
ADMIN_PORTS = (22, 443, 2222, 5050, 6443)


def _run_user_stack(stack: str, stack_dir: Path = ROOT) -> ProgramRun:
    """The stack as its file says; admin CIDRs only if the file has none (set on the user's machine)."""
    values = (yaml.safe_load((stack_dir / f"Pulumi.{stack}.yaml").read_text()) or {}).get("config") or {}
    overrides = {} if "gitops:adminCidrs" in values else ADMIN
    return run_program(stack, overrides, stack_dir=stack_dir)


def _assert_stack_invariants(stack: str, run: ProgramRun) -> None:
    config_file = POLICY_DIR / f"config.{stack}.json"
    report = analyze_program(run, config_file=config_file if config_file.exists() else None)
    assert report.mandatory == [], str(report)

    for name in SENSITIVE_OUTPUTS:
        assert name in run.outputs, name
        assert name in run.secret_outputs, f"{name} must be a secret output"

    for registration in run:
        if registration.type not in INGRESS_TYPES:
            continue
        for rule in ingress_rules(registration.type, registration.plain_inputs):
            world = any(ipaddress.ip_network(cidr, strict=False).prefixlen == 0 for cidr in rule.cidrs)
            opens_admin_port = any(rule.ports.low <= port <= rule.ports.high for port in ADMIN_PORTS)
            assert not (world and opens_admin_port), f"{registration.name} opens an admin port to the world"


def test_the_project_has_stack_files() -> None:
    assert USER_STACKS, "no Pulumi.<stack>.yaml in the project directory"


@pytest.mark.parametrize("stack", USER_STACKS)
def test_each_user_stack_runs_and_keeps_the_security_rules(stack: str) -> None:
    run = _run_user_stack(stack)
    _assert_stack_invariants(stack, run)
    _assert_operator_tools_show_it(stack, ROOT, run)


def _full_key(key: str) -> str:
    return key if ":" in key else f"gitops:{key}"


def _edited_copy(tmp_path: Path, stack: str, edits: dict[str, Any]) -> Path:
    shutil.copy(ROOT / f"Pulumi.{stack}.yaml", tmp_path / f"Pulumi.{stack}.yaml")
    path = tmp_path / f"Pulumi.{stack}.yaml"
    document = yaml.safe_load(path.read_text()) or {}
    document.setdefault("config", {}).update({_full_key(key): value for key, value in edits.items()})
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return tmp_path


# What a user typically commits first: more workers, a private project, bigger instances, their own CIDRs.
USER_EDITS = [
    {"workerCount": 3},
    {"workerCount": 1},
    {"projectVisibility": "private"},
    {"projectVisibility": "internal", "delivery": "push"},
    {"clusterIntegration": "certificate", "delivery": "push"},
    {"workerInstanceType": "m7i.large", "controlPlaneInstanceType": "m7i.large", "gitlabInstanceType": "m7i.xlarge"},
    {"adminCidrs": ["198.51.100.0/24", "203.0.113.9/32"], "appCidrs": ["192.0.2.0/24"]},
    {"availabilityZoneCount": 3, "workerCount": 5, "extraTags": ["CostCenter=platform"]},
    {"aws:region": "eu-west-3"},
    {"runnerMaxInstances": 4, "runnerInstanceType": "c6i.large", "runnerIdleCount": 1, "flowLogRetentionDays": 90},
]


def _config_value(text: str) -> Any:
    """A config string as the program receives it (numbers and lists as JSON) back to its value."""
    try:
        return json.loads(text)
    except ValueError:
        return text


@pytest.mark.parametrize("stack", USER_STACKS)
@pytest.mark.parametrize("edits", USER_EDITS, ids=lambda edits: ",".join(edits))
def test_a_users_valid_edit_keeps_the_stack_checks_green(tmp_path: Path, stack: str, edits: dict[str, Any]) -> None:
    stack_dir = _edited_copy(tmp_path, stack, edits)
    run = _run_user_stack(stack, stack_dir)
    for key, value in edits.items():
        assert _config_value(run.config[_full_key(key)]) == value, f"the edited {key} reached the program"
    _assert_stack_invariants(stack, run)
    _assert_operator_tools_show_it(stack, stack_dir, run)


def _assert_operator_tools_show_it(stack: str, stack_dir: Path, run: ProgramRun) -> None:
    """Render and cost describe the stack file as it is: its own values, stand-ins only for what it lacks."""
    values = (yaml.safe_load((stack_dir / f"Pulumi.{stack}.yaml").read_text()) or {}).get("config") or {}
    origin = render.config_origin(stack, {}, stack_dir)
    for key in values:
        assert origin.sources[key] == f"Pulumi.{stack}.yaml", key
        assert key not in origin.placeholders, key
    report = cost.estimate(run)
    assert report["region"] == (values.get("aws:region") or harness.DEFAULT_REGION)
    instances = sum(line["quantity"] for line in report["lines"] if line["key"].startswith("instance:"))
    # GitLab, control-plane nodes, workers, runner manager; the CI job VMs when idle: none.
    control_planes = _config_value(run.config.get("gitops:controlPlaneCount", "1"))
    assert instances == 2 + control_planes + _config_value(run.config["gitops:workerCount"])
    busy = sum(line["maximum"] for line in report["lines"] if line["key"].startswith("instance:"))
    assert busy == instances + _config_value(run.config["gitops:runnerMaxInstances"])
    for line in report["lines"]:  # priced, or saying why not: never a silent $0
        assert line["unit_price"] is not None or line["note"], line
