"""KubeadmCluster: nodes that pin the cluster CA, secrets kept off hosts' user data, tight security groups.

The component is run on its own (Network + SshAccess + KubeadmCluster, registry values as literals)
through ``tools.harness.run_function``, so these tests do not depend on the GitLab host; the last
test checks the real program's exports once ``__main__.py`` wires the cluster.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pulumi
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from components import kubeadm
from components.cluster import KubeadmCluster, KubeadmClusterArgs, worker_names
from components.cluster_firewall import etcd_rules
from components.config import load_config
from components.hosts import SshAccess
from components.network import Network, NetworkArgs
from components.remote import step_script
from tests.conftest import ADMIN, system_tool
from tools.harness import (
    FIXTURE_STACKS,
    ProgramError,
    ProgramRun,
    Registration,
    StackMocks,
    is_secret_value,
    run_fixture_stack,
    run_function,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
VENV_BIN = Path(sys.executable).parent
NAME = "gitops-k8s"
REGISTRY_HOST = "ec2-198-51-100-7.compute-1.amazonaws.com:5050"
COMMAND = "command:remote:Command"
INSTANCE = "aws:ec2/instance:Instance"
ENDPOINT = "api.gitops-k8s.internal:6443"  # the cluster's stable controlPlaneEndpoint
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
OPERATOR_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHJ0ZXN0a2V5Zm9ydGhldXNlcmRhdGFzaXpldGVzdA operator@laptop"


@functools.cache
def registry_ca_pem() -> str:
    """A full-size stand-in for GitLab's CA certificate (RSA 4096, as large as such a PEM gets)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "GitLab CA"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gitops")]
    )
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def cluster_program() -> None:
    """The cluster's slice of __main__.py, with the GitLab values it consumes given as literals."""
    config = load_config()
    network = Network("gitops", NetworkArgs(config=config))
    ssh = SshAccess("gitops-admin", config)
    cluster = KubeadmCluster(
        NAME,
        KubeadmClusterArgs(
            config=config,
            vpc_id=network.vpc_id,
            subnet_ids=network.subnet_ids,
            cluster_security_group_id=network.cluster_security_group_id,
            gitlab_security_group_id=network.gitlab_security_group_id,
            registry_host=REGISTRY_HOST,
            registry_ca_pem=registry_ca_pem(),
            ssh=ssh,
        ),
    )
    pulumi.export("kubernetesApiUrl", cluster.public_api_url)
    pulumi.export("kubernetesPrivateApiUrl", cluster.private_api_url)
    pulumi.export("kubeconfig", cluster.kubeconfig)
    pulumi.export("clusterCaPem", cluster.ca_pem)
    pulumi.export("kubernetesVersion", cluster.kubernetes_version)
    pulumi.export("clusterCertificatesExpireAt", cluster.certificates_expire_at)
    pulumi.export("nodes", cluster.nodes)
    pulumi.export("appUrls", cluster.app_urls)


def run_cluster(stack: str = "dev", mocks: StackMocks | None = None, **overrides: Any) -> ProgramRun:
    return run_function(cluster_program, stack, {**ADMIN, **overrides}, mocks=mocks, stack_dir=FIXTURE_STACKS)


@pytest.fixture(scope="module")
def cluster() -> ProgramRun:
    return run_cluster()


@pytest.fixture(scope="module")
def ha_cluster() -> ProgramRun:
    """The dev stack with a highly available control plane (controlPlaneCount 3)."""
    return run_cluster(controlPlaneCount=3)


# ------------------------------------------------------------------------------------------------
# Reading what the program registered
# ------------------------------------------------------------------------------------------------
def stdin_parts(step: Registration) -> list[str]:
    return [base64.b64decode(line).decode() for line in step.plain_inputs["stdin"].splitlines()]


def init_documents(run: ProgramRun) -> dict[str, dict]:
    config_text = stdin_parts(run.named(f"{NAME}-master-init"))[2]
    return {document["kind"]: document for document in yaml.safe_load_all(config_text)}


def join_documents(run: ProgramRun, nodes: str = r"worker\d+") -> dict[str, dict]:
    """JoinConfiguration of every worker's (or ``nodes``') join step, by node name."""
    joins = {}
    for step in run.all(COMMAND):
        match = re.fullmatch(rf"{NAME}-({nodes})-join", step.name)
        if match:
            (document,) = yaml.safe_load_all(stdin_parts(step)[0])
            joins[match.group(1)] = document
    return joins


def step_env(step: Registration, command: str = "create") -> dict[str, str]:
    """The parameters a step gets on its command line (`sudo env K=V ... bash -c ...`)."""
    words = shlex.split(step.plain_inputs[command])
    return dict(word.split("=", 1) for word in words[2 : words.index("bash")])


def sent_script(step: Registration, command: str = "create") -> str:
    words = shlex.split(step.plain_inputs[command])
    return words[words.index("bash") + 2]


def user_data(run: ProgramRun, node: str) -> dict:
    text = run.one(INSTANCE, f"{NAME}-{node}").plain_inputs["userData"]
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


def files_of(document: dict) -> dict[str, str]:
    return {entry["path"]: entry["content"] for entry in document["write_files"]}


def cluster_group_rules(run: ProgramRun) -> list[dict]:
    group = run.one("aws:ec2/securityGroup:SecurityGroup", "gitops-cluster").id
    return [rule.plain_inputs for rule in run.all(INGRESS) if rule.plain_inputs["securityGroupId"] == group]


def openssl(*args: str, data: bytes) -> bytes:
    result = subprocess.run(["openssl", *args], input=data, capture_output=True, check=True)
    return result.stdout


def tool(name: str) -> str:
    path = VENV_BIN / name
    return str(path) if path.exists() else (shutil.which(name) or pytest.fail(f"{name} is not installed"))


# ------------------------------------------------------------------------------------------------
# Nodes and joins
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("count", [1, 2, 5])
def test_worker_count_gives_that_many_workers_each_joining_with_the_pinned_ca(count: int) -> None:
    run = run_cluster(workerCount=count)
    names = worker_names(count)
    assert names == [f"worker{index}" for index in range(1, count + 1)]
    instances = {registration.name for registration in run.all(INSTANCE)}
    assert instances == {f"{NAME}-master", *(f"{NAME}-{name}" for name in names)}
    for name in ["master", *names]:
        assert user_data(run, name)["hostname"] == name

    joins = join_documents(run)
    assert sorted(joins) == sorted(names)
    ca_hash = kubeadm.ca_cert_hash(run.one("tls:index/selfSignedCert:SelfSignedCert", f"{NAME}-ca").state["certPem"])
    for name, document in joins.items():
        worker = run.one(INSTANCE, f"{NAME}-{name}").state
        discovery = document["discovery"]["bootstrapToken"]
        assert discovery["caCertHashes"] == [ca_hash]
        # The stable name, never a node's address.
        assert discovery["apiServerEndpoint"] == ENDPOINT
        assert "unsafeSkipCAVerification" not in discovery
        assert document["nodeRegistration"]["name"] == name
        assert document["nodeRegistration"]["kubeletExtraArgs"] == [{"name": "node-ip", "value": worker["privateIp"]}]
    assert [node["name"] for node in run.outputs["nodes"]] == ["master", *names]
    assert len(run.outputs["appUrls"]) == count


def test_workers_join_in_parallel_once_the_upgrade_gate_passed() -> None:
    """A worker joins the version the control plane runs, so its join waits for the gate; none waits for another."""
    run = run_cluster(workerCount=3)
    gate = run.named(f"{NAME}-master-upgrade")
    assert run.named(f"{NAME}-control-plane-ready").urn in gate.depends_on
    assert run.named(f"{NAME}-cni").urn in run.named(f"{NAME}-control-plane-ready").depends_on
    steps = [run.named(f"{NAME}-{name}-{kind}") for name in worker_names(3) for kind in ("join", "membership")]
    urns = {step.urn for step in steps}
    for step in steps:
        assert gate.urn in step.depends_on, step.name
        assert not urns & set(step.depends_on), f"{step.name} waits for another worker"
    # Every worker is admitted (and Ready) before the provider is used.
    provider = run.one("pulumi:providers:kubernetes", f"{NAME}-provider")
    assert {step.urn for step in steps if step.name.endswith("-membership")} <= set(provider.depends_on)
    assert "NODE_NAMES=master" in run.named(f"{NAME}-control-plane-ready").plain_inputs["create"]


def test_a_worker_joins_on_its_own_host_and_is_admitted_on_the_control_plane(cluster: ProgramRun) -> None:
    eip = cluster.one("aws:ec2/eip:Eip", f"{NAME}-master-eip").state["publicIp"]
    worker = cluster.one(INSTANCE, f"{NAME}-worker1")
    join = cluster.named(f"{NAME}-worker1-join")
    membership = cluster.named(f"{NAME}-worker1-membership")
    assert join.plain_inputs["connection"]["host"] == worker.state["publicIp"]
    assert membership.plain_inputs["connection"]["host"] == eip
    # The join also gets the cluster CA, to ask the API server which version to install.
    assert stdin_parts(join)[1] == cluster.one("tls:index/selfSignedCert:SelfSignedCert", f"{NAME}-ca").state["certPem"]
    # Admission renews the token and waits for the Node; removal drains it, then deletes it.
    assert sent_script(membership) == step_script("cluster/admit-worker.sh", ["cluster/bootstrap-token.sh"])
    assert step_env(membership, "delete")["NODE_NAME"] == "worker1"
    assert "kubectl drain" in sent_script(membership, "delete")
    # Bound to the instance: a replaced or removed worker takes its membership (and its drain) with it.
    assert membership.plain_inputs["triggers"] == [worker.id]


def test_join_pin_equals_openssl_over_the_ca_public_key(cluster: ProgramRun) -> None:
    ca_pem = cluster.one("tls:index/selfSignedCert:SelfSignedCert", f"{NAME}-ca").state["certPem"]
    # kubeadm's documented recipe: openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256.
    public_key = openssl("x509", "-pubkey", "-noout", data=ca_pem.encode())
    der = openssl("pkey", "-pubin", "-outform", "der", data=public_key)
    digest = openssl("dgst", "-sha256", "-r", data=der).decode().split()[0]
    for document in join_documents(cluster).values():
        assert document["discovery"]["bootstrapToken"]["caCertHashes"] == [f"sha256:{digest}"]


def test_the_kubernetes_provider_names_the_cluster_by_the_key_its_nodes_pin() -> None:
    """clusterIdentifier: the provider is replaced only for another cluster (another CA key)."""
    run = run_cluster()
    ca_hash = kubeadm.ca_cert_hash(run.one("tls:index/selfSignedCert:SelfSignedCert", f"{NAME}-ca").state["certPem"])
    provider = run.one("pulumi:providers:kubernetes", f"{NAME}-provider").plain_inputs
    assert provider["clusterIdentifier"] == f"kubeadm:{NAME}:{ca_hash}"


def test_ca_cert_hash_matches_openssl_for_an_ecdsa_ca_too() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.UTC)
    pem = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    der = openssl("pkey", "-pubin", "-outform", "der", data=openssl("x509", "-pubkey", "-noout", data=pem))
    assert kubeadm.ca_cert_hash(pem.decode()) == "sha256:" + hashlib.sha256(der).hexdigest()


# ------------------------------------------------------------------------------------------------
# Secrets
# ------------------------------------------------------------------------------------------------
def secret_values(run: ProgramRun) -> dict[str, str]:
    token_id = run.one("random:index/randomString:RandomString", f"{NAME}-token-id").state["result"]
    token_secret = run.one("random:index/randomPassword:RandomPassword", f"{NAME}-token-secret").state["result"]
    keys = {
        key: run.one("tls:index/privateKey:PrivateKey", f"{NAME}-{key}").state["privateKeyPem"]
        for key in ("ca-key", "admin-key", "sa-key", "front-proxy-ca-key", "etcd-ca-key")
    }
    values = {"bootstrap token": f"{token_id}.{token_secret}", "token secret": token_secret, **keys}
    # Also as the base64 a stdin bundle or a kubeconfig carries them in.
    values.update({f"{label} (base64)": base64.b64encode(value.encode()).decode() for label, value in keys.items()})
    return values


def unwrapped_hits(value: Any, needles: dict[str, str], path: str) -> list[str]:
    """Where a secret value sits in an input without being marked secret."""
    if is_secret_value(value):
        return []
    if isinstance(value, dict):
        return [hit for key, item in value.items() for hit in unwrapped_hits(item, needles, f"{path}.{key}")]
    if isinstance(value, list):
        return [hit for index, item in enumerate(value) for hit in unwrapped_hits(item, needles, f"{path}[{index}]")]
    if isinstance(value, str):
        return [f"{label} in {path}" for label, needle in needles.items() if needle in value]
    return []


def test_secrets_appear_in_no_user_data_and_no_command_text(cluster: ProgramRun) -> None:
    needles = secret_values(cluster)
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", needles["bootstrap token"])
    public_texts = [(r.name, r.plain_inputs["userData"]) for r in cluster.all(INSTANCE)]
    public_texts += [
        (f"{r.name} {command}", r.plain_inputs[command])
        for r in cluster.all(COMMAND)
        for command in ("create", "delete")
        if command in r.plain_inputs
    ]
    # 3 instances; 8 control-plane steps and 6 per worker, the membership's delete too.
    assert len(public_texts) == 3 + 8 + 6 * 2 + 2
    for name, text in public_texts:
        for label, needle in needles.items():
            assert needle not in text, f"{label} in {name}"
    # Where they do travel (stdin, signing inputs, the provider's kubeconfig) they are secrets.
    hits = [hit for r in cluster for hit in unwrapped_hits(r.inputs, needles, r.name)]
    assert hits == []
    assert all(needle not in r.name for r in cluster for needle in needles.values())
    # ...and they do travel on stdin, which is where the steps read them.
    init_stdin = cluster.named(f"{NAME}-master-init").inputs["stdin"]
    assert is_secret_value(init_stdin)
    assert needles["ca-key (base64)"] in cluster.named(f"{NAME}-master-init").plain_inputs["stdin"]
    assert needles["bootstrap token"] in cluster.named(f"{NAME}-worker1-membership").plain_inputs["stdin"]


def test_sensitive_exports_are_secret_and_public_ones_hold_no_secret(cluster: ProgramRun) -> None:
    assert cluster.secret_outputs == {"kubeconfig"}
    needles = secret_values(cluster)
    for name, value in cluster.outputs.items():
        if name != "kubeconfig":
            assert not any(needle in str(value) for needle in needles.values()), name


# ------------------------------------------------------------------------------------------------
# Endpoints, certificates, kubeconfig
# ------------------------------------------------------------------------------------------------
def test_api_certificate_covers_the_stable_name_and_the_elastic_ip(cluster: ProgramRun) -> None:
    eip = cluster.one("aws:ec2/eip:Eip", f"{NAME}-master-eip").state
    private_ip = cluster.one(INSTANCE, f"{NAME}-master").state["privateIp"]
    documents = init_documents(cluster)
    cluster_config = documents["ClusterConfiguration"]
    # kubeadm adds the endpoint's host and each node's own address to its API server certificate;
    # admins' kubeconfig uses the Elastic IP.
    assert cluster_config["controlPlaneEndpoint"] == ENDPOINT
    assert set(cluster_config["apiServer"]["certSANs"]) == {eip["publicIp"], eip["publicDns"]}
    assert cluster_config["networking"]["podSubnet"] == "10.244.0.0/16"
    init = documents["InitConfiguration"]
    assert init["localAPIEndpoint"] == {"advertiseAddress": private_ip, "bindPort": 6443}
    assert init["nodeRegistration"]["name"] == "master"
    assert init["bootstrapTokens"][0]["token"] == secret_values(cluster)["bootstrap token"]
    assert cluster.outputs["kubernetesPrivateApiUrl"] == f"https://{ENDPOINT}"
    assert cluster.outputs["kubernetesApiUrl"] == f"https://{eip['publicIp']}:6443"
    # The instance itself has no public address: the control plane is reached on its Elastic IP.
    association = cluster.one("aws:ec2/eipAssociation:EipAssociation").plain_inputs
    assert association["allocationId"] == eip["allocationId"]
    assert association["instanceId"] == cluster.one(INSTANCE, f"{NAME}-master").id
    for step in ("kubeadm-version", "init"):
        assert cluster.named(f"{NAME}-master-{step}").plain_inputs["connection"]["host"] == eip["publicIp"]


def test_the_stable_name_is_the_first_nodes_address_in_a_private_zone_of_the_vpc(cluster: ProgramRun) -> None:
    zone = cluster.one("aws:route53/zone:Zone").plain_inputs
    assert zone["name"] == "gitops-k8s.internal"
    assert zone["vpcs"] == [{"vpcId": cluster.one("aws:ec2/vpc:Vpc").id}]  # private: this VPC only
    record = cluster.one("aws:route53/record:Record")
    assert record.plain_inputs["name"] == "api.gitops-k8s.internal"
    assert record.plain_inputs["zoneId"] == cluster.one("aws:route53/zone:Zone").state["zoneId"]
    master_ip = cluster.one(INSTANCE, f"{NAME}-master").state["privateIp"]
    assert (record.plain_inputs["type"], record.plain_inputs["records"]) == ("A", [master_ip])
    assert "aliases" not in record.plain_inputs
    assert not cluster.all("aws:lb/loadBalancer:LoadBalancer"), "one control-plane node needs no load balancer"
    # kubeadm init resolves the name: it waits for the record.
    init = cluster.named(f"{NAME}-master-init")
    assert record.urn in init.depends_on
    assert step_env(init)["CONTROL_PLANE_ENDPOINT"] == ENDPOINT


def test_control_plane_gets_the_pulumi_made_ca_and_every_shared_key(cluster: ProgramRun) -> None:
    """kubeadm init uses the files it finds: every control-plane node can then get the same ones."""
    ca_cert, ca_key, _, sa_key, sa_pub, proxy_cert, proxy_key, etcd_cert, etcd_key = stdin_parts(
        cluster.named(f"{NAME}-master-init")
    )

    def cert(name: str) -> str:
        return cluster.one("tls:index/selfSignedCert:SelfSignedCert", f"{NAME}-{name}").state["certPem"]

    def key(name: str) -> dict:
        return cluster.one("tls:index/privateKey:PrivateKey", f"{NAME}-{name}").state

    assert (ca_cert, ca_key) == (cert("ca"), key("ca-key")["privateKeyPem"])
    assert (sa_key, sa_pub) == (key("sa-key")["privateKeyPem"], key("sa-key")["publicKeyPem"])
    assert (proxy_cert, proxy_key) == (cert("front-proxy-ca"), key("front-proxy-ca-key")["privateKeyPem"])
    assert (etcd_cert, etcd_key) == (cert("etcd-ca"), key("etcd-ca-key")["privateKeyPem"])
    # kubeadm's formats: an RSA key and a PKIX public key (sa.key, sa.pub), CAs it accepts as CAs.
    assert sa_key.startswith("-----BEGIN RSA PRIVATE KEY-----") and sa_pub.startswith("-----BEGIN PUBLIC KEY-----")
    for pem, common_name in ((ca_cert, "kubernetes"), (proxy_cert, "front-proxy-ca"), (etcd_cert, "etcd-ca")):
        certificate = x509.load_pem_x509_certificate(pem.encode())
        assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == common_name
        lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
        assert lifetime == datetime.timedelta(hours=87600)


def test_kubeconfig_targets_the_public_endpoint_and_trusts_the_cluster_ca(cluster: ProgramRun) -> None:
    config = yaml.safe_load(cluster.outputs["kubeconfig"])
    (entry,) = config["clusters"]
    eip = cluster.one("aws:ec2/eip:Eip", f"{NAME}-master-eip").state["publicIp"]
    assert entry["cluster"]["server"] == f"https://{eip}:6443"
    ca_pem = base64.b64decode(entry["cluster"]["certificate-authority-data"]).decode()
    assert ca_pem == cluster.outputs["clusterCaPem"]
    assert ca_pem == cluster.one("tls:index/selfSignedCert:SelfSignedCert", f"{NAME}-ca").state["certPem"]
    (user,) = config["users"]
    client = x509.load_pem_x509_certificate(base64.b64decode(user["user"]["client-certificate-data"]))
    client.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem.encode()))
    organizations = client.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [attribute.value for attribute in organizations] == ["kubeadm:cluster-admins"]
    key = serialization.load_pem_private_key(base64.b64decode(user["user"]["client-key-data"]), password=None)
    assert key.public_key().public_numbers() == client.public_key().public_numbers()  # type: ignore[union-attr]
    assert config["current-context"] == config["contexts"][0]["name"]


# ------------------------------------------------------------------------------------------------
# Security groups
# ------------------------------------------------------------------------------------------------
def test_only_the_app_node_port_is_open_to_the_world(cluster: ProgramRun) -> None:
    rules = cluster_group_rules(cluster)
    world = [rule for rule in rules if rule.get("cidrIpv4") == "0.0.0.0/0"]
    assert [(rule["ipProtocol"], rule["fromPort"], rule["toPort"]) for rule in world] == [("tcp", 30000, 30000)]
    assert all(rule.get("description") for rule in rules)
    # Restricting appCidrs leaves nothing open to the world.
    restricted = cluster_group_rules(run_cluster(appCidrs=["198.51.100.0/24"], appNodePort=31080))
    assert not [rule for rule in restricted if rule.get("cidrIpv4") == "0.0.0.0/0"]
    app = [rule for rule in restricted if rule["fromPort"] == 31080]
    assert [(rule["cidrIpv4"], rule["toPort"]) for rule in app] == [("198.51.100.0/24", 31080)]


def test_kubelet_and_vxlan_are_reachable_only_from_the_cluster_group(cluster: ProgramRun) -> None:
    group = cluster.one("aws:ec2/securityGroup:SecurityGroup", "gitops-cluster").id
    rules = cluster_group_rules(cluster)

    def covering(port: int, protocol: str = "tcp") -> list[dict]:
        return [r for r in rules if r["ipProtocol"] == protocol and r["fromPort"] <= port <= r["toPort"]]

    for port, protocol in ((10250, "tcp"), (8472, "udp")):
        sources = covering(port, protocol)
        assert sources, f"{protocol}/{port} is closed"
        assert all(rule.get("referencedSecurityGroupId") == group and "cidrIpv4" not in rule for rule in sources)


def test_etcd_is_open_only_between_control_plane_nodes_and_closed_with_one(cluster: ProgramRun) -> None:
    """One stacked etcd member talks to its own API server on 127.0.0.1: nobody needs 2379-2380."""
    etcd = [
        rule.plain_inputs
        for rule in cluster.all(INGRESS)
        if rule.plain_inputs["fromPort"] <= 2380 and rule.plain_inputs["toPort"] >= 2379
    ]
    assert etcd == []
    control_plane = cluster.one("aws:ec2/securityGroup:SecurityGroup", f"{NAME}-control-plane")
    master = cluster.one(INSTANCE, f"{NAME}-master").plain_inputs
    assert control_plane.id in master["vpcSecurityGroupIds"]
    for worker in ("worker1", "worker2"):
        assert control_plane.id not in cluster.one(INSTANCE, f"{NAME}-{worker}").plain_inputs["vpcSecurityGroupIds"]
    # With several control-plane nodes (highly available), their own group admits its members.
    (rule,) = etcd_rules(3)
    assert (rule.protocol, rule.ports, rule.source) == ("tcp", (2379, 2380), "control-plane")
    assert etcd_rules(1) == []


def test_api_and_ssh_sources(cluster: ProgramRun) -> None:
    cluster_group = cluster.one("aws:ec2/securityGroup:SecurityGroup", "gitops-cluster").id
    gitlab_group = cluster.one("aws:ec2/securityGroup:SecurityGroup", "gitops-gitlab").id
    rules = cluster_group_rules(cluster)
    api = {rule.get("cidrIpv4") or rule["referencedSecurityGroupId"] for rule in rules if rule["fromPort"] == 6443}
    assert api == {"203.0.113.7/32", cluster_group, gitlab_group}
    ssh = [rule for rule in rules if rule["fromPort"] <= 22 <= rule["toPort"]]
    assert [rule.get("cidrIpv4") for rule in ssh] == ["203.0.113.7/32"]
    run = run_cluster(adminCidrs=["203.0.113.7/32", "192.0.2.0/28"])
    ssh_sources = sorted(r.get("cidrIpv4") for r in cluster_group_rules(run) if r["fromPort"] == 22)
    assert ssh_sources == ["192.0.2.0/28", "203.0.113.7/32"]


# ------------------------------------------------------------------------------------------------
# User data
# ------------------------------------------------------------------------------------------------
def test_user_data_installs_the_configured_minor_and_nothing_that_changes_later() -> None:
    run = run_cluster(kubernetesVersion="1.37", kubernetesPatch="1.37.2")
    for node in ("master", "worker1"):
        document = user_data(run, node)
        files = files_of(document)
        env = files["/etc/gitops/cluster-node.env"]
        assert "KUBERNETES_MINOR=1.37\n" in env and "KUBERNETES_PATCH=1.37.2\n" in env
        assert f"CONTAINERD_SERIES={kubeadm.CONTAINERD_SERIES}\n" in env
        for script in ("node-bootstrap.sh", "packages.sh"):
            assert files[f"/usr/local/lib/gitops/cluster/{script}"] == (ROOT / "userdata/cluster" / script).read_text()
        assert document["runcmd"] == [["/usr/local/lib/gitops/cluster/node-bootstrap.sh"]]
        assert files["/etc/modules-load.d/kubernetes.conf"].split() == ["overlay", "br_netfilter"]
        assert "net.ipv4.ip_forward = 1" in files["/etc/sysctl.d/90-kubernetes.conf"]
        # No package work before the boot script waits for the network (the Elastic IP comes late).
        assert document["package_update"] is False
        assert "packages" not in document
        # Registry trust is the material step's: it may change after boot.
        assert not [path for path in files if path.startswith("/etc/containerd/")]
        assert REGISTRY_HOST not in run.one(INSTANCE, f"{NAME}-{node}").plain_inputs["userData"]


def test_every_node_gets_the_registry_trust_and_containerd_settings_from_its_material_step() -> None:
    run = run_cluster(operatorSshPublicKey=OPERATOR_KEY)
    for node in ("master", "worker1", "worker2"):
        step = run.named(f"{NAME}-{node}-config")
        instance = run.one(INSTANCE, f"{NAME}-{node}")
        env = step_env(step)
        hosts = tomllib.loads(env["REGISTRY_HOSTS_TOML"])
        assert hosts["server"] == f"https://{REGISTRY_HOST}"
        assert hosts["host"][f"https://{REGISTRY_HOST}"] == {
            "capabilities": ["pull", "resolve"],
            "ca": f"/etc/containerd/certs.d/{REGISTRY_HOST}/ca.crt",
        }
        assert env["REGISTRY_HOST"] == REGISTRY_HOST
        assert env["REGISTRY_CA_PEM"] == registry_ca_pem()
        assert env["CONTAINERD_CONFIG_PY"] == (ROOT / "userdata/cluster/containerd_config.py").read_text()
        assert env["OPERATOR_SSH_PUBLIC_KEY"] == OPERATOR_KEY
        assert (
            env["MATERIAL_DIGEST"]
            == kubeadm.node_material(
                registry_host=REGISTRY_HOST, registry_ca_pem=registry_ca_pem(), operator_ssh_public_key=OPERATOR_KEY
            )["MATERIAL_DIGEST"]
        )
        assert step.plain_inputs["triggers"][1:] == [instance.id]
    # The control plane is initialised, and workers join, only once their material is applied.
    assert run.named(f"{NAME}-master-config").urn in run.named(f"{NAME}-master-init").depends_on
    assert run.named(f"{NAME}-worker1-config").urn in run.named(f"{NAME}-worker1-join").depends_on


def test_user_data_passes_cloud_init_schema(cluster: ProgramRun, tmp_path: Path) -> None:
    cloud_init = system_tool("cloud-init", "apt-get install --no-install-recommends cloud-init")
    for node in ("master", "worker2"):
        path = tmp_path / f"{node}.yaml"
        path.write_text(cluster.one(INSTANCE, f"{NAME}-{node}").plain_inputs["userData"])
        result = subprocess.run(
            [cloud_init, "schema", "--config-file", str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Valid cloud-config" in result.stdout


def test_user_data_fits_the_ec2_limit_with_a_full_size_ca_and_an_operator_key() -> None:
    run = run_cluster(operatorSshPublicKey=OPERATOR_KEY)
    for registration in run.all(INSTANCE):
        size = len(registration.plain_inputs["userData"].encode())
        # EC2: "User data is limited to 16 KB, in raw form, before it is base64-encoded."
        assert size <= 16 * 1024 - 1024, f"{registration.name}: {size} bytes leaves under 1 KB of headroom"
        assert user_data(run, registration.name.removeprefix(f"{NAME}-"))["ssh_authorized_keys"] == [OPERATOR_KEY]


def test_registry_host_must_name_its_port() -> None:
    with pytest.raises(ValueError, match="not <dns-name>:<port>"):
        kubeadm.node_material(
            registry_host="gitlab.example.com", registry_ca_pem=registry_ca_pem(), operator_ssh_public_key=None
        )


def test_the_material_digest_follows_every_piece_of_material() -> None:
    base = {"registry_host": REGISTRY_HOST, "registry_ca_pem": registry_ca_pem(), "operator_ssh_public_key": None}
    digest = kubeadm.node_material(**base)["MATERIAL_DIGEST"]
    assert kubeadm.node_material(**base)["MATERIAL_DIGEST"] == digest
    for change in (
        {"registry_host": "gitlab.example.com:5050"},
        {"registry_ca_pem": registry_ca_pem() + "\n"},
        {"operator_ssh_public_key": OPERATOR_KEY},
    ):
        assert kubeadm.node_material(**{**base, **change})["MATERIAL_DIGEST"] != digest, change


# ------------------------------------------------------------------------------------------------
# kubeadm documents and the Kubernetes version
# ------------------------------------------------------------------------------------------------
# Fields of kubeadm.k8s.io/v1beta4 (kubernetes/website content/en/docs/reference/config-api/
# kubeadm-config.v1beta4.md). kubeadm only warns about an unknown field and ignores it: a typo would
# silently drop a setting.
V1BETA4_FIELDS = {
    "InitConfiguration": {
        "apiVersion", "kind", "bootstrapTokens", "dryRun", "nodeRegistration", "localAPIEndpoint",
        "certificateKey", "skipPhases", "patches", "timeouts",
    },
    "ClusterConfiguration": {
        "apiVersion", "kind", "etcd", "networking", "kubernetesVersion", "controlPlaneEndpoint", "apiServer",
        "controllerManager", "scheduler", "dns", "proxy", "certificatesDir", "imageRepository", "featureGates",
        "clusterName", "encryptionAlgorithm", "certificateValidityPeriod", "caCertificateValidityPeriod",
    },
    "JoinConfiguration": {
        "apiVersion", "kind", "dryRun", "nodeRegistration", "caCertPath", "discovery", "controlPlane",
        "skipPhases", "patches", "timeouts",
    },
    "BootstrapToken": {"token", "description", "ttl", "expires", "usages", "groups"},
    "NodeRegistrationOptions": {
        "name", "criSocket", "taints", "kubeletExtraArgs", "ignorePreflightErrors", "imagePullPolicy", "imagePullSerial",
    },
    "BootstrapTokenDiscovery": {"token", "apiServerEndpoint", "caCertHashes", "unsafeSkipCAVerification"},
    # cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go JoinControlPlane.
    "JoinControlPlane": {"localAPIEndpoint", "certificateKey"},
    "APIServer": {"extraArgs", "extraVolumes", "extraEnvs", "certSANs"},
    "Networking": {"serviceSubnet", "podSubnet", "dnsDomain"},
    "APIEndpoint": {"advertiseAddress", "bindPort"},
}  # fmt: skip


def assert_fields(kind: str, document: dict) -> None:
    unknown = set(document) - V1BETA4_FIELDS[kind]
    assert not unknown, f"{kind} has fields kubeadm v1beta4 does not know: {sorted(unknown)}"


def assert_args_list(arguments: Any) -> None:
    """v1beta4 extraArgs/kubeletExtraArgs: a list of {name, value} strings, not a map."""
    assert isinstance(arguments, list)
    for argument in arguments:
        assert set(argument) == {"name", "value"}
        assert all(isinstance(item, str) for item in argument.values())


def test_kubeadm_documents_are_v1beta4_with_known_fields(cluster: ProgramRun, ha_cluster: ProgramRun) -> None:
    control_plane_joins = join_documents(ha_cluster, r"master\d")
    assert sorted(control_plane_joins) == ["master2", "master3"]
    documents = [*init_documents(cluster).values(), *join_documents(cluster).values(), *control_plane_joins.values()]
    assert sorted(document["kind"] for document in documents) == [
        "ClusterConfiguration", "InitConfiguration", *["JoinConfiguration"] * 4,
    ]  # fmt: skip
    for document in documents:
        assert document["apiVersion"] == "kubeadm.k8s.io/v1beta4"
        assert_fields(document["kind"], document)
        if "nodeRegistration" in document:
            assert_fields("NodeRegistrationOptions", document["nodeRegistration"])
            assert document["nodeRegistration"]["criSocket"] == "unix:///var/run/containerd/containerd.sock"
            assert_args_list(document["nodeRegistration"]["kubeletExtraArgs"])
        for component in ("apiServer", "controllerManager", "scheduler"):
            if "extraArgs" in document.get(component, {}):
                assert_args_list(document[component]["extraArgs"])
    init = init_documents(cluster)
    for token in init["InitConfiguration"]["bootstrapTokens"]:
        assert_fields("BootstrapToken", token)
        assert kubeadm.BOOTSTRAP_TOKEN.match(token["token"])
    assert_fields("APIEndpoint", init["InitConfiguration"]["localAPIEndpoint"])
    assert_fields("APIServer", init["ClusterConfiguration"]["apiServer"])
    assert_fields("Networking", init["ClusterConfiguration"]["networking"])
    for join in [*join_documents(cluster).values(), *control_plane_joins.values()]:
        assert set(join["discovery"]) == {"bootstrapToken"}
        assert_fields("BootstrapTokenDiscovery", join["discovery"]["bootstrapToken"])
    for name, join in control_plane_joins.items():
        assert_fields("JoinControlPlane", join["controlPlane"])
        assert_fields("APIEndpoint", join["controlPlane"]["localAPIEndpoint"])
        # No certificateKey: nothing is downloaded from the cluster (no --upload-certs Secret).
        assert "certificateKey" not in join["controlPlane"], name


def test_kubeadm_init_runs_the_patch_the_control_plane_installed() -> None:
    mocks = StackMocks(command_stdout={f"{NAME}-master-kubeadm-version": "v1.37.2\n"})
    run = run_cluster(mocks=mocks, kubernetesVersion="1.37")
    assert init_documents(run)["ClusterConfiguration"]["kubernetesVersion"] == "v1.37.2"
    # The version step takes no parameter: a later kubernetesVersion never re-runs it (the upgrade does the work).
    assert step_env(run.named(f"{NAME}-master-kubeadm-version")) == {"STEP_NAME": "cluster/kubeadm-version.sh"}


def test_the_kubernetes_version_output_is_what_the_control_plane_runs_after_the_upgrade_step() -> None:
    mocks = StackMocks(command_stdout={f"{NAME}-master-upgrade": "v1.36.9\n"})
    run = run_cluster(mocks=mocks)
    assert run.outputs["kubernetesVersion"] == "v1.36.9"
    gate = step_env(run.named(f"{NAME}-master-upgrade"))
    assert (gate["TARGET_MINOR"], gate["TARGET_VERSION"]) == ("1.36", "")
    # Workers follow the control plane's version, not the configuration.
    for worker in ("worker1", "worker2"):
        for kind in ("upgrade-drain", "upgrade", "upgrade-uncordon"):
            assert step_env(run.named(f"{NAME}-{worker}-{kind}"))["KUBERNETES_VERSION"] == "v1.36.9"
    pinned = step_env(run_cluster(kubernetesPatch="1.36.7").named(f"{NAME}-master-upgrade"))
    assert (pinned["TARGET_MINOR"], pinned["TARGET_VERSION"]) == ("1.36", "1.36.7")


def test_a_step_that_prints_no_version_stops_the_deployment() -> None:
    mocks = StackMocks(command_stdout={f"{NAME}-master-upgrade": "kubeadm: command not found\n"})
    with pytest.raises(ProgramError, match=r"the upgrade step printed 'kubeadm: command not found'"):
        run_cluster(mocks=mocks)


@pytest.mark.parametrize(
    ("stdout", "expected"), [("v1.36.5\n", "v1.36.5"), (" v1.37.0 ", "v1.37.0"), ("v1.36.12", "v1.36.12")]
)
def test_kubernetes_version(stdout: str, expected: str) -> None:
    assert kubeadm.kubernetes_version(stdout, "a step") == expected


@pytest.mark.parametrize("stdout", ["", "v1.36", "1.36.5", "v1.36.5-rc.0", "kubeadm version: v1.36.5"])
def test_kubernetes_version_rejects(stdout: str) -> None:
    with pytest.raises(ValueError, match=re.escape("expected an exact version such as v1.36.5")):
        kubeadm.kubernetes_version(stdout, "a step")


def test_no_step_asks_sshd_to_accept_the_previous_output_as_environment() -> None:
    """Debian's sshd accepts LANG and LC_* only: pulumi-command's default would warn on every re-run."""
    steps = run_cluster().all("command:remote:Command")
    assert steps and {step.plain_inputs.get("addPreviousOutputInEnv") for step in steps} == {False}


def test_certificate_expiry_is_an_output_and_checked_daily() -> None:
    run = run_cluster()
    step = run.named(f"{NAME}-master-certificates")
    env = step_env(step)
    assert env["RENEW_BEFORE_DAYS"] == "30"
    assert step.plain_inputs["triggers"][-1] == datetime.datetime.now(datetime.UTC).date().isoformat()
    assert env["RENEWAL_PROGRAM"] == step_script("cluster/renew-certificates.sh")
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", run.outputs["clusterCertificatesExpireAt"])
    with pytest.raises(ProgramError, match="not an expiry date"):
        run_cluster(mocks=StackMocks(command_stdout={f"{NAME}-master-certificates": "\n"}))


# ------------------------------------------------------------------------------------------------
# Scripts
# ------------------------------------------------------------------------------------------------
SCRIPTS = sorted(path.name for path in (ROOT / "userdata" / "cluster").glob("*.sh"))
# Sourced or installed, not steps of their own.
LIBRARIES = ["packages.sh", "renew-certificates.sh", "bootstrap-token.sh", "etcd-members.sh"]
REMOTE_STEPS = [name for name in SCRIPTS if name not in ("node-bootstrap.sh", *LIBRARIES)]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_passes_shellcheck(script: str) -> None:
    result = subprocess.run(
        [tool("shellcheck"), "-x", f"userdata/cluster/{script}"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_step_as_sent_passes_shellcheck(cluster: ProgramRun, ha_cluster: ProgramRun) -> None:
    """What runs over SSH is common.sh, the step's libraries, then the step: shellcheck sees all of it."""
    sent = {
        f"{step.name} {command}": sent_script(step, command)
        for run in (cluster, ha_cluster)
        for step in run.all(COMMAND)
        for command in ("create", "delete")
        if command in step.plain_inputs
    }
    sent["renewal program"] = step_script("cluster/renew-certificates.sh")
    for label, script in sent.items():
        result = subprocess.run(
            [tool("shellcheck"), "--shell=bash", "-"], input=script, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, label + "\n" + result.stdout + result.stderr


def test_every_step_script_is_used_and_exists(cluster: ProgramRun, ha_cluster: ProgramRun) -> None:
    used = {
        step_env(step, command)["STEP_NAME"]
        for run in (cluster, ha_cluster)
        for step in run.all(COMMAND)
        for command in ("create", "delete")
        if command in step.plain_inputs
    }
    assert used == {f"cluster/{name}" for name in REMOTE_STEPS}


def test_stdin_bundle_reads_back_with_the_init_steps_reader(tmp_path: Path) -> None:
    """The control-plane step's own read_part() recovers every file of a stdin bundle byte for byte."""
    script = (ROOT / "userdata/cluster/control-plane-init.sh").read_text()
    reader = re.search(r"^read_part\(\) \{\n.*?^\}\n", script, re.MULTILINE | re.DOTALL)
    assert reader, "control-plane-init.sh defines read_part()"
    parts = [registry_ca_pem(), "key\nwith\nlines\n", "apiVersion: v1\n---\nkind: X\n"]
    program = (
        (ROOT / "userdata/lib/common.sh").read_text()
        + reader.group(0)
        + 'for i in 1 2 3; do read_part "$DIR/$i"; done\n'
    )
    subprocess.run(
        ["bash", "-c", program],
        input=kubeadm.stdin_bundle(parts),
        text=True,
        check=True,
        env={**os.environ, "DIR": str(tmp_path)},
    )
    assert [(tmp_path / str(index)).read_text() for index in (1, 2, 3)] == parts
    # A short bundle fails with the name of the missing part.
    result = subprocess.run(
        ["bash", "-c", program],
        input=kubeadm.stdin_bundle(parts[:2]),
        text=True,
        capture_output=True,
        check=False,
        env={**os.environ, "DIR": str(tmp_path)},
    )
    assert result.returncode == 1
    assert "stdin ended before 3" in result.stderr


def run_step(
    script: str, env: dict[str, str], tmp_path: Path, kubectl: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run a step as components/remote.py sends it (common.sh first), with a stub kubectl on PATH."""
    stub = tmp_path / "kubectl"
    stub.write_text("#!/bin/sh\n" + kubectl)
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    return subprocess.run(
        ["bash", "-c", step_script(script), script],
        input=stdin,
        env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "STEP_NAME": script, **env},
        capture_output=True,
        text=True,
        check=False,
    )


KUBECTL_NODES = """
case "$1 $2" in
  "get node") for n in $READY; do [ "$n" = "$3" ] && { echo True; exit 0; }; done; echo False ;;
  "get nodes") if [ "$3" = "-o" ] && [ "$4" = "wide" ]; then echo "NAME STATUS"; echo "$ALL" | tr ' ' '\\n'; else echo "$ALL"; fi ;;
  "delete node") echo "$3" >> "$DELETED" ;;
esac
"""


def test_readiness_step_fails_naming_the_nodes_that_are_not_ready(tmp_path: Path) -> None:
    env = {
        "NODE_NAMES": "master worker1 worker2",
        "TIMEOUT_SECONDS": "0",
        "READY": "master worker2",
        "ALL": "master worker1 worker2",
    }
    result = run_step(
        "cluster/wait-nodes-ready.sh", {**env, "DELETED": str(tmp_path / "deleted")}, tmp_path, KUBECTL_NODES
    )
    assert result.returncode == 1
    assert "not Ready after 0s: worker1" in result.stderr
    assert "NAME STATUS" in result.stderr  # `kubectl get nodes -o wide` for the operator


def test_readiness_step_passes_when_every_node_is_ready(tmp_path: Path) -> None:
    env = {"NODE_NAMES": "master", "TIMEOUT_SECONDS": "30", "READY": "master", "ALL": "master worker1"}
    result = run_step(
        "cluster/wait-nodes-ready.sh", {**env, "DELETED": str(tmp_path / "deleted")}, tmp_path, KUBECTL_NODES
    )
    assert result.returncode == 0, result.stderr
    assert "all 1 nodes Ready" in result.stderr
    assert not (tmp_path / "deleted").exists(), "removing workers is remove-worker.sh's job (it drains first)"


# ------------------------------------------------------------------------------------------------
# containerd configuration (userdata/cluster/containerd_config.py)
# ------------------------------------------------------------------------------------------------
@functools.cache
def containerd_config() -> ModuleType:
    spec = importlib.util.spec_from_file_location("containerd_config", ROOT / "userdata/cluster/containerd_config.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dig(document: dict, *path: str) -> Any:
    for key in path:
        document = document[key]
    return document


CONTAINERD_CASES = [
    pytest.param(
        "containerd-2.1-default.toml",
        ("plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes", "runc", "options"),
        ("plugins", "io.containerd.cri.v1.images", "registry"),
        id="2.x",
    ),
    pytest.param(
        "containerd-1.6-default.toml",
        ("plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes", "runc", "options"),
        ("plugins", "io.containerd.grpc.v1.cri", "registry"),
        id="1.x",
    ),
]


@pytest.mark.parametrize(("fixture", "options", "registry"), CONTAINERD_CASES)
def test_containerd_config_sets_systemd_cgroups_and_the_hosts_dir(
    fixture: str, options: tuple, registry: tuple
) -> None:
    default = (FIXTURES / fixture).read_text()
    # Run it as the node does, as a script with the default config on stdin (Debian 12's python3 is
    # 3.11, the version this suite runs on: tomllib is there).
    result = subprocess.run(
        [sys.executable, str(ROOT / "userdata/cluster/containerd_config.py")],
        input=default,
        capture_output=True,
        text=True,
        check=True,
    )
    before, after = tomllib.loads(default), tomllib.loads(result.stdout)
    assert dig(after, *options)["SystemdCgroup"] is True
    assert dig(after, *registry)["config_path"] == "/etc/containerd/certs.d"
    # Nothing else changes (apart from the transfer service's own hosts directory on 2.x).
    dig(before, *options)["SystemdCgroup"] = True
    dig(before, *registry)["config_path"] = "/etc/containerd/certs.d"
    if "io.containerd.transfer.v1.local" in before["plugins"]:
        before["plugins"]["io.containerd.transfer.v1.local"]["config_path"] = "/etc/containerd/certs.d"
    assert after == before


def test_containerd_config_replaces_an_existing_systemd_cgroup_line() -> None:
    # containerd 2.x after PR #12244 prints `SystemdCgroup = false` in the runc options.
    default = (
        (FIXTURES / "containerd-2.1-default.toml")
        .read_text()
        .replace("            ShimCgroup = ''\n", "            ShimCgroup = ''\n            SystemdCgroup = false\n")
    )
    assert "SystemdCgroup = false" in default
    output = tomllib.loads(containerd_config().render(default))
    assert dig(output, *CONTAINERD_CASES[0].values[1])["SystemdCgroup"] is True


@pytest.mark.parametrize(
    ("default", "message"),
    [
        ("version = 1\n", "neither 2 (containerd 1.x) nor 3"),
        ("version = 3\ndisabled_plugins = ['io.containerd.grpc.v1.cri']\n", "CRI plugin is disabled"),
        ("version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\nconfig_path = ''\n", "is missing"),
        (
            "version = 2\n[plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.runc.options]\nSystemdCgroup = false\n",
            "runc has no runtime_type",
        ),
    ],
)
def test_containerd_config_refuses_what_it_cannot_fix(default: str, message: str) -> None:
    module = containerd_config()
    with pytest.raises(module.ConfigError, match=re.escape(message)):
        module.render(default)


def test_containerd_config_writer_round_trips_every_value_kind() -> None:
    module = containerd_config()
    document = {
        "version": 3,
        "imports": [],
        "ratio": 0.02,
        "big": 1e-05,
        "flag": False,
        "text": 'quote " backslash \\ tab \t newline \n bell \x07 del \x7f unicode é',
        "list": ["a", 1, [True]],
        "tables": [{"name": "x", "nested": {"k": "v"}}],
        "plugins": {"io.containerd.example.v1": {"key with space": "v", "empty": {}}, "plain_key": {"n": -3}},
    }
    assert tomllib.loads(module.dumps(document)) == document


# ------------------------------------------------------------------------------------------------
# The real program
# ------------------------------------------------------------------------------------------------
def test_main_exports_the_cluster(dev: ProgramRun) -> None:
    assert {"kubernetesApiUrl", "kubernetesPrivateApiUrl", "kubeconfig", "clusterCaPem", "nodes", "appUrls"} <= set(
        dev.outputs
    )
    assert "kubeconfig" in dev.secret_outputs
    assert [node["name"] for node in dev.outputs["nodes"]] == ["master", "worker1", "worker2"]


# ------------------------------------------------------------------------------------------------
# A highly available control plane (controlPlaneCount 3)
# ------------------------------------------------------------------------------------------------
MEMBERS = ("master2", "master3")
SHARED_KEYS = ("ca", "sa", "front-proxy-ca", "etcd-ca")


def group_id(run: ProgramRun, name: str) -> str:
    return run.one("aws:ec2/securityGroup:SecurityGroup", name).id


def rules_on(run: ProgramRun, group: str) -> list[tuple[str, int, int, str]]:
    """(protocol, from, to, source group or CIDR) of every ingress rule on ``group``."""
    return sorted(
        (r["ipProtocol"], r["fromPort"], r["toPort"], r.get("referencedSecurityGroupId") or r.get("cidrIpv4"))
        for r in (rule.plain_inputs for rule in run.all(INGRESS))
        if r["securityGroupId"] == group
    )


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_three_control_plane_nodes_spread_over_the_zones_protected_and_rebuilt_delete_first(stack: str) -> None:
    run = run_cluster(stack, controlPlaneCount=3) if stack == "dev" else run_cluster("prod")
    # Subnet ids in zone order (registration order may differ between runs).
    zone_of = {r.id: r.plain_inputs["availabilityZone"] for r in run.all("aws:ec2/subnet:Subnet")}
    zones = sorted(zone_of.values())
    subnets = sorted(zone_of, key=lambda subnet: zones.index(zone_of[subnet]))
    cluster_group, control_plane_group = group_id(run, "gitops-cluster"), group_id(run, f"{NAME}-control-plane")
    placed = []
    for name in ("master", *MEMBERS):
        instance = run.one(INSTANCE, f"{NAME}-{name}")
        placed.append(subnets.index(instance.plain_inputs["subnetId"]))
        assert set(instance.plain_inputs["vpcSecurityGroupIds"]) == {cluster_group, control_plane_group}
        assert instance.protect, f"{name}: removing a control-plane node is refused"
        assert user_data(run, name)["hostname"] == name
    # master in the first zone, then one zone each, round robin over the stack's zones.
    assert placed == [index % len(subnets) for index in range(3)]
    for name in MEMBERS:
        member = run.one(INSTANCE, f"{NAME}-{name}")
        assert member.delete_before_replace  # out of etcd before a successor joins under its name
        assert {"ami", "userData", "subnetId", "instanceType"} <= set(member.ignore_changes)
        assert member.plain_inputs["associatePublicIpAddress"]  # steps reach it like a worker
    assert [node["role"] for node in run.outputs["nodes"]][:3] == ["control-plane"] * 3
    if stack == "prod":
        assert len(subnets) == 3 and sorted(placed) == [0, 1, 2], "prod: one control-plane node per zone"


def test_members_join_one_at_a_time_after_the_check_and_the_upgrade_gate(ha_cluster: ProgramRun) -> None:
    run = ha_cluster
    gate, check = run.named(f"{NAME}-master-upgrade"), run.named(f"{NAME}-ha-check")
    assert gate.urn in check.depends_on
    # No member instance exists before the cluster has been found able to take it.
    for name in MEMBERS:
        assert check.urn in run.one(INSTANCE, f"{NAME}-{name}").depends_on
    order = [check]
    for name in MEMBERS:
        membership, join = run.named(f"{NAME}-{name}-membership"), run.named(f"{NAME}-{name}-join")
        assert order[-1].urn in membership.depends_on  # the previous member has joined (or the check passed)
        assert membership.urn in join.depends_on  # the token is fresh and the predecessor gone before the join
        order.append(join)
    # Workers do not wait for the members; the provider waits for everything.
    assert not {r.urn for r in order[1:]} & set(run.named(f"{NAME}-worker1-join").depends_on)
    provider = run.one("pulumi:providers:kubernetes", f"{NAME}-provider")
    assert {r.urn for r in order[1:]} <= set(provider.depends_on)


def test_a_member_joins_the_stable_name_with_the_shared_keys_on_stdin(ha_cluster: ProgramRun) -> None:
    run = ha_cluster
    init_parts = stdin_parts(run.named(f"{NAME}-master-init"))
    shared = [init_parts[0], init_parts[1], *init_parts[3:]]  # what kubeadm init used
    for name in MEMBERS:
        node = run.one(INSTANCE, f"{NAME}-{name}").state
        join = run.named(f"{NAME}-{name}-join")
        assert join.plain_inputs["connection"]["host"] == node["publicIp"]
        assert is_secret_value(join.inputs["stdin"])
        document, *files = stdin_parts(join)
        assert files == shared, "exactly kubeadm's shared files, the same as the first node's"
        (config,) = yaml.safe_load_all(document)
        assert config["discovery"]["bootstrapToken"]["apiServerEndpoint"] == ENDPOINT
        assert config["controlPlane"]["localAPIEndpoint"] == {"advertiseAddress": node["privateIp"], "bindPort": 6443}
        assert config["nodeRegistration"]["name"] == name
        assert step_env(join)["API_SERVER_ENDPOINT"] == ENDPOINT
        assert join.plain_inputs["triggers"][-1] == run.one(INSTANCE, f"{NAME}-{name}").id
    # The check compares the first node's files with the Pulumi-made ones.
    digests = dict(pair.split("=") for pair in step_env(run.named(f"{NAME}-ha-check"))["SHARED_PUBLIC_SHA256"].split())
    assert digests == {
        "sa.pub": hashlib.sha256(init_parts[4].encode()).hexdigest(),
        "front-proxy-ca.crt": hashlib.sha256(init_parts[5].encode()).hexdigest(),
        "etcd/ca.crt": hashlib.sha256(init_parts[7].encode()).hexdigest(),
    }


def test_a_removed_member_leaves_etcd_from_the_first_node(ha_cluster: ProgramRun) -> None:
    run = ha_cluster
    eip = run.one("aws:ec2/eip:Eip", f"{NAME}-master-eip").state["publicIp"]
    for name in MEMBERS:
        node = run.one(INSTANCE, f"{NAME}-{name}")
        membership = run.named(f"{NAME}-{name}-membership")
        assert membership.plain_inputs["connection"]["host"] == eip
        assert step_env(membership)["NODE_IP"] == node.state["privateIp"]
        delete = step_env(membership, "delete")
        assert (delete["STEP_NAME"], delete["NODE_NAME"], delete["NODE_IP"]) == (
            "cluster/remove-control-plane.sh",
            name,
            node.state["privateIp"],
        )
        assert "etcdctl_local member remove" in sent_script(membership, "delete")
        assert membership.plain_inputs["triggers"] == [node.id]
        # Deregistered from the load balancer before it leaves etcd (the target depends on the join,
        # which depends on the membership: deleted in the reverse order).
        target = run.one("aws:lb/targetGroupAttachment:TargetGroupAttachment", f"{NAME}-{name}-api-target")
        assert run.named(f"{NAME}-{name}-join").urn in target.depends_on
        assert target.plain_inputs["targetId"] == node.id


def test_three_control_plane_nodes_sit_behind_an_internal_network_load_balancer(ha_cluster: ProgramRun) -> None:
    run = ha_cluster
    balancer = run.one("aws:lb/loadBalancer:LoadBalancer")
    lb_group = group_id(run, f"{NAME}-api-lb")
    assert balancer.plain_inputs["loadBalancerType"] == "network"
    assert balancer.plain_inputs["internal"] is True
    assert balancer.plain_inputs["enableCrossZoneLoadBalancing"] is True
    assert balancer.plain_inputs["securityGroups"] == [lb_group]  # at creation: none can be added later
    assert sorted(balancer.plain_inputs["subnets"]) == sorted(r.id for r in run.all("aws:ec2/subnet:Subnet"))
    targets = run.one("aws:lb/targetGroup:TargetGroup").plain_inputs
    assert (targets["port"], targets["protocol"], targets["targetType"]) == (6443, "TCP", "instance")
    assert targets["preserveClientIp"] == "false", "a node routed to itself through the NLB would time out"
    health = targets["healthCheck"]
    assert (health["protocol"], health["path"], health["port"], health["matcher"]) == (
        "HTTPS",
        "/readyz",
        "traffic-port",
        "200",
    )
    listener = run.one("aws:lb/listener:Listener").plain_inputs
    assert (listener["port"], listener["protocol"]) == (6443, "TCP")
    assert listener["defaultActions"] == [
        {"type": "forward", "targetGroupArn": run.one("aws:lb/targetGroup:TargetGroup").state["arn"]}
    ]
    attached = {
        r.name: r.plain_inputs["targetId"] for r in run.all("aws:lb/targetGroupAttachment:TargetGroupAttachment")
    }
    assert attached == {
        f"{NAME}-{name}-api-target": run.one(INSTANCE, f"{NAME}-{name}").id for name in ("master", *MEMBERS)
    }
    # The same name now points at the load balancer; kubeadm init waits until it forwards to the first node.
    record = run.one("aws:route53/record:Record")
    assert record.plain_inputs["name"] == "api.gitops-k8s.internal" and "records" not in record.plain_inputs
    assert record.plain_inputs["aliases"] == [
        {"name": balancer.state["dnsName"], "zoneId": balancer.state["zoneId"], "evaluateTargetHealth": False}
    ]
    init = run.named(f"{NAME}-master-init")
    first = run.one("aws:lb/targetGroupAttachment:TargetGroupAttachment", f"{NAME}-master-api-target")
    assert {record.urn, first.urn, run.one("aws:lb/listener:Listener").urn} <= set(init.depends_on)
    assert health["timeout"] < health["interval"]


def test_the_name_moves_to_the_load_balancer_only_once_it_forwards_to_the_first_node(ha_cluster: ProgramRun) -> None:
    """Registering a target returns before it is healthy: on a running cluster going to three, the record
    waits for a step on the first node that reaches its API server through the load balancer."""
    run = ha_cluster
    forwarding = run.one(COMMAND, f"{NAME}-api-through-load-balancer")
    env = step_env(forwarding)
    balancer = run.one("aws:lb/loadBalancer:LoadBalancer")
    assert (env["API_HOST"], env["API_PORT"], env["LOAD_BALANCER_HOST"]) == (
        "api.gitops-k8s.internal",
        "6443",
        balancer.state["dnsName"],
    )
    assert (
        forwarding.plain_inputs["connection"]["host"]
        == run.one("aws:ec2/eip:Eip", f"{NAME}-master-eip").state["publicIp"]
    )
    lb_group = group_id(run, f"{NAME}-api-lb")
    firewall = [
        r.urn
        for r in run.all(INGRESS) + run.all("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
        if lb_group in (r.plain_inputs["securityGroupId"], r.plain_inputs.get("referencedSecurityGroupId"))
    ]
    first = run.one("aws:lb/targetGroupAttachment:TargetGroupAttachment", f"{NAME}-master-api-target")
    assert {first.urn, run.one("aws:lb/listener:Listener").urn, *firewall} <= set(forwarding.depends_on)
    assert forwarding.urn in run.one("aws:route53/record:Record").depends_on


def test_security_groups_open_exactly_what_three_control_plane_nodes_need(ha_cluster: ProgramRun) -> None:
    run = ha_cluster
    cluster_group, gitlab_group = group_id(run, "gitops-cluster"), group_id(run, "gitops-gitlab")
    control_plane, lb_group = group_id(run, f"{NAME}-control-plane"), group_id(run, f"{NAME}-api-lb")
    # etcd between members only; the API from its load balancer (it connects from its own addresses).
    assert rules_on(run, control_plane) == [("tcp", 2379, 2380, control_plane), ("tcp", 6443, 6443, lb_group)]
    # The load balancer: whoever called the API before, by group, never a CIDR.
    assert rules_on(run, lb_group) == sorted([("tcp", 6443, 6443, cluster_group), ("tcp", 6443, 6443, gitlab_group)])
    (egress,) = [
        r.plain_inputs
        for r in run.all("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
        if r.plain_inputs["securityGroupId"] == lb_group
    ]
    assert (egress["fromPort"], egress["toPort"], egress["referencedSecurityGroupId"]) == (6443, 6443, control_plane)
    # Nothing for the controller manager, the scheduler or etcd's metrics (kubeadm binds them to 127.0.0.1).
    for port in (10257, 10259, 2381):
        assert not [r for r in run.all(INGRESS) if r.plain_inputs["fromPort"] <= port <= r.plain_inputs["toPort"]]


def test_the_endpoint_is_the_same_whatever_the_count(cluster: ProgramRun, ha_cluster: ProgramRun) -> None:
    """Going from 1 to 3 changes nothing kubeadm init recorded: the init step is identical."""
    for one, three in ((cluster, ha_cluster), (run_cluster("prod", controlPlaneCount=1), run_cluster("prod"))):
        assert init_documents(one)["ClusterConfiguration"] == init_documents(three)["ClusterConfiguration"]
        init_one, init_three = one.named(f"{NAME}-master-init"), three.named(f"{NAME}-master-init")
        assert init_one.plain_inputs == init_three.plain_inputs
        assert (
            one.outputs["kubernetesPrivateApiUrl"] == three.outputs["kubernetesPrivateApiUrl"] == f"https://{ENDPOINT}"
        )
        assert one.outputs["kubernetesApiUrl"] == three.outputs["kubernetesApiUrl"]
        assert one.named(f"{NAME}-worker1-join").plain_inputs == three.named(f"{NAME}-worker1-join").plain_inputs


def test_every_control_plane_node_is_upgraded_after_the_first_one_at_a_time_then_the_workers(
    ha_cluster: ProgramRun,
) -> None:
    run = ha_cluster
    gate = run.named(f"{NAME}-master-upgrade")
    previous = gate
    for name in MEMBERS:
        upgrade = run.named(f"{NAME}-{name}-upgrade")
        assert upgrade.plain_inputs["connection"]["host"] == run.one(INSTANCE, f"{NAME}-{name}").state["publicIp"]
        assert step_env(upgrade)["STEP_NAME"] == "cluster/control-plane-upgrade-node.sh"
        assert step_env(upgrade)["KUBERNETES_VERSION"] == run.outputs["kubernetesVersion"]
        assert {previous.urn, run.named(f"{NAME}-{name}-join").urn} <= set(upgrade.depends_on)
        previous = upgrade
    assert previous.urn in run.named(f"{NAME}-worker1-upgrade-drain").depends_on


def test_certificates_renew_on_every_control_plane_node(ha_cluster: ProgramRun) -> None:
    run = ha_cluster
    for name in ("master", *MEMBERS):
        step = run.named(f"{NAME}-{name}-certificates")
        host = run.one("aws:ec2/eip:Eip").state["publicIp"] if name == "master" else None
        host = host or run.one(INSTANCE, f"{NAME}-{name}").state["publicIp"]
        assert step.plain_inputs["connection"]["host"] == host
        assert step_env(step)["STEP_NAME"] == "cluster/certificates.sh"
    assert run.outputs["clusterCertificatesExpireAt"].endswith("T00:00:00Z")


def test_the_earliest_certificate_expiry_of_any_control_plane_node_is_the_output() -> None:
    expiries = {"master": "2027-11-30T00:00:00Z", "master2": "2027-06-01T00:00:00Z", "master3": "2027-12-01T00:00:00Z"}
    mocks = StackMocks(command_stdout={f"{NAME}-{name}-certificates": f"{at}\n" for name, at in expiries.items()})
    assert (
        run_cluster(mocks=mocks, controlPlaneCount=3).outputs["clusterCertificatesExpireAt"] == "2027-06-01T00:00:00Z"
    )


def test_the_loss_of_a_control_plane_node_reaches_no_worker_app_or_flux_wiring(ha_cluster: ProgramRun) -> None:
    """Workers and GitLab use the stable name; no input outside the control plane names a control-plane node.

    (Flux and agentk use the in-cluster `kubernetes` Service, whose endpoints are the API servers that
    are up; they get no API address from the program at all.)
    """
    run = ha_cluster
    addresses = {run.one(INSTANCE, f"{NAME}-{name}").state["privateIp"] for name in ("master", *MEMBERS)}
    for worker in ("worker1", "worker2"):
        for step in (f"{NAME}-{worker}-join", f"{NAME}-{worker}-upgrade"):
            text = json.dumps(run.named(step).plain_inputs) + "".join(
                stdin_parts(run.named(step)) if "join" in step else []
            )
            assert not [address for address in addresses if address in text], step
    assert run.outputs["kubernetesPrivateApiUrl"] == f"https://{ENDPOINT}"
    # CoreDNS leaves the first node once the others have joined.
    spread = run.named(f"{NAME}-spread-dns")
    joined = {run.named(f"{NAME}-{name}-join").urn for name in MEMBERS}
    joined |= {run.named(f"{NAME}-{worker}-membership").urn for worker in ("worker1", "worker2")}
    assert joined <= set(spread.depends_on)


def test_a_cluster_initialised_before_the_stable_endpoint_keeps_its_address_and_refuses_three() -> None:
    """A stack deployed before this change: its cluster recorded its first node's address."""
    recorded = "10.42.3.17:6443"
    mocks = StackMocks(command_stdout={f"{NAME}-master-init": recorded + "\n"})
    run = run_cluster(mocks=mocks)
    assert run.outputs["kubernetesPrivateApiUrl"] == f"https://{recorded}"
    (worker,) = yaml.safe_load_all(stdin_parts(run.named(f"{NAME}-worker1-join"))[0])
    assert worker["discovery"]["bootstrapToken"]["apiServerEndpoint"] == recorded
    assert step_env(run.named(f"{NAME}-worker1-join"))["API_SERVER_ENDPOINT"] == recorded
    with pytest.raises(ProgramError) as refused:
        run_cluster(mocks=StackMocks(command_stdout={f"{NAME}-master-init": recorded + "\n"}), controlPlaneCount=3)
    message = str(refused.value)
    assert "controlPlaneCount: got 3" in message and f"controlPlaneEndpoint {recorded}" in message
    assert "Set controlPlaneCount back to 1" in message and "Highly available control plane" in message


def test_push_deploy_jobs_reach_the_api_load_balancer_in_certificate_mode() -> None:
    """KUBE_URL is the stable name: with three nodes the CI job VMs go through the load balancer's group."""
    run = run_fixture_stack(
        "dev", {**ADMIN, "controlPlaneCount": 3, "delivery": "push", "clusterIntegration": "certificate"}
    )
    lb_group = run.one("aws:ec2/securityGroup:SecurityGroup", f"{NAME}-api-lb").id
    job_vms = run.one("aws:ec2/securityGroup:SecurityGroup", "runners-job-vm-group").id
    rule = run.one(INGRESS, "runners-cluster-api-lb-from-job-vms").plain_inputs
    assert (rule["securityGroupId"], rule["referencedSecurityGroupId"], rule["fromPort"]) == (lb_group, job_vms, 6443)
    # Not in agent mode (jobs use GitLab's k8s proxy), nor with one control-plane node (no load balancer).
    for overrides in ({"controlPlaneCount": 3}, {"delivery": "push", "clusterIntegration": "certificate"}):
        other = run_fixture_stack("dev", {**ADMIN, **overrides})
        assert not [r for r in other.all(INGRESS) if r.name == "runners-cluster-api-lb-from-job-vms"]


def test_the_shared_keys_reach_members_only_on_stdin_as_secrets(ha_cluster: ProgramRun) -> None:
    needles = secret_values(ha_cluster)
    for step in ha_cluster.all(COMMAND):
        for command in ("create", "delete"):
            text = step.plain_inputs.get(command) or ""
            assert not [label for label, needle in needles.items() if needle in text], f"{step.name} {command}"
    assert not [hit for r in ha_cluster for hit in unwrapped_hits(r.inputs, needles, r.name)]
    for name in MEMBERS:
        join = ha_cluster.named(f"{NAME}-{name}-join")
        assert is_secret_value(join.inputs["stdin"])
        for key in ("ca-key", "sa-key", "front-proxy-ca-key", "etcd-ca-key"):
            assert needles[f"{key} (base64)"] in join.plain_inputs["stdin"], (name, key)
