"""The cluster API's stable endpoint: one private DNS name, the same whatever the number of control planes.

``api.<cluster>.internal`` (kubeadm.endpoint_host) is kubeadm's ``controlPlaneEndpoint`` from the
first ``kubeadm init``: every API server certificate, kubeconfig, kube-proxy's configuration and
GitLab's view of the cluster name it, never a node's address. It lives in a Route 53 private hosted
zone of the stack's VPC (only the VPC resolves it; the VPC has DNS support and hostnames on, which
private zones need):

* ``controlPlaneCount`` 1: an A record of the control-plane node's private address. kubeadm's own
  single-node guide describes this ("Later you can modify cluster-endpoint to point to the address
  of your load-balancer"), and nothing has to be up for the name to answer at ``kubeadm init``.
* ``controlPlaneCount`` 3: the same record, now an alias of an internal Network Load Balancer on
  6443 in every zone of the stack, cross-zone, whose target group holds each control-plane node
  once it has joined (the first from the start). Going from 1 to 3 updates the record in place
  (only its name and zone force a new one: terraform-provider-aws internal/service/route53/
  record.go) and changes no certificate or kubeconfig.

The load balancer's target group turns client IP preservation off: with it on, a control-plane node
that reaches the endpoint and is routed to itself sees its own address as the source and the
connection times out (AWS "Troubleshoot your Network Load Balancer", requests from a target to its
load balancer), which kube-proxy, admin.conf and `kubeadm join` on control-plane nodes do. With it
off the targets see the load balancer's own addresses, so who may call the API is decided by the
load balancer's security group, attached at creation (one cannot be added to an NLB created
without: pulumi-aws lb.LoadBalancer ``security_groups``). Health: HTTPS ``/readyz``, which every
API server serves to anonymous callers (ClusterRole system:public-info-viewer).

A phase of ``KubeadmCluster`` (components/cluster.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components import kubeadm
from components.cluster_firewall import add_rules, load_balancer_rules
from components.cluster_nodes import Node
from components.config import StackConfig
from components.hosts import SshAccess
from components.remote import remote_step

RECORD_TTL_SECONDS = 60  # a single A record; the alias of a load balancer takes the load balancer's TTL
HEALTH_CHECK_INTERVAL_SECONDS = 10
HEALTHY_THRESHOLD = 2  # a joined node takes traffic 20 s after its API server is ready
UNHEALTHY_THRESHOLD = 2  # ... and a lost one stops taking new connections 20 s after
HEALTH_CHECK_TIMEOUT_SECONDS = 5  # under the interval (AWS's HTTPS default for NLBs equals it)
DEREGISTRATION_DELAY_SECONDS = 30  # a node being removed keeps its open connections this long
FORWARDING_WAIT_SECONDS = 900  # registration and the first health checks take "a few minutes" (AWS)


@dataclass(frozen=True)
class ApiEndpoint:
    host: str  # api.<cluster>.internal
    address: str  # <host>:6443, kubeadm's controlPlaneEndpoint
    # What must exist before anything resolves the name (kubeadm init on the first node): the
    # record and, with a load balancer, its listener and the first node registered behind it.
    ready: list[pulumi.Resource]
    target_group: aws.lb.TargetGroup | None  # with a load balancer (controlPlaneCount > 1)
    security_group_id: pulumi.Output[str] | None  # the load balancer's group: who may call the API


def api_endpoint(
    name: str,
    config: StackConfig,
    *,
    vpc_id: pulumi.Input[str],
    subnet_ids: Sequence[pulumi.Input[str]],
    first_node: Node,
    groups: Mapping[str, pulumi.Input[str]],  # "cluster", "gitlab", "control-plane": security group ids
    ssh: SshAccess,
    parent: pulumi.Resource,
) -> ApiEndpoint:
    host = kubeadm.endpoint_host(name)
    child = pulumi.ResourceOptions(parent=parent)
    zone_name = f"{name}-api-zone"
    zone = aws.route53.Zone(
        zone_name,
        name=kubeadm.endpoint_zone(name),
        comment=f"The Kubernetes API's stable name ({host}) inside the stack's VPC",
        # Private: associated with the VPC and resolved only from it.
        vpcs=[aws.route53.ZoneVpcArgs(vpc_id=vpc_id)],
        tags=config.tags(zone_name),
        opts=child,
    )
    if config.control_plane_count == 1:
        record = aws.route53.Record(
            f"{name}-api-record",
            zone_id=zone.zone_id,
            name=host,
            type="A",
            ttl=RECORD_TTL_SECONDS,
            records=[first_node.private_ip],
            opts=child,
        )
        return ApiEndpoint(host, kubeadm.control_plane_endpoint(host), [record], None, None)

    balancer_group = aws.ec2.SecurityGroup(
        f"{name}-api-lb",
        vpc_id=vpc_id,
        description="Kubernetes API load balancer: who may call the API through its stable name",
        tags=config.tags(f"{name}-api-lb"),
        opts=child,
    )
    rule_groups = {**groups, "api-lb": balancer_group.id}
    firewall: list[pulumi.Resource] = []
    for rules, on_group in load_balancer_rules():
        firewall += add_rules(name, config, rules, on_group=rule_groups[on_group], groups=rule_groups, parent=parent)
    egress = f"{name}-api-lb-to-control-plane"
    egress_rule = aws.vpc.SecurityGroupEgressRule(
        egress,
        security_group_id=balancer_group.id,
        description="Kubernetes API load balancer to the control-plane nodes (traffic and health checks)",
        ip_protocol="tcp",
        from_port=kubeadm.API_SERVER_PORT,
        to_port=kubeadm.API_SERVER_PORT,
        referenced_security_group_id=groups["control-plane"],
        tags=config.tags(egress),
        opts=child,
    )
    balancer = aws.lb.LoadBalancer(
        f"{name}-api",
        load_balancer_type="network",
        internal=True,
        # Every zone of the stack: a target in a zone the load balancer is not enabled in gets no traffic.
        subnets=list(subnet_ids),
        security_groups=[balancer_group.id],
        enable_cross_zone_load_balancing=True,
        tags=config.tags(f"{name}-api"),
        opts=child,
    )
    targets = aws.lb.TargetGroup(
        f"{name}-api-targets",
        port=kubeadm.API_SERVER_PORT,
        protocol="TCP",
        target_type="instance",
        vpc_id=vpc_id,
        preserve_client_ip="false",
        deregistration_delay=DEREGISTRATION_DELAY_SECONDS,
        connection_termination=True,
        # The health check's protocol defaults to HTTP: the API server speaks HTTPS only.
        health_check=aws.lb.TargetGroupHealthCheckArgs(
            protocol="HTTPS",
            port="traffic-port",
            path="/readyz",
            matcher="200",
            interval=HEALTH_CHECK_INTERVAL_SECONDS,
            timeout=HEALTH_CHECK_TIMEOUT_SECONDS,
            healthy_threshold=HEALTHY_THRESHOLD,
            unhealthy_threshold=UNHEALTHY_THRESHOLD,
        ),
        tags=config.tags(f"{name}-api-targets"),
        opts=child,
    )
    listener = aws.lb.Listener(
        f"{name}-api-listener",
        load_balancer_arn=balancer.arn,
        port=kubeadm.API_SERVER_PORT,
        protocol="TCP",
        default_actions=[aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=targets.arn)],
        tags=config.tags(f"{name}-api-listener"),
        opts=child,
    )
    first = register(name, targets, first_node, after=[], parent=parent)
    # On a running cluster (1 -> 3), the name moves only once the load balancer forwards to its API
    # server; on a new stack the step passes at once (no kubeadm init yet, which waits for the name).
    forwarding = remote_step(
        f"{name}-api-through-load-balancer",
        host=first_node.ssh_host,
        private_key=ssh.private_key_openssh,
        script="cluster/api-through-load-balancer.sh",
        env={
            "API_HOST": host,
            "API_PORT": str(kubeadm.API_SERVER_PORT),
            "LOAD_BALANCER_HOST": balancer.dns_name,
            "WAIT_SECONDS": str(FORWARDING_WAIT_SECONDS),
        },
        triggers=[first_node.instance.id],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[listener, first, egress_rule, *firewall]),
    )
    record = aws.route53.Record(
        f"{name}-api-record",
        zone_id=zone.zone_id,
        name=host,
        type="A",
        aliases=[
            aws.route53.RecordAliasArgs(name=balancer.dns_name, zone_id=balancer.zone_id, evaluate_target_health=False)
        ],
        # The name moves to the load balancer once it forwards to the first node.
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[listener, first, forwarding]),
    )
    return ApiEndpoint(
        host,
        kubeadm.control_plane_endpoint(host),
        [record, listener, first, forwarding, egress_rule, *firewall],
        targets,
        balancer_group.id,
    )


def register(
    name: str, targets: aws.lb.TargetGroup, node: Node, *, after: list[pulumi.Resource], parent: pulumi.Resource
) -> aws.lb.TargetGroupAttachment:
    """Put a control-plane node behind the load balancer once ``after`` is done (its join).

    On removal or replacement the node is deregistered before its etcd member is removed (this
    attachment depends on the node's join, which depends on its membership step).
    """
    return aws.lb.TargetGroupAttachment(
        f"{name}-{node.name}-api-target",
        target_group_arn=targets.arn,
        target_id=node.instance.id,
        port=kubeadm.API_SERVER_PORT,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=after),
    )
