"""Further control-plane nodes (controlPlaneCount 3): checked for, admitted, joined one at a time, removed.

Order of events, after the first node's upgrade gate (components/cluster_lifecycle.py), so that a
new member joins the version the cluster runs:
1. ``<cluster>-ha-check`` (first node): the cluster can take members, i.e. it was initialised with
   the stable endpoint and the Pulumi-made shared keys; otherwise it refuses, naming the way
   forward, before any member instance exists (userdata/cluster/control-plane-ha-check.sh). The
   same refusal happens at preview when the cluster's endpoint is already known.
2. for each member in turn (master2, then master3):
   a. its instance (components/cluster_nodes.py NodeBuilder.control_plane) and material step;
   b. ``<cluster>-<member>-membership`` (first node): create renews the bootstrap token and clears
      what a predecessor under the same name left in etcd and in the cluster; delete (the member is
      removed or replaced) drains it, removes its etcd member and deletes its Node, before its
      instance goes and so before a successor joins (the instance is delete-before-replace);
   c. ``<cluster>-<member>-join`` (the member): the shared PKI over stdin, `kubeadm join
      --control-plane`, then Ready. The next member's membership step waits for it: etcd takes one
      learner at a time, and kubeadm's own tools join control-plane nodes sequentially;
   d. with the load balancer, its target registration, once joined.

A phase of ``KubeadmCluster`` (components/cluster.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_command as command

from components import kubeadm
from components.cluster_endpoint import register
from components.cluster_nodes import Node, NodeBuilder
from components.cluster_pki import ClusterPki
from components.config import StackConfig
from components.hosts import SshAccess
from components.remote import remote_step

JOIN_READY_TIMEOUT_SECONDS = 900
DRAIN_TIMEOUT_SECONDS = 600
MEMBER_LIBS = ["cluster/bootstrap-token.sh", "cluster/etcd-members.sh"]


@dataclass(frozen=True)
class Member:
    node: Node
    membership: command.remote.Command  # create: admitted; delete: drained, out of etcd, Node deleted
    join: command.remote.Command  # joined and Ready
    target: aws.lb.TargetGroupAttachment | None  # behind the load balancer


def ha_refusal(endpoint: str, stable: str, count: int) -> None:
    """Refuse, at preview when the cluster's endpoint is known, further members of a cluster without the stable one."""
    if count > 1 and endpoint != stable:
        raise pulumi.RunError(
            f"controlPlaneCount: got {count}; this cluster was initialised with controlPlaneEndpoint {endpoint} "
            f"(its first node's address), before the program gave every cluster the stable endpoint {stable}, and "
            "kubeadm cannot add control-plane nodes to it safely. Set controlPlaneCount back to 1 "
            "(`pulumi config set controlPlaneCount 1`); for a highly available control plane, create a new stack "
            "with this program and move to it (README, 'Highly available control plane')"
        )


def control_plane_members(
    name: str,
    config: StackConfig,
    builder: NodeBuilder,
    *,
    master: Node,
    pki: ClusterPki,
    cluster_endpoint: pulumi.Output[str],
    stable_endpoint: str,
    ssh: SshAccess,
    targets: aws.lb.TargetGroup | None,
    after: list[pulumi.Resource],
    parent: pulumi.Resource,
) -> list[Member]:
    """The members after the first, each joined after the previous one; ``after``: the upgrade gate."""
    if config.control_plane_count == 1:
        return []
    # An exception here stops the program; while the endpoint is unknown (a preview that runs the
    # init step again) the check step below refuses instead.
    cluster_endpoint.apply(lambda endpoint: ha_refusal(endpoint, stable_endpoint, config.control_plane_count))
    check = remote_step(
        f"{name}-ha-check",
        host=master.ssh_host,
        private_key=ssh.private_key_openssh,
        script="cluster/control-plane-ha-check.sh",
        env={"CONTROL_PLANE_ENDPOINT": stable_endpoint, "SHARED_PUBLIC_SHA256": pki.shared_public_digests()},
        triggers=[master.instance.id],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=after),
    )
    members: list[Member] = []
    previous: list[pulumi.Resource] = [check]
    for index in range(2, config.control_plane_count + 1):
        node = builder.control_plane(index, after=[check])
        member = _join(
            name, node, master=master, pki=pki, endpoint=cluster_endpoint, ssh=ssh, after=previous, parent=parent
        )
        target = register(name, targets, node, after=[member.join], parent=parent) if targets is not None else None
        members.append(Member(node, member.membership, member.join, target))
        previous = [member.join]
    return members


@dataclass(frozen=True)
class _Joined:
    membership: command.remote.Command
    join: command.remote.Command


def _join(
    name: str,
    node: Node,
    *,
    master: Node,
    pki: ClusterPki,
    endpoint: pulumi.Output[str],
    ssh: SshAccess,
    after: list[pulumi.Resource],
    parent: pulumi.Resource,
) -> _Joined:
    membership = remote_step(
        f"{name}-{node.name}-membership",
        host=master.ssh_host,
        private_key=ssh.private_key_openssh,
        script="cluster/admit-control-plane.sh",
        libs=MEMBER_LIBS,
        env={
            "NODE_NAME": node.name,
            "NODE_IP": node.private_ip,
            "TOKEN_TTL_HOURS": str(kubeadm.BOOTSTRAP_TOKEN_TTL_HOURS),
            "TOKEN_GROUP": kubeadm.BOOTSTRAP_TOKEN_GROUP,
        },
        stdin=pulumi.Output.secret(pki.bootstrap_token.apply(lambda token: token + "\n")),
        delete_script="cluster/remove-control-plane.sh",
        delete_env={
            "NODE_NAME": node.name,
            "NODE_IP": node.private_ip,
            "DRAIN_TIMEOUT_SECONDS": str(DRAIN_TIMEOUT_SECONDS),
        },
        # Bound to this instance: replacing the member replaces this step, whose delete (the old
        # member out of etcd) runs before the instance goes (delete-before-replace).
        triggers=[node.instance.id],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=after),
    )
    join_config = pulumi.Output.all(
        node_ip=node.private_ip, endpoint=endpoint, token=pki.bootstrap_token, ca_hash=pki.ca_cert_hash
    ).apply(
        lambda v: kubeadm.render_documents(
            [
                kubeadm.join_configuration(
                    node_name=node.name,
                    node_ip=v["node_ip"],
                    api_server_endpoint=v["endpoint"],
                    bootstrap_token=v["token"],
                    ca_cert_hashes=[v["ca_hash"]],
                    control_plane=True,
                )
            ]
        )
    )
    join = remote_step(
        f"{name}-{node.name}-join",
        host=node.ssh_host,
        private_key=ssh.private_key_openssh,
        script="cluster/control-plane-join.sh",
        libs=["cluster/packages.sh"],
        env={
            "NODE_NAME": node.name,
            "API_SERVER_ENDPOINT": endpoint,
            "TIMEOUT_SECONDS": str(JOIN_READY_TIMEOUT_SECONDS),
        },
        # The JoinConfiguration (the token), then every shared file (the CA keys): secret.
        stdin=pulumi.Output.secret(
            pulumi.Output.all(join_config, pki.shared_material()).apply(lambda v: kubeadm.stdin_bundle([v[0], *v[1]]))
        ),
        triggers=[node.instance.id],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[membership, node.material]),
    )
    return _Joined(membership, join)
