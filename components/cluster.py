"""KubeadmCluster: 1 or 3 control-plane nodes (`master`, `master2`, `master3`) and N workers on EC2, for years.

Order of events on `pulumi up`, one module per concept:
1. PKI (cluster_pki.py): cluster CA, the other shared keys (service accounts, front-proxy CA, etcd
   CA), admin certificate and bootstrap token, made by Pulumi first;
2. firewall (cluster_firewall.py): ingress rules, and the control plane's own group;
3. nodes (cluster_nodes.py): instances that user data boots once, and on every node the material
   step (registry trust, containerd settings, operator key) that follows the configuration later;
4. endpoint (cluster_endpoint.py): the API's stable name, api.<cluster>.internal, in a private
   Route 53 zone: the first node's address, or (controlPlaneCount 3) an internal load balancer;
5. bootstrap (cluster_bootstrap.py): `kubeadm init`, Flannel, control plane Ready;
6. lifecycle (cluster_lifecycle.py): the upgrade gate and the first node's upgrade to the configured
   version (a no-op on a new cluster); then, with controlPlaneCount 3, the further control-plane
   nodes join one at a time (cluster_members.py), each then handed to the member hook (backups:
   its own etcd snapshot timer); each worker joins (and is admitted, and on
   removal drained); then, one node at a time, control plane first, every node follows the first
   one's version; the certificate timer on every control-plane node; CoreDNS spread over the nodes.
The Kubernetes provider is usable once every node is Ready and upgraded.

High availability: with 3 control-plane nodes, etcd and the API survive the loss of any one of them.
Workers' kubelets and kube-proxy, and GitLab, reach the API through the stable name (the load
balancer routes around a lost node); the app's pods run on the workers and keep serving; Flux and
agentk reach the API through the `kubernetes` Service, whose endpoints are the API servers that are
up; CoreDNS runs on several nodes. Steps that need the admin kubeconfig run on the first node, so a
`pulumi up` that changes the cluster needs that node (README "Highly available control plane").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import kubeadm
from components.cluster_bootstrap import bootstrap_control_plane, bootstrap_worker, spread_cluster_dns
from components.cluster_endpoint import api_endpoint
from components.cluster_firewall import add_rules, cluster_rules, control_plane_group, etcd_rules
from components.cluster_lifecycle import (
    MemberContext,
    MemberHook,
    PreUpgradeHook,
    certificate_renewal,
    upgrade_control_plane,
    upgrade_control_plane_members,
    upgrade_workers,
)
from components.cluster_members import control_plane_members
from components.cluster_nodes import CONTROL_PLANE, Node, cluster_nodes, worker_names
from components.cluster_pki import cluster_pki
from components.config import StackConfig
from components.hosts import SshAccess

__all__ = ["CONTROL_PLANE", "KubeadmCluster", "KubeadmClusterArgs", "worker_names"]


@dataclass(frozen=True)
class KubeadmClusterArgs:
    config: StackConfig
    vpc_id: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]
    cluster_security_group_id: pulumi.Input[str]  # made empty by Network; the rules are added here
    gitlab_security_group_id: pulumi.Input[str]  # GitLab and push-mode jobs call the private API
    registry_host: pulumi.Input[str]  # GitLab's registry, <host>:5050: every node trusts it
    registry_ca_pem: pulumi.Input[str]  # GitLab's CA certificate (public)
    ssh: SshAccess
    # Steps that must finish before a Kubernetes upgrade touches the control plane (backups: an etcd snapshot).
    pre_upgrade: PreUpgradeHook | None = None
    # Steps on each further control-plane node once it has joined (backups: its etcd snapshot timer).
    member_joined: MemberHook | None = None


class KubeadmCluster(pulumi.ComponentResource):
    # https://<the cluster's controlPlaneEndpoint>: the stable name, what GitLab uses inside the VPC
    # (a cluster initialised before the stable endpoint existed keeps its first node's address).
    private_api_url: pulumi.Output[str]
    public_api_url: pulumi.Output[str]  # https://<first node's Elastic IP>:6443: the kubeconfig's server
    ca_pem: pulumi.Output[str]
    ca_cert_hash: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]  # secret
    kubernetes_version: pulumi.Output[str]  # exact version the control plane runs, e.g. v1.36.5
    certificates_expire_at: pulumi.Output[str]  # earliest expiry of kubeadm's certificates
    node_names: list[str]
    nodes: pulumi.Output[list[dict[str, str]]]
    app_urls: pulumi.Output[list[str]]
    provider: k8s.Provider  # ready to use: every node is Ready and at the control plane's version
    # Where steps that need the admin kubeconfig run (/etc/kubernetes/admin.conf): the first control plane.
    control_plane_ssh_host: pulumi.Output[str]
    control_plane_instance_id: pulumi.Output[str]
    control_planes: list[Node]  # every control-plane node, the first one first (e.g. a timer step on each)
    # The API load balancer's security group (controlPlaneCount 3): other callers of the API get a rule there.
    api_security_group_id: pulumi.Output[str] | None

    def __init__(self, name: str, args: KubeadmClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gitops:cluster:KubeadmCluster", name, None, opts)
        config, ssh = args.config, args.ssh

        pki = cluster_pki(name, self)
        cp_group = control_plane_group(name, config, args.vpc_id, self)
        groups = {"cluster": args.cluster_security_group_id, "gitlab": args.gitlab_security_group_id}
        add_rules(
            name, config, cluster_rules(config), on_group=args.cluster_security_group_id, groups=groups, parent=self
        )
        nodes = cluster_nodes(
            name,
            config,
            subnet_ids=list(args.subnet_ids),
            cluster_group_id=args.cluster_security_group_id,
            control_plane_group_id=cp_group.id,
            registry_host=args.registry_host,
            registry_ca_pem=args.registry_ca_pem,
            ssh=ssh,
            parent=self,
        )
        add_rules(
            name,
            config,
            etcd_rules(config.control_plane_count),
            on_group=cp_group.id,
            groups={"control-plane": cp_group.id},
            parent=self,
        )
        (master,) = nodes.control_planes
        api = api_endpoint(
            name,
            config,
            vpc_id=args.vpc_id,
            subnet_ids=list(args.subnet_ids),
            first_node=master,
            groups={**groups, "control-plane": cp_group.id},
            ssh=ssh,
            parent=self,
        )

        control_plane = bootstrap_control_plane(name, config, nodes, pki, ssh, api, self)
        gate = upgrade_control_plane(
            name,
            config,
            master,
            ssh,
            after=[control_plane.ready],
            pre_upgrade=args.pre_upgrade,
            control_plane_role=nodes.control_plane_role,
            parent=self,
        )
        self.kubernetes_version = gate.stdout.apply(lambda out: kubeadm.kubernetes_version(out, "the upgrade step"))
        members = control_plane_members(
            name,
            config,
            nodes.builder,
            master=master,
            pki=pki,
            cluster_endpoint=control_plane.endpoint,
            stable_endpoint=api.address,
            ssh=ssh,
            targets=api.target_group,
            after=[gate],
            parent=self,
        )
        if args.member_joined is not None:
            for member in members:
                args.member_joined(
                    MemberContext(cluster_name=name, node=member.node, ssh=ssh, after=[member.join], parent=self)
                )
        workers = [
            bootstrap_worker(
                name,
                worker,
                control_plane=master,
                api_endpoint=control_plane.endpoint,
                pki=pki,
                ssh=ssh,
                after=[gate],
                parent=self,
            )
            for worker in nodes.workers
        ]
        upgraded_members = upgrade_control_plane_members(
            name,
            [(member.node, member.join) for member in members],
            ssh,
            version=self.kubernetes_version,
            after=[gate],
            parent=self,
        )
        upgraded = upgrade_workers(
            name,
            [(node, worker.membership) for node, worker in zip(nodes.workers, workers, strict=True)],
            master,
            ssh,
            version=self.kubernetes_version,
            # Workers follow once the whole control plane runs the version.
            after=[gate, *upgraded_members[-1:]],
            parent=self,
        )
        control_planes = [master, *(member.node for member in members)]
        certificates = [
            certificate_renewal(name, node, ssh, after=[step], parent=self)
            for node, step in zip(control_planes, [gate, *upgraded_members], strict=True)
        ]
        self.certificates_expire_at = pulumi.Output.all(*(step.stdout for step in certificates)).apply(
            lambda outs: min(_expiry(out) for out in outs)
        )
        dns = spread_cluster_dns(
            name,
            master,
            ssh,
            after=[*(member.join for member in members), *(worker.membership for worker in workers)],
            parent=self,
        )

        # ---- Outputs -----------------------------------------------------------------------------
        all_nodes = [*control_planes, *nodes.workers]
        self.node_names = [node.name for node in all_nodes]
        self.control_planes = control_planes
        self.control_plane_ssh_host = master.ssh_host
        self.control_plane_instance_id = master.instance.id
        self.api_security_group_id = api.security_group_id
        self.ca_pem = pki.ca_cert_pem
        self.ca_cert_hash = pki.ca_cert_hash
        self.private_api_url = control_plane.endpoint.apply(lambda endpoint: f"https://{endpoint}")
        self.public_api_url = nodes.endpoint.public_ip.apply(lambda ip: f"https://{ip}:{kubeadm.API_SERVER_PORT}")
        self.kubeconfig = pulumi.Output.secret(
            pulumi.Output.all(
                server=self.public_api_url, ca=pki.ca_cert_pem, cert=pki.admin_cert_pem, key=pki.admin_key_pem
            ).apply(
                lambda v: kubeadm.kubeconfig(
                    cluster_name=name,
                    server=v["server"],
                    ca_pem=v["ca"],
                    client_cert_pem=v["cert"],
                    client_key_pem=v["key"],
                )
            )
        )
        self.nodes = pulumi.Output.all(
            *[
                pulumi.Output.all(node.private_ip, node.public_ip, node.instance.subnet_id, node.instance.instance_type)
                for node in all_nodes
            ]
        ).apply(lambda rows: _node_table(all_nodes, rows))
        port = config.app_node_port
        self.app_urls = pulumi.Output.all(*(worker.public_ip for worker in nodes.workers)).apply(
            lambda ips: [f"http://{ip}:{port}" for ip in ips]
        )
        # After the certificates step too: on the day it renews, it restarts the API server.
        self.provider = k8s.Provider(
            f"{name}-provider",
            kubeconfig=self.kubeconfig,
            # Replace the provider (and every object it manages) only for another cluster.
            cluster_identifier=pki.ca_public_key_pem.apply(lambda pem: kubeadm.cluster_identifier(name, pem)),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[
                    control_plane.ready,
                    gate,
                    *(member.join for member in members),
                    *upgraded_members,
                    *(w.membership for w in workers),
                    *upgraded,
                    *certificates,
                    dns,
                ],
            ),
        )
        self.register_outputs(
            {
                "private_api_url": self.private_api_url,
                "public_api_url": self.public_api_url,
                "ca_pem": self.ca_pem,
                "ca_cert_hash": self.ca_cert_hash,
                "kubeconfig": self.kubeconfig,
                "kubernetes_version": self.kubernetes_version,
                "certificates_expire_at": self.certificates_expire_at,
                "nodes": self.nodes,
                "app_urls": self.app_urls,
            }
        )


def _expiry(stdout: str) -> str:
    """The certificates step's stdout: the earliest expiry, e.g. 2027-11-30T10:00:00Z."""
    value = stdout.strip()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", value):
        raise ValueError(f"the certificates step printed {value!r}, not an expiry date; see its output in `pulumi up`")
    return value


def _node_table(nodes: list[Any], rows: list[list[str]]) -> list[dict[str, str]]:
    return [
        {
            "name": node.name,
            "role": node.role,
            "privateIp": private_ip,
            "publicIp": public_ip,
            "subnetId": subnet_id,
            "instanceType": instance_type,
        }
        for node, (private_ip, public_ip, subnet_id, instance_type) in zip(nodes, rows, strict=True)
    ]
