"""The network: a dedicated VPC with DNS hostnames, public subnets per AZ, and tagged resources."""

from __future__ import annotations

import ipaddress
import json

import pytest

from components.flow_logs import trust_policy, write_policy
from components.network import subnet_cidrs

TAGGABLE = (
    "aws:ec2/vpc:Vpc",
    "aws:ec2/subnet:Subnet",
    "aws:ec2/internetGateway:InternetGateway",
    "aws:ec2/routeTable:RouteTable",
    "aws:ec2/securityGroup:SecurityGroup",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
    "aws:ec2/instance:Instance",
    "aws:ec2/eip:Eip",
    "aws:ebs/volume:Volume",
    "aws:ec2/keyPair:KeyPair",
    "aws:iam/role:Role",
    "aws:iam/instanceProfile:InstanceProfile",
    "aws:ec2/launchTemplate:LaunchTemplate",
    "aws:cloudwatch/logGroup:LogGroup",
    "aws:ec2/flowLog:FlowLog",
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup",
)


def test_vpc_resolves_public_dns_names(dev) -> None:
    vpc = dev.one("aws:ec2/vpc:Vpc").inputs
    assert vpc["cidrBlock"] == "10.42.0.0/16"
    # GitLab's hostname is its Elastic IP's public DNS name: AWS needs both flags for it.
    assert vpc["enableDnsSupport"] is True
    assert vpc["enableDnsHostnames"] is True


def test_one_public_subnet_per_zone_inside_the_vpc(dev, prod) -> None:
    for run, zones in ((dev, 2), (prod, 3)):
        subnets = run.all("aws:ec2/subnet:Subnet")
        assert len(subnets) == zones
        assert len({s.inputs["availabilityZone"] for s in subnets}) == zones
        vpc = ipaddress.ip_network(run.one("aws:ec2/vpc:Vpc").inputs["cidrBlock"])
        cidrs = [ipaddress.ip_network(s.inputs["cidrBlock"]) for s in subnets]
        assert all(cidr.subnet_of(vpc) for cidr in cidrs)
        assert not any(a.overlaps(b) for i, a in enumerate(cidrs) for b in cidrs[i + 1 :])
        assert sorted(run.outputs["subnetIds"]) == sorted(s.id for s in subnets)


def test_subnets_route_to_the_internet_gateway(dev) -> None:
    gateway = dev.one("aws:ec2/internetGateway:InternetGateway")
    table = dev.one("aws:ec2/routeTable:RouteTable")
    assert table.inputs["routes"] == [{"cidrBlock": "0.0.0.0/0", "gatewayId": gateway.id}]
    associations = dev.all("aws:ec2/routeTableAssociation:RouteTableAssociation")
    assert {a.inputs["subnetId"] for a in associations} == {s.id for s in dev.all("aws:ec2/subnet:Subnet")}
    assert {a.inputs["routeTableId"] for a in associations} == {table.id}


def test_security_groups_exist_before_components_with_egress_only(dev) -> None:
    groups = {g.name: g for g in dev.all("aws:ec2/securityGroup:SecurityGroup")}
    assert set(groups) >= {"gitops-gitlab", "gitops-cluster"}
    for group in groups.values():
        assert "ingress" not in group.inputs, "ingress rules are separate resources owned by each component"
        assert group.inputs["vpcId"] == dev.one("aws:ec2/vpc:Vpc").id


def test_every_taggable_resource_carries_the_common_tags(run_stack) -> None:
    run = run_stack("prod", extraTags=["CostCenter=42", "Environment=prod"])
    checked = 0
    for registration in run:
        if registration.type in TAGGABLE:
            tags = registration.plain_inputs.get("tags")
            assert tags is not None, f"{registration.type} {registration.name} has no tags"
            assert tags["Project"] == "gitops"
            assert tags["Stack"] == "prod"
            assert tags["ManagedBy"] == "pulumi"
            assert tags["Name"] == registration.name
            assert tags["CostCenter"] == "42"
            assert tags["Environment"] == "prod"
            checked += 1
    assert checked >= 8


def test_prod_stack_file_adds_its_environment_tag(prod) -> None:
    assert prod.one("aws:ec2/vpc:Vpc").plain_inputs["tags"]["Environment"] == "prod"


def test_too_many_zones_for_the_region_is_reported(run_stack, monkeypatch) -> None:
    from tools import harness

    monkeypatch.setattr(harness, "MOCK_ZONE_COUNT", 2)
    with pytest.raises(harness.ProgramError, match=r"availabilityZoneCount: got 3; this region has only 2"):
        run_stack("dev", availabilityZoneCount=3)


@pytest.mark.parametrize(
    ("vpc", "count", "expected"),
    [
        ("10.42.0.0/16", 2, ["10.42.0.0/20", "10.42.16.0/20"]),
        ("10.42.0.0/24", 3, ["10.42.0.0/28", "10.42.0.16/28", "10.42.0.32/28"]),
    ],
)
def test_subnet_cidrs(vpc: str, count: int, expected: list[str]) -> None:
    assert subnet_cidrs(vpc, count) == expected


# ---- scanner findings closed: flow logs, the default security group ----------------------------------
def test_all_vpc_traffic_is_logged_to_a_log_group_that_expires_it(dev, run_stack) -> None:
    vpc = dev.one("aws:ec2/vpc:Vpc")
    group = dev.one("aws:cloudwatch/logGroup:LogGroup")
    flow_log = dev.one("aws:ec2/flowLog:FlowLog").plain_inputs
    assert flow_log["vpcId"] == vpc.id
    assert flow_log["trafficType"] == "ALL"
    assert flow_log["logDestinationType"] == "cloud-watch-logs"
    assert flow_log["logDestination"] == group.state["arn"]
    assert flow_log["maxAggregationInterval"] == 600
    assert group.plain_inputs["name"] == "/gitops/dev/vpc-flow-logs"
    assert group.plain_inputs["retentionInDays"] == 365
    assert "kmsKeyId" not in group.plain_inputs  # CloudWatch Logs' own encryption (README, security model)
    longer = run_stack("dev", flowLogRetentionDays=731)
    assert longer.one("aws:cloudwatch/logGroup:LogGroup").plain_inputs["retentionInDays"] == 731
    # Delivery starts once the role may write.
    permission = dev.one("aws:iam/rolePolicy:RolePolicy", "gitops-flow-logs-write")
    assert permission.urn in dev.one("aws:ec2/flowLog:FlowLog").depends_on


def test_the_flow_log_role_writes_to_its_log_group_only(dev) -> None:
    role = dev.one("aws:iam/role:Role", "gitops-flow-logs-role")
    flow_log = dev.one("aws:ec2/flowLog:FlowLog").plain_inputs
    assert flow_log["iamRoleArn"] == role.state["arn"]
    trust = json.loads(role.plain_inputs["assumeRolePolicy"])
    assert trust == trust_policy("123456789012", "aws", "us-east-1")
    [statement] = trust["Statement"]
    assert statement["Principal"] == {"Service": "vpc-flow-logs.amazonaws.com"}
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": "123456789012"}
    assert statement["Condition"]["ArnLike"] == {"aws:SourceArn": "arn:aws:ec2:us-east-1:123456789012:vpc-flow-log/*"}
    document = json.loads(dev.one("aws:iam/rolePolicy:RolePolicy", "gitops-flow-logs-write").plain_inputs["policy"])
    arn = dev.one("aws:cloudwatch/logGroup:LogGroup").state["arn"]
    assert document == write_policy(arn)
    writes, describe = document["Statement"]
    assert writes["Resource"] == [arn, f"{arn}:*"]
    assert set(writes["Action"]) == {"logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"}
    assert describe == {
        "Sid": "FindTheLogGroup",
        "Effect": "Allow",
        "Action": ["logs:DescribeLogGroups"],
        "Resource": "*",
    }


def test_the_vpcs_default_security_group_is_managed_with_no_rule(dev) -> None:
    default = dev.one("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup").plain_inputs
    assert default["vpcId"] == dev.one("aws:ec2/vpc:Vpc").id
    # The provider removes every rule of the default group when it adopts it, then adds these: none.
    # Explicitly empty, so a rule added later by hand is drift: `pulumi refresh` shows it, `up --refresh` removes it.
    assert (default["ingress"], default["egress"]) == ([], [])
    assert default["tags"]["Name"] == "gitops-default-group"
