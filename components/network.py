"""Network: the dedicated VPC, its public subnets, and the two security groups the hosts share.

The VPC's flow logs go to CloudWatch Logs (components/flow_logs.py), and its default security
group, which AWS creates with every VPC and nothing here uses, is taken over with no rule at all.

The GitLab group and the cluster group reference each other (nodes pull from the registry and
clone over SSH; GitLab and push-mode jobs call the cluster's private API). Creating both groups
here, empty, and letting each component add its ingress rules as separate resources avoids a
dependency cycle between the components.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.config import StackConfig
from components.flow_logs import vpc_flow_logs


def subnet_cidrs(vpc_cidr: str, count: int) -> list[str]:
    """Split the VPC into equal subnets, one per AZ, 16 times smaller than the VPC (at most /28)."""
    network = ipaddress.ip_network(vpc_cidr)
    new_prefix = min(network.prefixlen + 4, 28)  # /28 is the smallest subnet AWS accepts
    return [str(subnet) for subnet, _ in zip(network.subnets(new_prefix=new_prefix), range(count), strict=False)]


@dataclass(frozen=True)
class NetworkArgs:
    config: StackConfig


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    subnet_ids: list[pulumi.Output[str]]
    availability_zones: list[str]
    gitlab_security_group_id: pulumi.Output[str]
    cluster_security_group_id: pulumi.Output[str]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gitops:network:Network", name, None, opts)
        config = args.config
        child = pulumi.ResourceOptions(parent=self)

        # Local Zones and Wavelength Zones are "opt-in-required": keep to the region's regular AZs.
        zones = aws.get_availability_zones(
            state="available",
            filters=[aws.GetAvailabilityZonesFilterArgs(name="opt-in-status", values=["opt-in-not-required"])],
            opts=pulumi.InvokeOptions(parent=self),
        ).names
        if len(zones) < config.availability_zone_count:
            raise pulumi.RunError(
                f"availabilityZoneCount: got {config.availability_zone_count}; this region has only "
                f"{len(zones)} available zones ({', '.join(zones)})"
            )
        self.availability_zones = sorted(zones)[: config.availability_zone_count]

        # DNS hostnames on: GitLab's default hostname is its Elastic IP's public DNS name, which
        # AWS only assigns (and resolves to the private IP inside the VPC) when both flags are on.
        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=config.vpc_cidr,
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags=config.tags(f"{name}-vpc"),
            opts=child,
        )
        # "When the provider first begins managing the default security group, it immediately removes
        # all ingress and egress rules" (pulumi-aws ec2/default_security_group.py): an instance
        # launched without a group of its own gets no access. Removing this resource from the program
        # would only stop managing the group, never delete it. The rules are attributes-as-blocks
        # (Optional + Computed): omitted, a rule added later by hand shows no diff and stays; empty
        # lists are managed as "no rule": a refresh reads it as drift and `up --refresh` removes it (pulumi-aws
        # ec2/security_group.py "Removing All Ingress and Egress Rules": ingress=[], egress=[]).
        aws.ec2.DefaultSecurityGroup(
            f"{name}-default-group",
            vpc_id=vpc.id,
            ingress=[],
            egress=[],
            tags=config.tags(f"{name}-default-group"),
            opts=child,
        )
        vpc_flow_logs(name, config, vpc, self)
        gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=config.tags(f"{name}-igw"), opts=child)
        route_table = aws.ec2.RouteTable(
            f"{name}-public",
            vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=gateway.id)],
            tags=config.tags(f"{name}-public"),
            opts=child,
        )
        self.subnet_ids = []
        for zone, cidr in zip(
            self.availability_zones, subnet_cidrs(config.vpc_cidr, len(self.availability_zones)), strict=True
        ):
            subnet_name = f"{name}-public-{zone}"
            # Public addresses come from Elastic IPs or are requested per instance; the subnet does
            # not hand them out by default so that nothing gets one by accident.
            subnet = aws.ec2.Subnet(
                subnet_name,
                vpc_id=vpc.id,
                cidr_block=cidr,
                availability_zone=zone,
                map_public_ip_on_launch=False,
                tags=config.tags(subnet_name),
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{subnet_name}-rta", subnet_id=subnet.id, route_table_id=route_table.id, opts=child
            )
            self.subnet_ids.append(subnet.id)

        gitlab_group = self._security_group(name, "gitlab", "GitLab host: web, registry, git over SSH", vpc, config)
        cluster_group = self._security_group(
            name, "cluster", "Kubernetes nodes: API, kubelet, CNI, NodePort", vpc, config
        )

        self.vpc_id = vpc.id
        self.gitlab_security_group_id = gitlab_group.id
        self.cluster_security_group_id = cluster_group.id
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "subnet_ids": self.subnet_ids,
                "gitlab_security_group_id": self.gitlab_security_group_id,
                "cluster_security_group_id": self.cluster_security_group_id,
            }
        )

    def _security_group(
        self, name: str, role: str, description: str, vpc: aws.ec2.Vpc, config: StackConfig
    ) -> aws.ec2.SecurityGroup:
        """An empty group (ingress rules are added by the component that owns the role) with open egress.

        Hosts need outbound HTTPS for Debian, pkgs.k8s.io, container images and the CNI/Flux manifests.
        """
        group_name = f"{name}-{role}"
        group = aws.ec2.SecurityGroup(
            group_name,
            vpc_id=vpc.id,
            description=description,
            tags=config.tags(group_name),
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.vpc.SecurityGroupEgressRule(
            f"{group_name}-egress-all",
            security_group_id=group.id,
            ip_protocol="-1",
            cidr_ipv4="0.0.0.0/0",
            description="Outbound to the internet: OS packages, container images, release manifests",
            tags=config.tags(f"{group_name}-egress-all"),
            opts=pulumi.ResourceOptions(parent=group),
        )
        return group
