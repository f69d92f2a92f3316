"""The pack itself: what the CLI runs, what every policy declares, and that every policy is tested."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy import EnforcementLevel, ResourceValidationPolicy, StackValidationPolicy

from policy.gitops_policies import ALL_POLICIES, PACK_NAME, POLICIES_BY_NAME
from policy.tests import test_aws, test_backups, test_gitlab, test_kubernetes, test_runners, test_stack
from policy.tests.cases import Case
from tools.policy_runner import analyze, pack_config, stack_config_file

POLICY_DIR = Path(__file__).resolve().parents[1]
ROOT = POLICY_DIR.parent
ALL_CASES = [
    *test_aws.CASES,
    *test_kubernetes.CASES,
    *test_gitlab.CASES,
    *test_runners.CASES,
    *test_stack.CASES,
    *test_backups.CASES,
]


def test_the_pack_has_at_least_twenty_uniquely_named_policies() -> None:
    names = [policy.name for policy in ALL_POLICIES]
    assert len(names) >= 20
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name) for name in names)


@pytest.mark.parametrize("policy", ALL_POLICIES, ids=lambda p: p.name)
def test_every_policy_is_mandatory_described_and_says_how_to_fix_it(policy: Any) -> None:
    assert policy.enforcement_level == EnforcementLevel.MANDATORY
    assert len(policy.description) > 40
    assert policy.description.endswith((".", ")"))
    assert policy.remediation_steps and len(policy.remediation_steps) > 30
    assert policy.severity is not None


@pytest.mark.parametrize("policy", ALL_POLICIES, ids=lambda p: p.name)
def test_every_policy_has_a_failing_and_a_passing_case(policy: Any) -> None:
    cases = [case for case in ALL_CASES if case.policy == policy.name]
    assert cases, f"no test case for {policy.name}"
    assert all(case.bad and case.good for case in cases)


def test_there_are_stack_policies_for_what_no_single_resource_shows() -> None:
    stack = {p.name for p in ALL_POLICIES if isinstance(p, StackValidationPolicy)}
    assert stack == {
        "credential-outputs-secret",
        "k8s-secret-data-generated",
        "k8s-service-account-tokens",
        "gitlab-signup-disabled",
        "gitlab-host-runs-no-runner",
        "aws-vpc-flow-logs-and-closed-default-group",
        "backups-enabled",
    }
    assert all(isinstance(p, ResourceValidationPolicy) for p in ALL_POLICIES if p.name not in stack)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_stack_config_files_name_real_policies_and_validate(stack: str) -> None:
    path = stack_config_file(stack)
    config = pack_config(path)  # raises on an unknown policy or a value the schema refuses
    assert set(yaml.safe_load(path.read_text())) <= set(POLICIES_BY_NAME)
    assert all(c.enforcement_level == "mandatory" for c in config.values())


def test_prod_allows_only_private_or_internal_projects() -> None:
    prod = pack_config(stack_config_file("prod"))["gitlab-project-visibility"].properties
    assert sorted(prod["allowedVisibilities"]) == ["internal", "private"]


def test_the_public_port_matches_the_programs_app_node_port() -> None:
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    node_port = project["config"]["appNodePort"]["default"]
    for stack in ("dev", "prod"):
        assert pack_config(stack_config_file(stack))["aws-ingress-not-world-open"].properties["publicPorts"] == [
            node_port
        ]


def test_pulumi_policy_yaml_runs_python_in_its_own_virtualenv() -> None:
    project = yaml.safe_load((POLICY_DIR / "PulumiPolicy.yaml").read_text())
    assert project["runtime"]["name"] == "python"
    assert project["runtime"]["options"]["virtualenv"] == "venv"
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])


def test_requirements_pin_the_sdk_the_tests_run() -> None:
    requirements = (POLICY_DIR / "requirements.txt").read_text()
    assert re.search(r"^pulumi-policy>=1\.21\.0,<1\.22\.0$", requirements, re.MULTILINE)
    assert importlib.metadata.version("pulumi-policy").startswith("1.21.")


def test_main_serves_every_policy_of_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run policy/__main__.py as the CLI does (runpy on the directory) with the server replaced."""
    served: dict[str, Any] = {}

    class RecordingPack:
        def __init__(self, **kwargs: Any) -> None:
            served.update(kwargs)

    import pulumi_policy

    monkeypatch.setattr(pulumi_policy, "PolicyPack", RecordingPack)
    try:
        runpy.run_path(str(POLICY_DIR), run_name="__main__")
    finally:
        for module in [m for m in sys.modules if m == "gitops_policies" or m.startswith("gitops_policies.")]:
            del sys.modules[module]
    assert served["name"] == PACK_NAME
    assert served["enforcement_level"] == EnforcementLevel.MANDATORY
    assert [p.name for p in served["policies"]] == [p.name for p in ALL_POLICIES]


def test_only_main_constructs_a_policy_pack() -> None:
    """Constructing PolicyPack starts a gRPC server and blocks: nothing importable may do it."""
    constructors = []
    for path in [*POLICY_DIR.rglob("*.py"), *(ROOT / "tools").rglob("*.py")]:
        if "venv" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if name == "PolicyPack":
                    constructors.append(path.relative_to(ROOT).as_posix())
    assert constructors == ["policy/__main__.py"]


def test_the_pack_serves_the_engine_over_grpc() -> None:
    """Start the pack as the CLI's pulumi-analyzer-policy-python shim does and talk to it as the engine."""
    server = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:0", str(POLICY_DIR)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()  # PolicyPack prints the port it listens on
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            analyzer = analyzer_pb2_grpc.AnalyzerStub(channel)
            info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
            assert info.name == PACK_NAME
            assert [p.name for p in info.policies] == [p.name for p in ALL_POLICIES]
            assert {p.enforcementLevel for p in info.policies} == {analyzer_pb2.MANDATORY}

            properties = struct_pb2.Struct()
            properties.update(
                {"ipProtocol": "tcp", "fromPort": 22, "toPort": 22, "cidrIpv4": "0.0.0.0/0", "description": "ssh"}
            )
            response = analyzer.Analyze(
                analyzer_pb2.AnalyzeRequest(
                    type="aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
                    name="gitlab-ssh",
                    urn="urn:pulumi:dev::gitops::aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule::gitlab-ssh",
                    properties=properties,
                ),
                timeout=30,
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
    mandatory = {d.policyName for d in response.diagnostics if d.enforcementLevel == analyzer_pb2.MANDATORY}
    assert {"aws-ingress-not-world-open", "aws-admin-ports-restricted"} <= mandatory


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.test_id)
def test_the_mistake_is_a_mandatory_violation(case: Case) -> None:
    report = analyze(case.bad, config=case.config)
    found = [v for v in report.mandatory if v.policy == case.policy]
    assert found, f"{case.policy} did not fire:\n{report}"
    assert any(case.expect in v.message for v in found), "\n".join(v.message for v in found)


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.test_id)
def test_the_compliant_resource_passes_the_whole_pack(case: Case) -> None:
    report = analyze(case.good, config=case.config)
    assert report.violations == (), str(report)
