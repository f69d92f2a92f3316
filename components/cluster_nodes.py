"""The cluster's hosts: control-plane nodes and workers, stable once running, and their material step.

A running node is never replaced or stopped by drift. Cluster instances ignore ``ami`` and
``userData`` after creation: Debian publishing a newer image would replace them (``ami`` forces a
new instance), and a changed user data would stop and start them to no effect (cloud-init runs it
once per instance). New nodes take the current image and user data. What may change after boot is
applied over SSH by each node's material step (userdata/cluster/node-config.sh), without a reboot.

Workers also ignore ``subnetId`` (placement stays where a worker was created when
``availabilityZoneCount`` changes; new or replaced workers use the current layout) and
``instanceType`` (a new type would stop and start every worker at once: roll them instead). They
are replaced delete-before-replace: the worker's Node is drained and deleted, then its instance
goes, then the new one joins under the same name (kubeadm refuses a name whose Node is Ready).

The first control-plane node (``master``) is protected: replacing it would start an empty cluster
(README "Day 2"). Further control-plane nodes (``master2``, ``master3``: controlPlaneCount 3) join
it: they are made later (``NodeBuilder.control_plane``, once the cluster is known to accept them),
in the next zones, protected too (removing one is refused; replacing one is deliberate: README
"Replace a control-plane member") and delete-before-replace, so that a replaced member leaves etcd
before its successor joins under its name. Like workers they keep their zone and instance type: a
new type would stop and start every member at once, and etcd would lose its quorum. A phase of
``KubeadmCluster`` (components/cluster.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_command as command

from components import kubeadm
from components.cloudinit import render
from components.config import StackConfig
from components.hosts import SSH_USER, HostSpec, SshAccess, debian_ami_id, hardened_instance, instance_profile
from components.remote import remote_step

CONTROL_PLANE = "master"  # the tutorial's host name; the Kubernetes node name too
CONTROL_PLANE_IGNORED = ["ami", "userData"]
WORKER_IGNORED = ["ami", "userData", "subnetId", "instanceType"]
MEMBER_IGNORED = WORKER_IGNORED  # further control-plane nodes: kept where and as they were made
# The node material step's parameters (components/kubeadm.py node_material).
_MATERIAL_KEYS = (
    "REGISTRY_HOST",
    "REGISTRY_CA_PEM",
    "REGISTRY_HOSTS_TOML",
    "CONTAINERD_CONFIG_PY",
    "CRICTL_YAML",
    "OPERATOR_SSH_PUBLIC_KEY",
    "MATERIAL_DIGEST",
)


def worker_names(count: int) -> list[str]:
    return [f"worker{index}" for index in range(1, count + 1)]


def control_plane_names(count: int) -> list[str]:
    """master (the tutorial's name, the node that ran `kubeadm init`), then master2, master3."""
    return [CONTROL_PLANE if index == 1 else f"{CONTROL_PLANE}{index}" for index in range(1, count + 1)]


def instance_type_notice(hostname: str, running: str | None, configured: str, *, member: bool = False) -> str | None:
    """What to tell a user whose running worker (or control-plane ``member``) keeps another type (ignored)."""
    if not running or running == configured:
        return None
    if member:
        return (
            f"{hostname} runs {running}; controlPlaneInstanceType is {configured}. Control-plane members after "
            "the first keep their type (a change would stop and start them all at once, and etcd would lose its "
            "quorum): replaced ones get the new one (README, Day 2, 'Replace a control-plane member')."
        )
    return (
        f"{hostname} runs {running}; workerInstanceType is {configured}. Running workers keep their type "
        "(a change would stop and start every worker at once): new and replaced workers get the new one. "
        f"Roll this one with `pulumi up --replace` on its instance (README, Day 2, 'Roll a worker')."
    )


def worker_subnet_index(worker: int, subnet_count: int) -> int:
    """Where worker N (1-based) is created: round robin over the zones, worker1 in the second zone.

    The control plane and GitLab sit in the first zone, so the first worker goes elsewhere when it can.
    """
    return worker % subnet_count


def control_plane_subnet_index(index: int, subnet_count: int) -> int:
    """Where control-plane node N (1-based) is created: master in the first zone, master2 in the next..."""
    return (index - 1) % subnet_count


@dataclass(frozen=True)
class Node:
    name: str  # host name and Kubernetes node name
    role: str  # "control-plane" or "worker"
    instance: aws.ec2.Instance
    ssh_host: pulumi.Output[str]  # the public address steps connect to
    private_ip: pulumi.Output[str]
    public_ip: pulumi.Output[str]
    material: command.remote.Command  # the node material step: registry trust, containerd, operator key


@dataclass(frozen=True)
class NodeBuilder:
    """What every node of the cluster is made from: the image, the profile, the material, the groups."""

    name: str  # the cluster's
    config: StackConfig
    ami_id: pulumi.Input[str]
    instance_profile: pulumi.Input[str]  # workers'
    control_plane_profile: pulumi.Input[str]  # every control-plane node's (etcd snapshots' writer)
    material: pulumi.Output[dict[str, str]]
    subnet_ids: list[pulumi.Input[str]]
    cluster_group_id: pulumi.Input[str]
    control_plane_group_id: pulumi.Input[str]
    ssh: SshAccess
    parent: pulumi.Resource

    def spec(
        self,
        hostname: str,
        instance_type: str,
        subnet_id: pulumi.Input[str],
        groups: list,
        public: bool,
        control_plane: bool = False,
    ) -> HostSpec:
        config = self.config
        return HostSpec(
            instance_type=instance_type,
            subnet_id=subnet_id,
            security_group_ids=groups,
            user_data=render(
                kubeadm.node_cloud_config(
                    hostname=hostname,
                    kubernetes_minor=config.kubernetes_version,
                    kubernetes_patch=config.kubernetes_patch,
                    operator_ssh_public_key=config.operator_ssh_public_key,
                )
            ),
            ami_id=self.ami_id,
            key_name=self.ssh.key_name,
            instance_profile=self.control_plane_profile if control_plane else self.instance_profile,
            associate_public_ip=public,
        )

    def material_step(
        self, hostname: str, host: pulumi.Input[str], instance: aws.ec2.Instance, after: list
    ) -> command.remote.Command:
        material = self.material
        return remote_step(
            f"{self.name}-{hostname}-config",
            host=host,
            private_key=self.ssh.private_key_openssh,
            script="cluster/node-config.sh",
            libs=["lib/operator-key.sh"],
            env={"SSH_USER": SSH_USER, **{key: material.apply(lambda m, key=key: m[key]) for key in _MATERIAL_KEYS}},
            triggers=[instance.id],  # a new instance starts from its user data: apply everything again
            opts=pulumi.ResourceOptions(parent=self.parent, depends_on=after),
        )

    def control_plane(self, index: int, *, after: list[pulumi.Resource]) -> Node:
        """Control-plane node ``index`` (2 or 3), made once ``after`` is done (the cluster accepts it).

        It joins the first one (components/cluster_members.py): like workers it is reached on an
        auto-assigned public address and keeps its zone and type; unlike workers it is protected.
        """
        hostname = control_plane_names(index)[-1]
        config = self.config
        instance = hardened_instance(
            f"{self.name}-{hostname}",
            self.spec(
                hostname,
                config.control_plane_instance_type,
                self.subnet_ids[control_plane_subnet_index(index, len(self.subnet_ids))],
                [self.cluster_group_id, self.control_plane_group_id],
                public=True,
                control_plane=True,
            ),
            config,
            pulumi.ResourceOptions(
                parent=self.parent,
                ignore_changes=MEMBER_IGNORED,
                protect=True,
                delete_before_replace=True,
                depends_on=after,
            ),
        )
        # The preview shows no change for a new controlPlaneInstanceType here (ignored): say it.
        instance.instance_type.apply(
            lambda running: _warn(
                instance, instance_type_notice(hostname, running, config.control_plane_instance_type, member=True)
            )
        )
        return Node(
            name=hostname,
            role="control-plane",
            instance=instance,
            ssh_host=instance.public_ip,
            private_ip=instance.private_ip,
            public_ip=instance.public_ip,
            material=self.material_step(hostname, instance.public_ip, instance, []),
        )


@dataclass(frozen=True)
class ClusterNodes:
    control_planes: list[Node]  # the first; further ones are made later (builder.control_plane)
    workers: list[Node]
    endpoint: aws.ec2.Eip  # the first control plane's Elastic IP: the API's stable public address
    builder: NodeBuilder
    control_plane_role: pulumi.Output[str]  # the control planes' own IAM role (name): what only they may do


def cluster_nodes(
    name: str,
    config: StackConfig,
    *,
    subnet_ids: Sequence[pulumi.Input[str]],
    cluster_group_id: pulumi.Input[str],
    control_plane_group_id: pulumi.Input[str],
    registry_host: pulumi.Input[str],
    registry_ca_pem: pulumi.Input[str],
    ssh: SshAccess,
    parent: pulumi.Resource,
) -> ClusterNodes:
    # Control-plane nodes get a role of their own (workers must not write etcd snapshots,
    # components/backups.py); every control-plane node has it, the members too.
    control_plane_profile = instance_profile(f"{name}-control-plane", config, parent)
    material = pulumi.Output.all(registry_host, registry_ca_pem).apply(
        lambda values: kubeadm.node_material(
            registry_host=values[0],
            registry_ca_pem=values[1],
            operator_ssh_public_key=config.operator_ssh_public_key,
        )
    )
    builder = NodeBuilder(
        name=name,
        config=config,
        ami_id=debian_ami_id(config, parent),
        instance_profile=instance_profile(name, config, parent).name,
        control_plane_profile=control_plane_profile.name,
        material=material,
        subnet_ids=list(subnet_ids),
        cluster_group_id=cluster_group_id,
        control_plane_group_id=control_plane_group_id,
        ssh=ssh,
        parent=parent,
    )

    # The control plane's address must be stable and known before the instance exists (it is a SAN
    # of the API certificate and the kubeconfig's server): an Elastic IP, allocated first.
    endpoint = aws.ec2.Eip(
        f"{name}-{CONTROL_PLANE}-eip",
        domain="vpc",
        tags=config.tags(f"{name}-{CONTROL_PLANE}-eip"),
        opts=pulumi.ResourceOptions(parent=parent),
    )
    master = hardened_instance(
        f"{name}-{CONTROL_PLANE}",
        builder.spec(
            CONTROL_PLANE,
            config.control_plane_instance_type,
            subnet_ids[0],
            [cluster_group_id, control_plane_group_id],
            public=False,
            control_plane=True,
        ),
        config,
        # Replacing the control plane would run `kubeadm init` on an empty etcd: refused (README "Day 2").
        pulumi.ResourceOptions(parent=parent, ignore_changes=CONTROL_PLANE_IGNORED, protect=True),
    )
    association = aws.ec2.EipAssociation(
        f"{name}-{CONTROL_PLANE}-eip-assoc",
        instance_id=master.id,
        allocation_id=endpoint.allocation_id,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    control_planes = [
        Node(
            name=CONTROL_PLANE,
            role="control-plane",
            instance=master,
            ssh_host=endpoint.public_ip,
            private_ip=master.private_ip,
            public_ip=endpoint.public_ip,
            material=builder.material_step(CONTROL_PLANE, endpoint.public_ip, master, [association]),
        )
    ]

    # Workers get auto-assigned public IPs, not Elastic IPs: the app URLs only need to be reachable,
    # and Elastic IPs are limited to 5 per region by default (GitLab and the control plane already
    # hold two), which workerCount up to 20 would exceed. A worker's address changes only when it is
    # stopped or replaced; the appUrls output follows on `pulumi up`.
    workers = []
    for index, hostname in enumerate(worker_names(config.worker_count), start=1):
        instance = hardened_instance(
            f"{name}-{hostname}",
            builder.spec(
                hostname,
                config.worker_instance_type,
                subnet_ids[worker_subnet_index(index, len(subnet_ids))],
                [cluster_group_id],
                public=True,
            ),
            config,
            pulumi.ResourceOptions(parent=parent, ignore_changes=WORKER_IGNORED, delete_before_replace=True),
        )
        # The preview shows no change for a new workerInstanceType (ignored): say it, once per worker.
        instance.instance_type.apply(
            lambda running, hostname=hostname, instance=instance: _warn(
                instance, instance_type_notice(hostname, running, config.worker_instance_type)
            )
        )
        workers.append(
            Node(
                name=hostname,
                role="worker",
                instance=instance,
                ssh_host=instance.public_ip,
                private_ip=instance.private_ip,
                public_ip=instance.public_ip,
                material=builder.material_step(hostname, instance.public_ip, instance, []),
            )
        )
    return ClusterNodes(
        control_planes=control_planes,
        workers=workers,
        endpoint=endpoint,
        builder=builder,
        control_plane_role=control_plane_profile.role.apply(lambda role: role or ""),
    )


def _warn(resource: pulumi.Resource, message: str | None) -> None:
    if message:
        pulumi.log.warn(message, resource=resource)
