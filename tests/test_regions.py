"""The stack's aws:region reaches everything the mocks name: zones, DNS names, ARNs, region invokes.

Render and cost show what the user will deploy, so a stack in eu-west-3 must render eu-west-3a
subnets and ec2-….eu-west-3.compute.amazonaws.com names, not us-east-1's.
"""

from __future__ import annotations

import pytest

from tests.conftest import ADMIN
from tools import harness
from tools.harness import run_fixture_stack


@pytest.mark.parametrize(
    ("region", "zones", "zone_ids", "public", "private"),
    [
        (
            "us-east-1",
            ["us-east-1a", "us-east-1b"],
            ["use1-az1", "use1-az2"],
            "ec2-198-51-100-7.compute-1.amazonaws.com",
            "ip-10-42-0-9.ec2.internal",
        ),
        (
            "eu-west-3",
            ["eu-west-3a", "eu-west-3b"],
            ["euw3-az1", "euw3-az2"],
            "ec2-198-51-100-7.eu-west-3.compute.amazonaws.com",
            "ip-10-42-0-9.eu-west-3.compute.internal",
        ),
        (
            "ap-southeast-2",
            ["ap-southeast-2a", "ap-southeast-2b"],
            ["apse2-az1", "apse2-az2"],
            "ec2-198-51-100-7.ap-southeast-2.compute.amazonaws.com",
            "ip-10-42-0-9.ap-southeast-2.compute.internal",
        ),
        (
            "cn-north-1",
            ["cn-north-1a", "cn-north-1b"],
            ["cnn1-az1", "cnn1-az2"],
            "ec2-198-51-100-7.cn-north-1.compute.amazonaws.com.cn",
            "ip-10-42-0-9.cn-north-1.compute.internal",
        ),
    ],
)
def test_names_follow_the_region_as_aws_forms_them(region, zones, zone_ids, public, private) -> None:
    assert harness.zone_names(region, 2) == zones
    assert harness.zone_ids(region, 2) == zone_ids
    assert harness.public_dns("198.51.100.7", region) == public
    assert harness.private_dns("10.42.0.9", region) == private


def test_a_stack_in_another_region_is_mocked_in_that_region() -> None:
    run = run_fixture_stack("dev", {**ADMIN, "aws:region": "eu-west-3"})
    assert run.outputs["availabilityZones"] == ["eu-west-3a", "eu-west-3b"]
    for subnet in run.all("aws:ec2/subnet:Subnet"):
        assert subnet.plain_inputs["availabilityZone"].startswith("eu-west-3")
    assert run.outputs["gitlabUrl"].endswith(".eu-west-3.compute.amazonaws.com")
    volume = run.one("aws:ebs/volume:Volume")
    assert volume.plain_inputs["availabilityZone"] == "eu-west-3a"
    assert ":eu-west-3:" in volume.state["arn"]
    for instance in run.all("aws:ec2/instance:Instance"):
        assert instance.state["privateDns"].endswith(".eu-west-3.compute.internal")
        assert "compute-1" not in instance.state.get("publicDns", "")


def test_a_stack_without_a_region_is_mocked_in_the_default_region() -> None:
    run = run_fixture_stack("dev", {**ADMIN, "aws:region": None})
    assert run.outputs["availabilityZones"][0].startswith(harness.DEFAULT_REGION)
    assert run.outputs["gitlabUrl"].endswith(".compute-1.amazonaws.com")
