"""Bootstrap over SSH, secrets on stdin: `kubeadm init` on the control plane, Flannel, then the workers.

Order of events:
1. read the kubeadm the control plane installed at boot (the ClusterConfiguration names that exact
   version), then, once the stable endpoint answers (components/cluster_endpoint.py), `kubeadm
   init` with the Pulumi-made CA, shared keys and token, then Flannel, then wait until the control
   plane is Ready. The init step prints the controlPlaneEndpoint the cluster was initialised with:
   the endpoint workers, further control-plane nodes and GitLab use (a cluster initialised before
   the stable endpoint existed keeps its first node's address);
2. each worker, in parallel and once the upgrade gate has passed (components/cluster_lifecycle.py:
   a new worker joins the version the control plane runs): `kubeadm join` on the worker, and on the
   control plane the worker's *membership* step. Its create refreshes the bootstrap token and waits
   until the worker's Node is Ready, so a join that is still pending (a new worker, a replaced one,
   or one whose earlier attempt failed) always finds a valid token; its delete drains the worker
   and deletes its Node, and runs before the worker's instance goes (removal or replacement);
3. once every node has joined, CoreDNS is spread over several nodes (it starts on the first one).

A phase of ``KubeadmCluster`` (components/cluster.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_command as command

from components import kubeadm
from components.cluster_endpoint import ApiEndpoint
from components.cluster_nodes import ClusterNodes, Node
from components.cluster_pki import ClusterPki
from components.config import StackConfig
from components.hosts import SshAccess
from components.remote import remote_step

CONTROL_PLANE_READY_TIMEOUT_SECONDS = 900
# A worker's membership waits for its boot (cloud-init, up to 20 min) and its join.
WORKER_READY_TIMEOUT_SECONDS = 1800
DRAIN_TIMEOUT_SECONDS = 600
DNS_ROLLOUT_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class ControlPlaneBootstrap:
    init_version: pulumi.Output[str]  # the version `kubeadm init` ran with
    ready: command.remote.Command  # the control plane is initialised, networked and Ready
    # The cluster's controlPlaneEndpoint as kubeadm recorded it (<host>:6443), read back by the init step.
    endpoint: pulumi.Output[str]


def bootstrap_control_plane(
    name: str,
    config: StackConfig,
    nodes: ClusterNodes,
    pki: ClusterPki,
    ssh: SshAccess,
    api: ApiEndpoint,
    parent: pulumi.Resource,
) -> ControlPlaneBootstrap:
    (master,) = nodes.control_planes
    endpoint = nodes.endpoint
    after = pulumi.ResourceOptions(parent=parent, depends_on=[master.material])
    version_step = remote_step(
        f"{name}-{master.name}-kubeadm-version",
        host=master.ssh_host,
        private_key=ssh.private_key_openssh,
        script="cluster/kubeadm-version.sh",
        triggers=[master.instance.id],
        opts=after,
    )
    init_version = version_step.stdout.apply(lambda out: kubeadm.kubernetes_version(out, "the kubeadm-version step"))
    init_config = pulumi.Output.all(
        version=init_version,
        private_ip=master.private_ip,
        public_ip=endpoint.public_ip,
        public_dns=endpoint.public_dns,
        token=pki.bootstrap_token,
    ).apply(
        lambda v: kubeadm.render_documents(
            [
                kubeadm.init_configuration(node_name=master.name, node_ip=v["private_ip"], bootstrap_token=v["token"]),
                kubeadm.cluster_configuration(
                    cluster_name=name,
                    kubernetes_version=v["version"],
                    # The stable name, whatever the number of control-plane nodes: nodes and GitLab
                    # use it inside the VPC; kubeadm puts its host in every API server certificate.
                    control_plane_endpoint=api.address,
                    # Admins' kubeconfig uses the first node's Elastic IP (each node's own address is
                    # added by kubeadm to its certificate).
                    cert_sans=[v["public_ip"], v["public_dns"]],
                ),
            ]
        )
    )
    init = remote_step(
        f"{name}-{master.name}-init",
        host=master.ssh_host,
        private_key=ssh.private_key_openssh,
        script="cluster/control-plane-init.sh",
        env={"NODE_NAME": master.name, "CONTROL_PLANE_ENDPOINT": api.address},
        # ca.crt, ca.key, the kubeadm documents, then the other shared files (kubeadm.SHARED_PKI_FILES).
        stdin=pulumi.Output.secret(
            pulumi.Output.all(pki.ca_cert_pem, pki.ca_key_pem, init_config, pki.shared_material()).apply(
                lambda v: kubeadm.stdin_bundle([v[0], v[1], v[2], *v[3][2:]])
            )
        ),
        triggers=[master.instance.id],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[version_step, master.material, *api.ready]),
    )
    cni = remote_step(
        f"{name}-cni",
        host=master.ssh_host,
        private_key=ssh.private_key_openssh,
        script="cluster/install-cni.sh",
        env={"FLANNEL_VERSION": config.flannel_version, "POD_SUBNET": kubeadm.POD_SUBNET},
        triggers=[master.instance.id],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[init]),
    )
    ready = remote_step(
        f"{name}-control-plane-ready",
        host=master.ssh_host,
        private_key=ssh.private_key_openssh,
        script="cluster/wait-nodes-ready.sh",
        env={
            "NODE_NAMES": " ".join(node.name for node in nodes.control_planes),
            "TIMEOUT_SECONDS": str(CONTROL_PLANE_READY_TIMEOUT_SECONDS),
        },
        triggers=[node.instance.id for node in nodes.control_planes],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[cni]),
    )
    return ControlPlaneBootstrap(
        init_version=init_version,
        ready=ready,
        endpoint=init.stdout.apply(lambda out: kubeadm.endpoint_from_step(out, "the init step")),
    )


@dataclass(frozen=True)
class WorkerBootstrap:
    join: command.remote.Command
    membership: command.remote.Command  # create: admitted and Ready; delete: drained and deleted


def bootstrap_worker(
    name: str,
    worker: Node,
    *,
    control_plane: Node,
    api_endpoint: pulumi.Output[str],
    pki: ClusterPki,
    ssh: SshAccess,
    after: list[pulumi.Resource],
    parent: pulumi.Resource,
) -> WorkerBootstrap:
    """Join one worker to ``api_endpoint`` (the cluster's); ``after`` is what must be done first (the upgrade gate)."""
    join_config = pulumi.Output.all(
        node_ip=worker.private_ip, endpoint=api_endpoint, token=pki.bootstrap_token, ca_hash=pki.ca_cert_hash
    ).apply(
        lambda v: kubeadm.render_documents(
            [
                kubeadm.join_configuration(
                    node_name=worker.name,
                    node_ip=v["node_ip"],
                    api_server_endpoint=v["endpoint"],
                    bootstrap_token=v["token"],
                    ca_cert_hashes=[v["ca_hash"]],
                )
            ]
        )
    )
    join = remote_step(
        f"{name}-{worker.name}-join",
        host=worker.ssh_host,
        private_key=ssh.private_key_openssh,
        script="cluster/worker-join.sh",
        libs=["cluster/packages.sh"],
        env={"API_SERVER_ENDPOINT": api_endpoint},
        # The JoinConfiguration (secret: the token), then the cluster CA to ask the API its version.
        stdin=pulumi.Output.secret(pulumi.Output.all(join_config, pki.ca_cert_pem).apply(kubeadm.stdin_bundle)),
        triggers=[worker.instance.id],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[worker.material, *after]),
    )
    membership = remote_step(
        f"{name}-{worker.name}-membership",
        host=control_plane.ssh_host,
        private_key=ssh.private_key_openssh,
        script="cluster/admit-worker.sh",
        libs=["cluster/bootstrap-token.sh"],
        env={
            "NODE_NAME": worker.name,
            "TOKEN_TTL_HOURS": str(kubeadm.BOOTSTRAP_TOKEN_TTL_HOURS),
            "TOKEN_GROUP": kubeadm.BOOTSTRAP_TOKEN_GROUP,
            "TIMEOUT_SECONDS": str(WORKER_READY_TIMEOUT_SECONDS),
        },
        stdin=pulumi.Output.secret(pki.bootstrap_token.apply(lambda token: token + "\n")),
        delete_script="cluster/remove-worker.sh",
        delete_env={"NODE_NAME": worker.name, "DRAIN_TIMEOUT_SECONDS": str(DRAIN_TIMEOUT_SECONDS)},
        # Bound to this instance: replacing the worker replaces its membership (drain first), and
        # removing the worker deletes it before the instance (it depends on it).
        triggers=[worker.instance.id],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=after),
    )
    return WorkerBootstrap(join=join, membership=membership)


def spread_cluster_dns(
    name: str, master: Node, ssh: SshAccess, *, after: list[pulumi.Resource], parent: pulumi.Resource
) -> command.remote.Command:
    """Once ``after`` (every node's join) is done: CoreDNS's replicas moved off the first node they started on."""
    return remote_step(
        f"{name}-spread-dns",
        host=master.ssh_host,
        private_key=ssh.private_key_openssh,
        script="cluster/spread-coredns.sh",
        env={"TIMEOUT_SECONDS": str(DNS_ROLLOUT_TIMEOUT_SECONDS)},
        triggers=[master.instance.id],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=after),
    )
