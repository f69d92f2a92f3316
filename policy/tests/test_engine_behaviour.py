"""How the pack behaves under the engine: preview unknowns, secrets, configuration, enforcement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policy.tests import resources as r
from tools.policy_runner import UNKNOWN, analyze, pack_config, secret

WORLD_SSH = r.ingress_rule("gitops-gitlab-ssh", 22, cidr="0.0.0.0/0")


def test_an_unknown_decisive_value_turns_the_policy_advisory_during_preview() -> None:
    """A source CIDR computed from another resource is unknown at preview: the SDK cannot decide."""
    rule = r.ingress_rule("gitops-gitlab-ssh", 22, cidr=UNKNOWN)
    report = analyze([rule])
    world_open = report.of("aws-ingress-not-world-open")
    assert [v.level for v in world_open] == ["advisory"]
    assert "can't run policy 'aws-ingress-not-world-open'" in world_open[0].message
    assert "string value at .cidrIpv4 can't be known during preview" in world_open[0].message
    assert not report.blocks()


def test_an_unknown_value_the_decision_does_not_need_keeps_the_policy_mandatory() -> None:
    """The group id is unknown at preview (the group is created in the same run); the CIDR is config."""
    rule = r.ingress_rule("gitops-gitlab-ssh", 22, cidr="0.0.0.0/0")
    rule.inputs["securityGroupId"] = UNKNOWN
    report = analyze([rule])
    assert [v.level for v in report.of("aws-ingress-not-world-open")] == ["mandatory"]
    assert report.advisory == []


def test_a_group_source_unknown_at_preview_is_still_a_group() -> None:
    rule = r.ingress_rule("gitops-cluster-kubelet", 10250, cidr=None, group=UNKNOWN)
    assert analyze([rule]).violations == ()


def test_secret_inputs_reach_policies_unwrapped() -> None:
    """The engine sends secrets marked; the SDK strips the marker, so secret user data is still scanned."""
    leaky = r.instance(userData=secret("#!/bin/bash\nkubeadm join --token abcdef.0123456789abcdef\n"))
    assert [v.policy for v in analyze([leaky]).mandatory] == ["aws-user-data-no-secrets"]


def test_ports_arrive_as_floats_and_still_match() -> None:
    rule = r.ingress_rule("gitops-workers-app", 30000, cidr="0.0.0.0/0", description="app NodePort")
    rule.inputs.update(fromPort=30000.0, toPort=30000.0)
    assert analyze([rule]).violations == ()


def test_a_config_file_can_downgrade_every_policy_to_advisory(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"all": "advisory"}))
    report = analyze([WORLD_SSH], config_file=config)
    assert report.violations and not report.blocks()


def test_a_policy_can_be_disabled_by_name() -> None:
    report = analyze([WORLD_SSH], config={"aws-ingress-not-world-open": {"enforcementLevel": "disabled"}})
    assert report.of("aws-ingress-not-world-open") == []
    assert report.of("aws-admin-ports-restricted")  # the others still run


def test_defaults_are_the_schema_defaults() -> None:
    config = pack_config()
    assert config["aws-ingress-not-world-open"].properties == {"publicPorts": [30000]}
    assert config["aws-ingress-not-world-open"].enforcement_level == "mandatory"
    assert (
        "ServiceAccount/kube-system/gitlab-admin"
        in config["k8s-no-cluster-admin-binding"].properties["allowedSubjects"]
    )


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"aws-ingress-not-world-open": {"publicPorts": ["30000"]}}, "is not of type 'integer'"),
        ({"gitlab-project-visibility": {"allowedVisibilities": ["secret"]}}, "is not one of"),
        ({"no-such-policy": "mandatory"}, "unknown policy 'no-such-policy'"),
        ({"aws-required-tags": {"enforcementLevel": "strict"}}, "not a valid enforcement level"),
    ],
)
def test_a_bad_policy_config_is_refused(config: dict, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        pack_config(overrides=config)


def test_only_manifest_files_are_read_so_other_unknown_files_cost_nothing() -> None:
    """Seeded files are rendered from outputs (the registry host): unknown at preview."""
    pipeline = r.repository_file(".gitlab-ci.yml", "")
    manifest = r.repository_file("kubernetes/deployment.yml", "")
    for seeded in (pipeline, manifest):
        seeded.inputs.update(encoding="text", content=UNKNOWN)
    assert analyze([pipeline, r.application_settings(False)]).violations == ()
    advisory = analyze([manifest, r.application_settings(False)]).advisory
    assert {v.policy for v in advisory} >= {"k8s-image-pinned", "k8s-run-as-non-root"}
    assert all("string value at .content can't be known during preview" in v.message for v in advisory)
