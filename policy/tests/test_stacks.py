"""The real program, run under mocks for each stack, passes its policy config; an insecure one does not."""

from __future__ import annotations

import ipaddress

import pytest

from policy.gitops_policies.common import INGRESS_TYPES, PortRange, ingress_rules
from policy.tests import resources as r
from tools.harness import ProgramRun, run_fixture_stack
from tools.policy_runner import analyze_program, from_program, stack_config_file

ADMIN = {"adminCidrs": ["203.0.113.7/32"]}
ADMIN_PORTS = [PortRange.parse(p) for p in ("22", "80", "443", "2222", "5050", "6443")]


@pytest.fixture(scope="module")
def runs() -> dict[str, ProgramRun]:
    return {stack: run_fixture_stack(stack, ADMIN) for stack in ("dev", "prod")}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_stack_passes_its_policy_config_with_no_violation_at_all(runs: dict[str, ProgramRun], stack: str) -> None:
    report = analyze_program(runs[stack], config_file=stack_config_file(stack))
    assert report.mandatory == [], str(report)
    assert report.advisory == [], str(report)


def test_every_registration_reaches_the_pack(runs: dict[str, ProgramRun]) -> None:
    run = runs["dev"]
    resources = from_program(run)
    assert [res.urn for res in resources[1:]] == [reg.urn for reg in run.registrations]
    assert resources[0].type == "pulumi:pulumi:Stack"
    assert resources[0].outputs is not None and resources[0].outputs.keys() == run.outputs.keys()


def _world_open_admin_rules(run: ProgramRun) -> list[str]:
    names = []
    for registration in run:
        if registration.type in INGRESS_TYPES:
            for rule in ingress_rules(registration.type, registration.plain_inputs):
                world = any(ipaddress.ip_network(c, strict=False).prefixlen == 0 for c in rule.cidrs)
                if world and any(rule.ports.overlaps(port) for port in ADMIN_PORTS):
                    names.append(registration.name)
    return names


def test_admin_cidrs_open_to_the_world_are_stopped() -> None:
    """`pulumi config set --path 'adminCidrs[0]' 0.0.0.0/0` passes config validation; the pack stops it."""
    run = run_fixture_stack("dev", {"adminCidrs": ["0.0.0.0/0"]})
    opened = _world_open_admin_rules(run)
    if not opened:
        pytest.skip("no component opens an admin port yet (the program registers only the network)")
    report = analyze_program(run, config_file=stack_config_file("dev"))
    stopped = {v.resource for v in report.mandatory if v.policy == "aws-admin-ports-restricted"}
    assert stopped == set(opened)
    assert report.blocks()


def test_a_public_project_is_stopped_on_prod() -> None:
    run = run_fixture_stack("prod", {**ADMIN, "projectVisibility": "public"})
    if not run.all("gitlab:index/project:Project"):
        pytest.skip("no component creates the GitLab project yet")
    report = analyze_program(run, config_file=stack_config_file("prod"))
    assert {v.policy for v in report.mandatory} >= {"gitlab-project-visibility"}


def test_the_insecure_variant_is_stopped_as_mandatory_violations() -> None:
    """Admin CIDRs open to the world, plus the two mistakes config cannot produce (added as resources)."""
    run = run_fixture_stack("dev", {"adminCidrs": ["0.0.0.0/0"]})
    unencrypted = r.volume("gitops-gitlab-data-restored", encrypted=False)
    latest = r.deployment("shark-app", spec=r.pod_spec(r.container(image="nginx:latest")))
    report = analyze_program(run, config_file=stack_config_file("dev"), extra=[unencrypted, latest])
    assert report.blocks()
    stopped = {(v.policy, v.resource) for v in report.mandatory}
    assert ("aws-ebs-volume-encrypted", "gitops-gitlab-data-restored") in stopped
    assert ("k8s-image-pinned", "shark-app") in stopped
    for name in _world_open_admin_rules(run):
        assert ("aws-admin-ports-restricted", name) in stopped
        assert ("aws-ingress-not-world-open", name) in stopped


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_dashboard_variant_passes_the_pack(stack: str) -> None:
    """kubernetesDashboard adds a project: private, as both stacks allow."""
    run = run_fixture_stack(stack, {**ADMIN, "kubernetesDashboard": True})
    report = analyze_program(run, config_file=stack_config_file(stack))
    assert report.mandatory == [] and report.advisory == [], str(report)
