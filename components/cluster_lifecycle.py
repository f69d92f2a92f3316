"""Day 2 of the cluster: Kubernetes upgrades by configuration, and certificates that renew themselves.

Upgrade order (kubernetes.io "Upgrading kubeadm clusters", "Upgrading Linux nodes"), every step a
no-op when the node already runs the target:

0. ``pre_upgrade`` hook: steps that must finish before kubeadm touches the control plane. The
   backups change plugs its etcd snapshot in here (``KubeadmClusterArgs.pre_upgrade``); its timer
   on a further control-plane node follows that node's join (``KubeadmClusterArgs.member_joined``).
1. ``<cluster>-master-upgrade``, the gate: reads the version the cluster runs and refuses, before
   changing anything, a skipped minor or a downgrade, naming the allowed next step. Then the
   repository moves to the target minor, kubeadm to the target patch, `kubeadm upgrade plan` and
   `kubeadm upgrade apply` (which also renews the control plane's certificates), drain, kubelet and
   kubectl, restart, uncordon. Prints the version the control plane runs: the `kubernetesVersion`
   output, and the version workers follow.
2. each further control-plane node in turn (master2, then master3: controlPlaneCount 3), on the
   node itself: kubeadm, `kubeadm upgrade node`, drain, kubelet/kubectl, restart, uncordon. kubeadm's
   order for the other control-plane nodes, one at a time; it upgrades the add-ons with the last.
3. each worker in turn (worker2 waits for worker1), after the control plane: drain (on the first
   control-plane node), `kubeadm upgrade node` + kubelet/kubectl + restart (on the worker), then
   wait Ready and uncordon (first control-plane node).

Certificates: ``<cluster>-<node>-certificates`` installs, on each control-plane node, a daily
systemd timer that renews that node's kubeadm certificates when one has less than 30 days left,
runs the same check now, and prints the node's earliest expiry. Each re-runs on the first `pulumi
up` of each UTC day (the day is one of its triggers, components/clock.py), so the first preview of
each day shows them replaced.

A phase of ``KubeadmCluster`` (components/cluster.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_command as command

from components import clock, kubeadm
from components.cluster_nodes import Node
from components.config import StackConfig
from components.hosts import SshAccess
from components.remote import remote_step, step_script

RENEW_BEFORE_DAYS = 30  # renew kubeadm's certificates with less than this left (they last one year)
NODE_READY_TIMEOUT_SECONDS = 900
DRAIN_TIMEOUT_SECONDS = 600
PACKAGES = ["cluster/packages.sh"]


@dataclass(frozen=True)
class UpgradeContext:
    """What a pre-upgrade hook may use: the first control plane, the SSH key and the target."""

    cluster_name: str
    control_plane: Node
    ssh: SshAccess
    target: dict[str, str]  # TARGET_MINOR, TARGET_VERSION (exact patch or "")
    control_plane_role: pulumi.Input[str]  # the control-plane nodes' IAM role (name): etcd snapshots' writer
    after: list[pulumi.Resource]  # what the hook's steps must wait for
    parent: pulumi.Resource


# Returns resources the control-plane upgrade must wait for (e.g. an etcd snapshot step).
PreUpgradeHook = Callable[[UpgradeContext], Sequence[pulumi.Resource]]


@dataclass(frozen=True)
class MemberContext:
    """What a member hook may use: a further control-plane node (master2, master3), once it has joined."""

    cluster_name: str
    node: Node
    ssh: SshAccess
    after: list[pulumi.Resource]  # its join: etcd runs on it
    parent: pulumi.Resource


# Runs once per further control-plane node, after the pre-upgrade hook (e.g. its etcd snapshot timer).
MemberHook = Callable[[MemberContext], Sequence[pulumi.Resource]]


def upgrade_control_plane(
    name: str,
    config: StackConfig,
    master: Node,
    ssh: SshAccess,
    *,
    after: list[pulumi.Resource],
    pre_upgrade: PreUpgradeHook | None,
    control_plane_role: pulumi.Input[str],
    parent: pulumi.Resource,
) -> command.remote.Command:
    """The gate and the control plane's upgrade; its stdout is the version the control plane runs."""
    target = kubeadm.upgrade_target(config.kubernetes_version, config.kubernetes_patch)
    context = UpgradeContext(
        cluster_name=name,
        control_plane=master,
        ssh=ssh,
        target=target,
        control_plane_role=control_plane_role,
        after=after,
        parent=parent,
    )
    hooked = list(pre_upgrade(context)) if pre_upgrade else []
    return remote_step(
        f"{name}-{master.name}-upgrade",
        host=master.ssh_host,
        private_key=ssh.private_key_openssh,
        script="cluster/control-plane-upgrade.sh",
        libs=PACKAGES,
        env={
            "NODE_NAME": master.name,
            **target,
            "DRAIN_TIMEOUT_SECONDS": str(DRAIN_TIMEOUT_SECONDS),
            "TIMEOUT_SECONDS": str(NODE_READY_TIMEOUT_SECONDS),
        },
        triggers=[master.instance.id],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[*after, *hooked]),
    )


def upgrade_workers(
    name: str,
    workers: list[tuple[Node, pulumi.Resource]],
    master: Node,
    ssh: SshAccess,
    *,
    version: pulumi.Output[str],
    after: list[pulumi.Resource],
    parent: pulumi.Resource,
) -> list[command.remote.Command]:
    """Bring each worker, one after the other, to the control plane's ``version``; returns each worker's last step.

    ``workers`` pairs each worker with the step after which it is a Ready member of the cluster.
    """
    done: list[command.remote.Command] = []
    previous: list[pulumi.Resource] = list(after)
    for worker, admitted in workers:
        env = {"NODE_NAME": worker.name, "KUBERNETES_VERSION": version}
        drain = remote_step(
            f"{name}-{worker.name}-upgrade-drain",
            host=master.ssh_host,
            private_key=ssh.private_key_openssh,
            script="cluster/worker-upgrade-drain.sh",
            env={**env, "DRAIN_TIMEOUT_SECONDS": str(DRAIN_TIMEOUT_SECONDS)},
            triggers=[worker.instance.id],
            opts=pulumi.ResourceOptions(parent=parent, depends_on=[*previous, admitted]),
        )
        upgrade = remote_step(
            f"{name}-{worker.name}-upgrade",
            host=worker.ssh_host,
            private_key=ssh.private_key_openssh,
            script="cluster/worker-upgrade.sh",
            libs=PACKAGES,
            env={"NODE_NAME": worker.name, "KUBERNETES_VERSION": version},
            triggers=[worker.instance.id],
            # Never alongside the worker's material step, which may restart containerd.
            opts=pulumi.ResourceOptions(parent=parent, depends_on=[drain, worker.material]),
        )
        uncordon = remote_step(
            f"{name}-{worker.name}-upgrade-uncordon",
            host=master.ssh_host,
            private_key=ssh.private_key_openssh,
            script="cluster/worker-upgrade-uncordon.sh",
            env={**env, "TIMEOUT_SECONDS": str(NODE_READY_TIMEOUT_SECONDS)},
            triggers=[worker.instance.id],
            opts=pulumi.ResourceOptions(parent=parent, depends_on=[upgrade]),
        )
        done.append(uncordon)
        previous = [uncordon]
    return done


def upgrade_control_plane_members(
    name: str,
    members: list[tuple[Node, pulumi.Resource]],
    ssh: SshAccess,
    *,
    version: pulumi.Output[str],
    after: list[pulumi.Resource],
    parent: pulumi.Resource,
) -> list[command.remote.Command]:
    """Bring each further control-plane node, one after the other, to the first node's ``version``.

    ``members`` pairs each node with the step after which it is a joined control-plane node. Each
    step runs on its node, with that node's admin.conf.
    """
    done: list[command.remote.Command] = []
    previous: list[pulumi.Resource] = list(after)
    for node, joined in members:
        upgrade = remote_step(
            f"{name}-{node.name}-upgrade",
            host=node.ssh_host,
            private_key=ssh.private_key_openssh,
            script="cluster/control-plane-upgrade-node.sh",
            libs=PACKAGES,
            env={
                "NODE_NAME": node.name,
                "KUBERNETES_VERSION": version,
                "DRAIN_TIMEOUT_SECONDS": str(DRAIN_TIMEOUT_SECONDS),
                "TIMEOUT_SECONDS": str(NODE_READY_TIMEOUT_SECONDS),
            },
            triggers=[node.instance.id],
            # Never alongside the node's material step, which may restart containerd.
            opts=pulumi.ResourceOptions(parent=parent, depends_on=[*previous, joined, node.material]),
        )
        done.append(upgrade)
        previous = [upgrade]
    return done


def certificate_renewal(
    name: str, node: Node, ssh: SshAccess, *, after: list[pulumi.Resource], parent: pulumi.Resource
) -> command.remote.Command:
    """The renewal timer on a control-plane node, installed and run once now; stdout: its earliest expiry."""
    return remote_step(
        f"{name}-{node.name}-certificates",
        host=node.ssh_host,
        private_key=ssh.private_key_openssh,
        script="cluster/certificates.sh",
        env={
            "RENEW_BEFORE_DAYS": str(RENEW_BEFORE_DAYS),
            # The program the timer runs: common.sh + the renewal script, installed by the step.
            "RENEWAL_PROGRAM": step_script("cluster/renew-certificates.sh"),
        },
        # Checked again on the first `pulumi up` of each UTC day: a trigger, so that the day's
        # preview shows one changed value (the date) rather than the whole command.
        triggers=[node.instance.id, clock.today().isoformat()],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=after),
    )
