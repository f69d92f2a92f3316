"""The kubeadm cluster's bootstrap as data: kubeadm documents, node cloud-config, kubeconfig, CA pin.

Pure functions over plain values, tested without Pulumi; ``components/cluster.py`` feeds them Outputs.
Every fixed value below is fixed by an upstream document, cited next to it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from components import versions
from components.cloudinit import INSTALL_DIR, cloud_config, env_file, read_script, script_file
from components.config import CLUSTER_RANGES

# kubeadm configuration API (kubernetes/website content/en/docs/reference/config-api/kubeadm-config.v1beta4.md):
# v1beta4 is current since Kubernetes 1.31; its extraArgs/kubeletExtraArgs are lists of {name, value}.
KUBEADM_API_VERSION = "kubeadm.k8s.io/v1beta4"
API_SERVER_PORT = 6443  # APIEndpoint.bindPort default
# Flannel's kube-flannel.yml ships net-conf.json with "Network": "10.244.0.0/16"; podSubnet must match
# it (kube-controller-manager hands each node a slice of it, flannel routes it).
POD_SUBNET = CLUSTER_RANGES["pod network"]
SERVICE_SUBNET = CLUSTER_RANGES["service network"]  # Networking.serviceSubnet default
FLANNEL_VXLAN_PORT = 8472  # flannel Documentation/backends.md: vxlan "Port" defaults to the kernel's 8472 on Linux
KUBELET_PORT = 10250
ETCD_PORTS = (2379, 2380)  # client, peer
# containerd's CRI socket as installed by containerd.io (/var/run is a link to /run on Debian).
CRI_SOCKET = "unix:///var/run/containerd/containerd.sock"
# Group of the admin client certificate. kubeadm >= 1.29 binds `kubeadm:cluster-admins` to the
# cluster-admin ClusterRole (ClusterRoleBinding of the same name, made by `kubeadm init`) and uses it
# for admin.conf; `system:masters` bypasses RBAC and cannot be revoked short of replacing the CA
# (kubernetes/kubernetes PR #121305; kubeadm "Creating a cluster" doc, admin.conf vs super-admin.conf).
ADMIN_GROUP = "kubeadm:cluster-admins"
ADMIN_USER = "pulumi-admin"  # the CN: how the API server's audit log names this kubeconfig's user
# The group kubeadm grants its bootstrap tokens: bound to node bootstrapping and CSR auto-approval.
BOOTSTRAP_TOKEN_GROUP = "system:bootstrappers:kubeadm:default-node-token"
BOOTSTRAP_TOKEN_TTL_HOURS = 24  # BootstrapToken.ttl default; each worker's admit step renews it while it joins
BOOTSTRAP_TOKEN = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")  # BootstrapTokenString
CONTAINERD_HOSTS_DIR = "/etc/containerd/certs.d"  # containerd docs/hosts.md
NODE_ENV = "cluster-node"  # /etc/gitops/cluster-node.env, read by userdata/cluster/node-bootstrap.sh
# The files every control-plane node must hold identically, as kubeadm names them under
# /etc/kubernetes/pki (kubernetes.io "Creating Highly Available Clusters with kubeadm", manual
# certificate distribution: "Copy only the certificates in the above list. kubeadm will take care of
# generating the rest"; cmd/kubeadm/app/phases/certs/certs.go SharedCertificateExists checks them).
SHARED_PKI_FILES = (
    "ca.crt",
    "ca.key",
    "sa.key",
    "sa.pub",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "etcd/ca.crt",
    "etcd/ca.key",
)
# Their public halves: a node's copies are compared with these digests (userdata/cluster/control-plane-ha-check.sh).
SHARED_PUBLIC_FILES = ("sa.pub", "front-proxy-ca.crt", "etcd/ca.crt")
# The stable API endpoint's private DNS zone: `.internal` is the top-level domain IANA determined
# for private use, never to be delegated (ICANN public comment "Proposed Top-Level Domain String for
# Private Use", 2024; SSAC SAC113). AWS's own VPC domains (ec2.internal, <region>.compute.internal)
# are other names under it.
ENDPOINT_DOMAIN = "internal"
ENDPOINT_HOST_LABEL = "api"
CONTAINERD_SERIES = versions.CONTAINERD_SERIES  # the containerd.io series nodes install and hold


def ca_cert_hash(ca_pem: str) -> str:
    """kubeadm's CA pin: "sha256:" + hex SHA-256 of the CA's DER-encoded SubjectPublicKeyInfo.

    BootstrapTokenDiscovery.caCertHashes in the v1beta4 reference; `kubeadm token create
    --print-join-command` prints the same value.
    """
    certificate = x509.load_pem_x509_certificate(ca_pem.encode())
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def cluster_identifier(cluster_name: str, ca_public_key_pem: str) -> str:
    """What the Kubernetes provider calls this cluster (its ``clusterIdentifier``): the CA's key.

    pulumi-kubernetes replaces a provider, and with it every object it manages, when this value
    changes, and never otherwise (provider.go DiffConfig). Without it a preview in which the
    kubeconfig is unknown (the yearly re-issue of the admin certificate) shows every object
    replaced. The cluster CA's public key identifies the cluster for as long as its nodes pin it
    (caCertHashes), and, unlike the CA certificate, is never re-issued.
    """
    key = serialization.load_pem_public_key(ca_public_key_pem.encode())
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"kubeadm:{cluster_name}:sha256:{hashlib.sha256(spki).hexdigest()}"


def endpoint_zone(cluster_name: str) -> str:
    """The private hosted zone of a cluster's API name: <cluster name>.internal."""
    if not _DNS_LABEL.match(cluster_name):
        raise ValueError(f"cluster name {cluster_name!r} is not a DNS label (lower-case letters, digits, '-')")
    return f"{cluster_name}.{ENDPOINT_DOMAIN}"


def endpoint_host(cluster_name: str) -> str:
    """The stable name of the cluster's API, whatever the number of control-plane nodes: api.<zone>.

    It is kubeadm's controlPlaneEndpoint from the first `kubeadm init` on, so it is baked into every
    API server certificate, kubeconfig and kube-proxy's configuration: it never depends on the
    configuration (controlPlaneCount, the stack's name), only on the cluster's own name.
    """
    return f"{ENDPOINT_HOST_LABEL}.{endpoint_zone(cluster_name)}"


def control_plane_endpoint(host: str) -> str:
    return f"{host}:{API_SERVER_PORT}"


def endpoint_from_step(text: str, source: str) -> str:
    """The controlPlaneEndpoint a step read from the cluster (`<host>:<port>`), checked for its shape.

    A cluster initialised before the stable endpoint existed answers with its first node's address.
    """
    value = text.strip()
    if not _ENDPOINT.match(value):
        raise ValueError(
            f"{source} printed {value!r}; expected the cluster's controlPlaneEndpoint such as "
            f"{control_plane_endpoint('api.gitops-k8s.internal')}. See the step's output in `pulumi up`."
        )
    return value


def shared_public_digests(sa_pub: str, front_proxy_ca: str, etcd_ca: str) -> str:
    """`<file>=<sha256 hex>` for each of SHARED_PUBLIC_FILES, as the files are written (these exact bytes)."""
    pems = (sa_pub, front_proxy_ca, etcd_ca)
    return " ".join(
        f"{name}={hashlib.sha256(pem.encode()).hexdigest()}"
        for name, pem in zip(SHARED_PUBLIC_FILES, pems, strict=True)
    )


_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_ENDPOINT = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?:\d{1,5}$")
KUBERNETES_VERSION = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")


def kubernetes_version(text: str, source: str) -> str:
    """An exact Kubernetes version (``v1.36.5``) a step printed on stdout, checked for its shape.

    ``source`` names the step for the error: the version must be exact because kubeadm pulls the
    control-plane images of exactly the version its configuration names.
    """
    version = text.strip()
    if not KUBERNETES_VERSION.match(version):
        raise ValueError(
            f"{source} printed {version!r}; expected an exact version such as v1.36.5. "
            "See the step's output in `pulumi up` and /var/log/cloud-init-output.log on the control plane."
        )
    return version


def _node_registration(node_name: str, node_ip: str) -> dict[str, Any]:
    return {
        "name": node_name,
        "criSocket": CRI_SOCKET,
        # The kubelet registers with the VPC address; flannel and the API server use it.
        "kubeletExtraArgs": [{"name": "node-ip", "value": node_ip}],
    }


def init_configuration(*, node_name: str, node_ip: str, bootstrap_token: str) -> dict[str, Any]:
    """InitConfiguration: this node's registration and our pre-made bootstrap token (secret)."""
    return {
        "apiVersion": KUBEADM_API_VERSION,
        "kind": "InitConfiguration",
        "bootstrapTokens": [
            {
                "token": bootstrap_token,
                "description": "Worker join token made by Pulumi (renewed before each join)",
                "ttl": f"{BOOTSTRAP_TOKEN_TTL_HOURS}h",
                "usages": ["signing", "authentication"],
                "groups": [BOOTSTRAP_TOKEN_GROUP],
            }
        ],
        "nodeRegistration": _node_registration(node_name, node_ip),
        "localAPIEndpoint": {"advertiseAddress": node_ip, "bindPort": API_SERVER_PORT},
    }


def cluster_configuration(
    *,
    cluster_name: str,
    kubernetes_version: str,
    control_plane_endpoint: str,
    cert_sans: Sequence[str],
) -> dict[str, Any]:
    """ClusterConfiguration: version, the endpoint nodes use, and the names the API certificate covers.

    Nodes (and GitLab) talk to the private address inside the VPC, so that is the control-plane
    endpoint; the kubeconfig uses the Elastic IP, so it is a SAN too, next to its DNS name.
    """
    return {
        "apiVersion": KUBEADM_API_VERSION,
        "kind": "ClusterConfiguration",
        "clusterName": cluster_name,
        "kubernetesVersion": kubernetes_version,
        "controlPlaneEndpoint": control_plane_endpoint,
        "apiServer": {"certSANs": list(dict.fromkeys(cert_sans))},
        "networking": {"podSubnet": POD_SUBNET, "serviceSubnet": SERVICE_SUBNET},
    }


def join_configuration(
    *,
    node_name: str,
    node_ip: str,
    api_server_endpoint: str,
    bootstrap_token: str,
    ca_cert_hashes: Sequence[str],
    control_plane: bool = False,
) -> dict[str, Any]:
    """JoinConfiguration: token discovery pinned to the cluster CA (never unsafeSkipCAVerification).

    ``control_plane``: the node joins as a control-plane instance (`JoinControlPlane`) whose API
    server advertises and listens on its own address. No ``certificateKey``: the shared certificates
    are placed on the node beforehand, so kubeadm downloads nothing and its preflight checks them
    instead (cmd/kubeadm/app/cmd/phases/join/preflight.go checkIfReadyForAdditionalControlPlane).
    The ClusterConfiguration (endpoint, certificate names) is read from the cluster.
    """
    document: dict[str, Any] = {
        "apiVersion": KUBEADM_API_VERSION,
        "kind": "JoinConfiguration",
        "discovery": {
            "bootstrapToken": {
                "token": bootstrap_token,
                "apiServerEndpoint": api_server_endpoint,
                "caCertHashes": list(ca_cert_hashes),
            }
        },
        "nodeRegistration": _node_registration(node_name, node_ip),
    }
    if control_plane:
        document["controlPlane"] = {"localAPIEndpoint": {"advertiseAddress": node_ip, "bindPort": API_SERVER_PORT}}
    return document


def render_documents(documents: Iterable[Mapping[str, Any]]) -> str:
    """A multi-document YAML file, as `kubeadm --config` reads it."""
    return yaml.safe_dump_all([dict(document) for document in documents], sort_keys=False)


def kubeconfig(*, cluster_name: str, server: str, ca_pem: str, client_cert_pem: str, client_key_pem: str) -> str:
    """An admin kubeconfig with everything embedded (base64 `*-data` fields), for users and the provider."""

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    user = f"{cluster_name}-admin"
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(client_cert_pem), "client-key-data": b64(client_key_pem)},
            }
        ],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": cluster_name,
        "preferences": {},
    }
    return yaml.safe_dump(document, sort_keys=False)


def stdin_bundle(parts: Sequence[str]) -> str:
    """Several files on one stdin: one base64 line each, in order (read back with `read -r` + `base64 -d`)."""
    return "".join(base64.b64encode(part.encode()).decode() + "\n" for part in parts)


def registry_hosts_toml(registry_host: str) -> str:
    """containerd's hosts.toml for the GitLab registry: pull over HTTPS, trusting GitLab's own CA.

    Layout from containerd docs/hosts.md: `server` plus a `[host."https://…"]` table with `ca`.
    """
    server = f"https://{registry_host}"
    ca = f"{CONTAINERD_HOSTS_DIR}/{registry_host}/ca.crt"
    # json.dumps yields a valid TOML basic string for these ASCII values.
    return (
        f"server = {json.dumps(server)}\n"
        "\n"
        f"[host.{json.dumps(server)}]\n"
        '  capabilities = ["pull", "resolve"]\n'
        f"  ca = {json.dumps(ca)}\n"
    )


_REGISTRY_HOST = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?:\d{1,5}$")
CRICTL_YAML = f"runtime-endpoint: {CRI_SOCKET}\nimage-endpoint: {CRI_SOCKET}\n"


def node_cloud_config(
    *, hostname: str, kubernetes_minor: str, kubernetes_patch: str | None, operator_ssh_public_key: str | None
) -> dict[str, Any]:
    """The user data of every node: first boot only (kernel settings, containerd, kubelet/kubeadm/kubectl).

    Nothing in it may need to change later: cluster instances ignore `userData` after creation (a
    change would stop and start them, and cloud-init would not run it again). What can change after
    boot (registry trust, containerd settings, the operator's key) is applied over SSH by the node
    material step (`node_material`, userdata/cluster/node-config.sh), on every node.

    The boot script (userdata/cluster/node-bootstrap.sh) does all package work itself, with retries:
    the control plane has no public address until its Elastic IP is associated, moments after the
    instance starts, so cloud-init's own package_update would fail on it.

    containerd's configuration is the material step's too: it runs before `kubeadm init`/`join`.

    EC2 limits user data to 16 KB: the scripts are kept short, and tests check the size.
    """
    write_files = [
        script_file("cluster/node-bootstrap.sh"),
        script_file("cluster/packages.sh"),
        env_file(
            NODE_ENV,
            {
                "KUBERNETES_MINOR": kubernetes_minor,
                "KUBERNETES_PATCH": kubernetes_patch or "",
                "CONTAINERD_SERIES": CONTAINERD_SERIES,
            },
        ),
        # Kubernetes "Container runtimes" prerequisites, and what flannel's bridge plugin needs.
        {
            "path": "/etc/modules-load.d/kubernetes.conf",
            "permissions": "0644",
            "content": "overlay\nbr_netfilter\n",
        },
        {
            "path": "/etc/sysctl.d/90-kubernetes.conf",
            "permissions": "0644",
            "content": (
                "net.ipv4.ip_forward = 1\n"
                "net.bridge.bridge-nf-call-iptables = 1\n"
                "net.bridge.bridge-nf-call-ip6tables = 1\n"
            ),
        },
    ]
    return cloud_config(
        hostname=hostname,
        write_files=write_files,
        runcmd=[[f"{INSTALL_DIR}/cluster/node-bootstrap.sh"]],
        operator_ssh_public_key=operator_ssh_public_key,
    )


def node_material(*, registry_host: str, registry_ca_pem: str, operator_ssh_public_key: str | None) -> dict[str, str]:
    """The parameters of the node material step, digest included: everything that may change after boot.

    GitLab's registry host and CA (containerd reads certs.d at pull time: no restart, containerd
    docs/hosts.md), containerd's settings (a restart, which running containers survive because
    their shims are separate processes), crictl's endpoints and the operator's SSH key.

    containerd's config.toml is `containerd config default` edited as parsed TOML by
    userdata/cluster/containerd_config.py, not with sed: the default's text differs between releases
    (2.0/2.1 before containerd PR #12244 print no `SystemdCgroup` line at all; 2.x prints
    `config_path = ''` in several tables), and Python's tomllib reads what the script then checks. All public. The step applies them when MATERIAL_DIGEST differs from the
    digest it recorded last time, so re-running it is harmless.
    """
    if not _REGISTRY_HOST.match(registry_host):
        raise ValueError(f"registry host {registry_host!r} is not <dns-name>:<port>, e.g. gitlab.example.com:5050")
    material = {
        "REGISTRY_HOST": registry_host,
        "REGISTRY_CA_PEM": registry_ca_pem,
        "REGISTRY_HOSTS_TOML": registry_hosts_toml(registry_host),
        "CONTAINERD_CONFIG_PY": read_script("cluster/containerd_config.py"),
        "CRICTL_YAML": CRICTL_YAML,
        "OPERATOR_SSH_PUBLIC_KEY": operator_ssh_public_key or "",
    }
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    return {**material, "MATERIAL_DIGEST": digest}


def upgrade_target(kubernetes_minor: str, kubernetes_patch: str | None) -> dict[str, str]:
    """What the control-plane upgrade step aims at: a minor, and an exact patch or "" (newest)."""
    if kubernetes_patch and not kubernetes_patch.startswith(kubernetes_minor + "."):
        raise ValueError(f"kubernetesPatch {kubernetes_patch} is not a patch of kubernetesVersion {kubernetes_minor}")
    return {"TARGET_MINOR": kubernetes_minor, "TARGET_VERSION": kubernetes_patch or ""}
