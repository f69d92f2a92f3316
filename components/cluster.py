"""KubeadmCluster: a control plane (`master`) and N workers (`worker1`..`workerN`) on EC2.

Everything a node needs to trust or be trusted is made here first, by Pulumi: the cluster CA, the
admin client certificate, the bootstrap token. So the workers pin the CA (caCertHashes) and join in
parallel, and the kubeconfig needs no copy from the control plane.

Order of events on `pulumi up`:
1. user data (public material only) boots every node: containerd, kubelet/kubeadm/kubectl, registry
   trust (userdata/cluster/node-bootstrap.sh);
2. over SSH, with secrets on stdin (components/remote.py): read the installed kubeadm version,
   `kubeadm init` on the control plane, Flannel, a fresh bootstrap token, `kubeadm join` on every
   worker (each waits for the token step only, never for another worker);
3. a last step waits (bounded) until every node is Ready; the Kubernetes provider depends on it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pulumi_random as random
import pulumi_tls as tls

from components import kubeadm
from components.cloudinit import render
from components.config import StackConfig
from components.hosts import HostSpec, SshAccess, debian_ami_id, hardened_instance, instance_profile
from components.remote import remote_step

CONTROL_PLANE = "master"
CA_VALIDITY_HOURS = 87600  # 10 years, kubeadm's own CA validity (caCertificateValidityPeriod default)
ADMIN_CERT_VALIDITY_HOURS = 8760  # 1 year, like kubeadm's admin.conf
ADMIN_CERT_EARLY_RENEWAL_HOURS = 720  # `pulumi up` in the last 30 days issues a new one
NODES_READY_TIMEOUT_SECONDS = 900


def worker_names(count: int) -> list[str]:
    return [f"worker{index}" for index in range(1, count + 1)]


@dataclass(frozen=True)
class KubeadmClusterArgs:
    config: StackConfig
    subnet_ids: Sequence[pulumi.Input[str]]
    cluster_security_group_id: pulumi.Input[str]  # made empty by Network; the rules are added here
    gitlab_security_group_id: pulumi.Input[str]  # GitLab and push-mode jobs call the private API
    registry_host: pulumi.Input[str]  # GitLab's registry, <host>:5050: every node trusts it
    registry_ca_pem: pulumi.Input[str]  # GitLab's CA certificate (public)
    ssh: SshAccess


class KubeadmCluster(pulumi.ComponentResource):
    private_api_url: pulumi.Output[str]  # https://<control-plane private IP>:6443: what GitLab uses
    public_api_url: pulumi.Output[str]  # https://<Elastic IP>:6443: the kubeconfig's server
    ca_pem: pulumi.Output[str]
    ca_cert_hash: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]  # secret
    kubernetes_version: pulumi.Output[str]  # exact version the control plane runs, e.g. v1.36.5
    node_names: list[str]
    node_private_ips: list[pulumi.Output[str]]
    node_public_ips: list[pulumi.Output[str]]
    nodes: pulumi.Output[list[dict[str, str]]]
    app_urls: pulumi.Output[list[str]]
    provider: k8s.Provider  # ready to use: it depends on every node being Ready

    def __init__(self, name: str, args: KubeadmClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gitops:cluster:KubeadmCluster", name, None, opts)
        config = args.config
        child = pulumi.ResourceOptions(parent=self)
        self._name = name
        self._config = config

        # ---- PKI and the bootstrap token, all made before any host exists ----------------------
        # RSA 2048 is kubeadm's default encryptionAlgorithm, so the CA matches the keys it makes.
        ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="RSA", rsa_bits=2048, opts=child)
        ca_cert = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=ca_key.private_key_pem,
            subject=tls.SelfSignedCertSubjectArgs(common_name="kubernetes"),  # kubeadm's CA name
            is_ca_certificate=True,
            validity_period_hours=CA_VALIDITY_HOURS,
            allowed_uses=["cert_signing", "key_encipherment", "digital_signature"],
            opts=child,
        )
        admin_key = tls.PrivateKey(f"{name}-admin-key", algorithm="RSA", rsa_bits=2048, opts=child)
        admin_csr = tls.CertRequest(
            f"{name}-admin-csr",
            private_key_pem=admin_key.private_key_pem,
            # The organization is the Kubernetes group: see kubeadm.ADMIN_GROUP for why not system:masters.
            subject=tls.CertRequestSubjectArgs(common_name=kubeadm.ADMIN_USER, organization=kubeadm.ADMIN_GROUP),
            opts=child,
        )
        admin_cert = tls.LocallySignedCert(
            f"{name}-admin-cert",
            cert_request_pem=admin_csr.cert_request_pem,
            ca_private_key_pem=ca_key.private_key_pem,
            ca_cert_pem=ca_cert.cert_pem,
            validity_period_hours=ADMIN_CERT_VALIDITY_HOURS,
            early_renewal_hours=ADMIN_CERT_EARLY_RENEWAL_HOURS,
            allowed_uses=["digital_signature", "key_encipherment", "client_auth"],
            opts=child,
        )
        # Bootstrap token [a-z0-9]{6}.[a-z0-9]{16}: the id is public (it names the Secret), the
        # second half is the credential, hence a RandomPassword (stored as a secret by the provider).
        token_id = random.RandomString(
            f"{name}-token-id", length=6, lower=True, numeric=True, upper=False, special=False, opts=child
        )
        token_secret = random.RandomPassword(
            f"{name}-token-secret", length=16, lower=True, numeric=True, upper=False, special=False, opts=child
        )
        bootstrap_token = pulumi.Output.secret(pulumi.Output.concat(token_id.result, ".", token_secret.result))
        self.ca_pem = ca_cert.cert_pem
        self.ca_cert_hash = ca_cert.cert_pem.apply(kubeadm.ca_cert_hash)

        # ---- Network: ingress rules on the (empty) cluster group made by Network -----------------
        self._ingress_rules(args)

        # ---- Hosts -------------------------------------------------------------------------------
        ami_id = debian_ami_id(config, self)
        profile = instance_profile(name, config, self)
        subnet_ids = list(args.subnet_ids)

        def spec(hostname: str, instance_type: str, subnet_id: pulumi.Input[str], public_ip: bool) -> HostSpec:
            user_data = pulumi.Output.all(args.registry_host, args.registry_ca_pem).apply(
                lambda values: render(
                    kubeadm.node_cloud_config(
                        hostname=hostname,
                        kubernetes_minor=config.kubernetes_version,
                        registry_host=values[0],
                        registry_ca_pem=values[1],
                        operator_ssh_public_key=config.operator_ssh_public_key,
                    )
                )
            )
            return HostSpec(
                instance_type=instance_type,
                subnet_id=subnet_id,
                security_group_ids=[args.cluster_security_group_id],
                user_data=user_data,
                ami_id=ami_id,
                key_name=args.ssh.key_name,
                instance_profile=profile.name,
                associate_public_ip=public_ip,
            )

        # The control plane's address must be stable and known before the instance exists (it is a
        # SAN of the API certificate and the kubeconfig's server): an Elastic IP, allocated first.
        eip = aws.ec2.Eip(
            f"{name}-{CONTROL_PLANE}-eip", domain="vpc", tags=config.tags(f"{name}-{CONTROL_PLANE}-eip"), opts=child
        )
        master = hardened_instance(
            f"{name}-{CONTROL_PLANE}",
            spec(CONTROL_PLANE, config.control_plane_instance_type, subnet_ids[0], public_ip=False),
            config,
            child,
        )
        association = aws.ec2.EipAssociation(
            f"{name}-{CONTROL_PLANE}-eip-assoc", instance_id=master.id, allocation_id=eip.allocation_id, opts=child
        )
        # Workers get auto-assigned public IPs, not Elastic IPs: the app URLs only need to be
        # reachable, and Elastic IPs are limited to 5 per region by default (GitLab and the control
        # plane already hold two), which workerCount up to 20 would exceed. A worker's address
        # changes only when it is stopped or replaced; the appUrls output follows on `pulumi up`.
        workers = [
            hardened_instance(
                f"{name}-{hostname}",
                spec(hostname, config.worker_instance_type, subnet_ids[index % len(subnet_ids)], public_ip=True),
                config,
                child,
            )
            for index, hostname in enumerate(worker_names(config.worker_count), start=1)
        ]

        # ---- Bootstrap over SSH ------------------------------------------------------------------
        private_key = args.ssh.private_key_openssh
        api_endpoint = master.private_ip.apply(lambda ip: f"{ip}:{kubeadm.API_SERVER_PORT}")

        version_step = remote_step(
            f"{name}-{CONTROL_PLANE}-kubeadm-version",
            host=eip.public_ip,
            private_key=private_key,
            script="cluster/kubeadm-version.sh",
            env={"KUBERNETES_MINOR": config.kubernetes_version},
            triggers=[master.id],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[association]),
        )
        self.kubernetes_version = version_step.stdout.apply(
            lambda stdout: kubeadm.installed_kubernetes_version(stdout, config.kubernetes_version)
        )

        init_config = pulumi.Output.all(
            version=self.kubernetes_version,
            private_ip=master.private_ip,
            public_ip=eip.public_ip,
            public_dns=eip.public_dns,
            token=bootstrap_token,
        ).apply(
            lambda v: kubeadm.render_documents(
                [
                    kubeadm.init_configuration(
                        node_name=CONTROL_PLANE, node_ip=v["private_ip"], bootstrap_token=v["token"]
                    ),
                    kubeadm.cluster_configuration(
                        cluster_name=name,
                        kubernetes_version=v["version"],
                        # Nodes and GitLab stay inside the VPC: the private address is the endpoint.
                        control_plane_endpoint=f"{v['private_ip']}:{kubeadm.API_SERVER_PORT}",
                        cert_sans=[v["public_ip"], v["public_dns"], v["private_ip"]],
                    ),
                ]
            )
        )
        init = remote_step(
            f"{name}-{CONTROL_PLANE}-init",
            host=eip.public_ip,
            private_key=private_key,
            script="cluster/control-plane-init.sh",
            env={"NODE_NAME": CONTROL_PLANE},
            stdin=pulumi.Output.secret(
                pulumi.Output.all(ca_cert.cert_pem, ca_key.private_key_pem, init_config).apply(kubeadm.stdin_bundle)
            ),
            triggers=[master.id],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[version_step]),
        )
        cni = remote_step(
            f"{name}-cni",
            host=eip.public_ip,
            private_key=private_key,
            script="cluster/install-cni.sh",
            env={"FLANNEL_VERSION": config.flannel_version, "POD_SUBNET": kubeadm.POD_SUBNET},
            triggers=[master.id],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[init]),
        )
        worker_ids = [worker.id for worker in workers]
        join_token = remote_step(
            f"{name}-join-token",
            host=eip.public_ip,
            private_key=private_key,
            script="cluster/join-token.sh",
            env={
                "TOKEN_TTL_HOURS": str(kubeadm.BOOTSTRAP_TOKEN_TTL_HOURS),
                "TOKEN_GROUP": kubeadm.BOOTSTRAP_TOKEN_GROUP,
            },
            stdin=pulumi.Output.secret(bootstrap_token.apply(lambda token: token + "\n")),
            # A new or replaced worker renews the token before it joins.
            triggers=[master.id, *worker_ids],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[init]),
        )
        joins = []
        for hostname, worker in zip(worker_names(config.worker_count), workers, strict=True):
            join_config = pulumi.Output.all(
                node_ip=worker.private_ip, endpoint=api_endpoint, token=bootstrap_token, ca_hash=self.ca_cert_hash
            ).apply(
                lambda v, hostname=hostname: kubeadm.render_documents(
                    [
                        kubeadm.join_configuration(
                            node_name=hostname,
                            node_ip=v["node_ip"],
                            api_server_endpoint=v["endpoint"],
                            bootstrap_token=v["token"],
                            ca_cert_hashes=[v["ca_hash"]],
                        )
                    ]
                )
            )
            joins.append(
                remote_step(
                    f"{name}-{hostname}-join",
                    host=worker.public_ip,
                    private_key=private_key,
                    script="cluster/worker-join.sh",
                    env={"API_SERVER_ENDPOINT": api_endpoint},
                    stdin=pulumi.Output.secret(join_config),
                    triggers=[worker.id],
                    # Only the token step: workers join in parallel, none waits for another.
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[join_token]),
                )
            )
        self.node_names = [CONTROL_PLANE, *worker_names(config.worker_count)]
        ready = remote_step(
            f"{name}-nodes-ready",
            host=eip.public_ip,
            private_key=private_key,
            script="cluster/wait-nodes-ready.sh",
            env={"NODE_NAMES": " ".join(self.node_names), "TIMEOUT_SECONDS": str(NODES_READY_TIMEOUT_SECONDS)},
            triggers=[master.id, *worker_ids],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cni, *joins]),
        )

        # ---- Outputs -----------------------------------------------------------------------------
        self.private_api_url = master.private_ip.apply(lambda ip: f"https://{ip}:{kubeadm.API_SERVER_PORT}")
        self.public_api_url = eip.public_ip.apply(lambda ip: f"https://{ip}:{kubeadm.API_SERVER_PORT}")
        self.kubeconfig = pulumi.Output.secret(
            pulumi.Output.all(
                server=self.public_api_url,
                ca=ca_cert.cert_pem,
                cert=admin_cert.cert_pem,
                key=admin_key.private_key_pem,
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
        self.node_private_ips = [master.private_ip, *(worker.private_ip for worker in workers)]
        self.node_public_ips = [eip.public_ip, *(worker.public_ip for worker in workers)]
        self.nodes = pulumi.Output.all(*self.node_private_ips, *self.node_public_ips).apply(
            lambda ips: _node_table(self.node_names, ips)
        )
        port = config.app_node_port
        self.app_urls = pulumi.Output.all(*(worker.public_ip for worker in workers)).apply(
            lambda ips: [f"http://{ip}:{port}" for ip in ips]
        )
        self.provider = k8s.Provider(
            f"{name}-provider",
            kubeconfig=self.kubeconfig,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ready]),
        )
        self.register_outputs(
            {
                "private_api_url": self.private_api_url,
                "public_api_url": self.public_api_url,
                "ca_pem": self.ca_pem,
                "ca_cert_hash": self.ca_cert_hash,
                "kubeconfig": self.kubeconfig,
                "kubernetes_version": self.kubernetes_version,
                "nodes": self.nodes,
                "app_urls": self.app_urls,
            }
        )

    def _ingress_rules(self, args: KubeadmClusterArgs) -> None:
        """Who may reach the nodes. Everything else is closed; node-to-node traffic stays in the group."""
        config = self._config
        cluster = {"referenced_security_group_id": args.cluster_security_group_id}
        api, kubelet, vxlan = kubeadm.API_SERVER_PORT, kubeadm.KUBELET_PORT, kubeadm.FLANNEL_VXLAN_PORT
        allow = self._allow
        allow(args, "api-from-cluster", "Kubernetes API from the nodes", "tcp", (api, api), cluster)
        allow(
            args,
            "api-from-gitlab",
            "Kubernetes API from GitLab (cluster integration, push-mode deploy jobs)",
            "tcp",
            (api, api),
            {"referenced_security_group_id": args.gitlab_security_group_id},
        )
        allow(args, "kubelet-from-cluster", "kubelet API from the nodes", "tcp", (kubelet, kubelet), cluster)
        allow(args, "etcd-from-cluster", "etcd client and peer from the nodes", "tcp", kubeadm.ETCD_PORTS, cluster)
        allow(args, "vxlan-from-cluster", "Flannel VXLAN overlay between the nodes", "udp", (vxlan, vxlan), cluster)
        for cidr in config.admin_cidrs:
            source = {"cidr_ipv4": cidr}
            allow(args, f"ssh-from-{_slug(cidr)}", f"SSH from admin {cidr}", "tcp", (22, 22), source)
            allow(args, f"api-from-{_slug(cidr)}", f"Kubernetes API from admin {cidr}", "tcp", (api, api), source)
        port = config.app_node_port
        for cidr in config.app_cidrs:
            source = {"cidr_ipv4": cidr}
            allow(args, f"app-from-{_slug(cidr)}", f"App NodePort {port} from {cidr}", "tcp", (port, port), source)

    def _allow(
        self,
        args: KubeadmClusterArgs,
        suffix: str,
        description: str,
        protocol: str,
        ports: tuple[int, int],
        source: dict[str, Any],
    ) -> None:
        """One ingress rule on the cluster group; ``source`` is a CIDR or a referenced group."""
        rule_name = f"{self._name}-{suffix}"
        aws.vpc.SecurityGroupIngressRule(
            rule_name,
            security_group_id=args.cluster_security_group_id,
            description=description,
            ip_protocol=protocol,
            from_port=ports[0],
            to_port=ports[1],
            tags=self._config.tags(rule_name),
            opts=pulumi.ResourceOptions(parent=self),
            **source,
        )


def _slug(cidr: str) -> str:
    """A CIDR as a stable resource-name part: 203.0.113.7/32 -> 203-0-113-7-32."""
    return re.sub(r"[^0-9a-z]+", "-", cidr.lower()).strip("-")


def _node_table(names: list[str], ips: list[Any]) -> list[dict[str, str]]:
    count = len(names)
    private_ips, public_ips = ips[:count], ips[count:]
    return [
        {
            "name": node,
            "role": "control-plane" if node == CONTROL_PLANE else "worker",
            "privateIp": private_ip,
            "publicIp": public_ip,
        }
        for node, private_ip, public_ip in zip(names, private_ips, public_ips, strict=True)
    ]
