"""Who may reach the cluster's nodes: ingress rules on the cluster group, and the control plane's group.

Everything else is closed; node-to-node traffic stays inside the cluster group made (empty) by
``Network``. etcd is opened only where etcd runs and only to its peers: with one stacked control
plane the API server reaches etcd on 127.0.0.1:2379 and nothing else talks to it, so no etcd rule
exists; with several control-plane nodes (``etcd_rules``) their own group admits its members on
2379-2380. With several, the API also has a load balancer (components/cluster_endpoint.py): its own
group admits the nodes and GitLab, and the control-plane group admits it (``load_balancer_rules``).
Nothing opens the controller manager's and the scheduler's ports (10257, 10259) or etcd's metrics
(2381): kubeadm binds them to 127.0.0.1 (cmd/kubeadm/app/phases/controlplane/manifests.go,
phases/etcd/local.go). A phase of ``KubeadmCluster`` (components/cluster.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components import kubeadm
from components.config import StackConfig


@dataclass(frozen=True)
class RuleSpec:
    suffix: str  # resource name: <cluster>-<suffix>
    description: str
    protocol: str
    ports: tuple[int, int]
    source: str  # "cluster", "gitlab", "control-plane", "api-lb" (a group) or a CIDR


def cluster_rules(config: StackConfig) -> list[RuleSpec]:
    """Rules on the cluster group: the API, the kubelet and the overlay inside the cluster, admins, the app."""
    api, kubelet, vxlan = kubeadm.API_SERVER_PORT, kubeadm.KUBELET_PORT, kubeadm.FLANNEL_VXLAN_PORT
    rules = [
        RuleSpec("api-from-cluster", "Kubernetes API from the nodes", "tcp", (api, api), "cluster"),
        RuleSpec(
            "api-from-gitlab",
            "Kubernetes API from GitLab (cluster integration, push-mode deploy jobs)",
            "tcp",
            (api, api),
            "gitlab",
        ),
        RuleSpec("kubelet-from-cluster", "kubelet API from the nodes", "tcp", (kubelet, kubelet), "cluster"),
        RuleSpec("vxlan-from-cluster", "Flannel VXLAN overlay between the nodes", "udp", (vxlan, vxlan), "cluster"),
    ]
    for cidr in config.admin_cidrs:
        rules.append(RuleSpec(f"ssh-from-{_slug(cidr)}", f"SSH from admin {cidr}", "tcp", (22, 22), cidr))
        rules.append(RuleSpec(f"api-from-{_slug(cidr)}", f"Kubernetes API from admin {cidr}", "tcp", (api, api), cidr))
    port = config.app_node_port
    for cidr in config.app_cidrs:
        rules.append(RuleSpec(f"app-from-{_slug(cidr)}", f"App NodePort {port} from {cidr}", "tcp", (port, port), cidr))
    return rules


def etcd_rules(control_plane_count: int) -> list[RuleSpec]:
    """etcd client and peer ports between control-plane nodes, when there is more than one.

    kubeadm's stacked etcd listens for peers on the node address (2380) and for clients on
    127.0.0.1 and the node address (2379); a single member has no peer, and its only client is the
    local API server (kubeadm "Options for Highly Available topology", stacked etcd).
    """
    if control_plane_count < 2:
        return []
    return [
        RuleSpec(
            "etcd-from-control-plane",
            "etcd client and peer between control-plane nodes",
            "tcp",
            kubeadm.ETCD_PORTS,
            "control-plane",
        )
    ]


def load_balancer_rules() -> list[tuple[list[RuleSpec], str]]:
    """Rules of the API load balancer (controlPlaneCount > 1), each list with the group it goes on.

    Its group admits who called the API before (the nodes, GitLab); the targets see the load
    balancer's addresses (client IP preservation is off), so the control-plane group admits its group.
    Admins keep the first node's Elastic IP (the cluster group's adminCidrs rules); direct node-to-node
    and Service traffic on 6443 stays on the cluster group's own rule.
    """
    api = (kubeadm.API_SERVER_PORT, kubeadm.API_SERVER_PORT)
    return [
        (
            [
                RuleSpec("api-lb-from-cluster", "Kubernetes API (stable name) from the nodes", "tcp", api, "cluster"),
                RuleSpec(
                    "api-lb-from-gitlab",
                    "Kubernetes API (stable name) from GitLab (cluster integration, push-mode deploy jobs)",
                    "tcp",
                    api,
                    "gitlab",
                ),
            ],
            "api-lb",
        ),
        (
            [RuleSpec("api-from-load-balancer", "Kubernetes API from its load balancer", "tcp", api, "api-lb")],
            "control-plane",
        ),
    ]


def control_plane_group(
    name: str, config: StackConfig, vpc_id: pulumi.Input[str], parent: pulumi.Resource
) -> aws.ec2.SecurityGroup:
    """The group only control-plane nodes carry: where control-plane-only rules (etcd) go."""
    group_name = f"{name}-control-plane"
    return aws.ec2.SecurityGroup(
        group_name,
        vpc_id=vpc_id,
        description="Kubernetes control-plane nodes: etcd between members",
        tags=config.tags(group_name),
        opts=pulumi.ResourceOptions(parent=parent),
    )


def add_rules(
    name: str,
    config: StackConfig,
    rules: list[RuleSpec],
    *,
    on_group: pulumi.Input[str],
    groups: dict[str, pulumi.Input[str]],
    parent: pulumi.Resource,
) -> list[aws.vpc.SecurityGroupIngressRule]:
    """One described ingress rule per spec; a source that names a group references it."""
    made = []
    for rule in rules:
        rule_name = f"{name}-{rule.suffix}"
        source: dict[str, Any] = (
            {"referenced_security_group_id": groups[rule.source]}
            if rule.source in groups
            else {"cidr_ipv4": rule.source}
        )
        made_rule = aws.vpc.SecurityGroupIngressRule(
            rule_name,
            security_group_id=on_group,
            description=rule.description,
            ip_protocol=rule.protocol,
            from_port=rule.ports[0],
            to_port=rule.ports[1],
            tags=config.tags(rule_name),
            opts=pulumi.ResourceOptions(parent=parent),
            **source,
        )
        made.append(made_rule)
    return made


def _slug(cidr: str) -> str:
    """A CIDR as a stable resource-name part: 203.0.113.7/32 -> 203-0-113-7-32."""
    return re.sub(r"[^0-9a-z]+", "-", cidr.lower()).strip("-")
