"""Run the real Pulumi program under mocks, the way the CLI would, and record what it registers.

Used by the tests (through ``tests/conftest.py``) and by the offline render command. No Pulumi CLI,
provider plugin, credential or cloud is involved:

* configuration is assembled like the CLI does it: Pulumi.yaml defaults, then ``Pulumi.<stack>.yaml``,
  then per-call overrides; ``secure:`` values are replaced by a fixed plaintext and marked secret;
* ``StackMocks`` answers every resource and invoke with realistic values: AWS-shaped ids, private and
  public IPs, availability zones, ARNs and DNS names named the way AWS names them in the stack's
  ``aws:region``, real keys and certificates made with ``cryptography``, random strings of the
  requested length;
* files the program writes for provider plugins go to a scratch directory (``provider_files_dir``),
  not the project directory a real ``pulumi`` run uses;
* ``RecordingMonitor`` keeps each registration's inputs (secrets still marked) and options (parent,
  protect, retainOnDelete, dependsOn, provider...), which the tests and the policy runner read.
"""

from __future__ import annotations

import atexit
import base64
import datetime
import hashlib
import ipaddress
import json
import os
import re
import runpy
import shutil
import string
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components import clock

ROOT = Path(__file__).resolve().parent.parent
PROJECT = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["name"]
MOCK_SECRET_VALUE = "mock-secret-value"  # what a `secure:` stack value decrypts to under mocks
# The region a stack file without `aws:region` is mocked in (the real provider would then read
# AWS_REGION or the AWS profile); tools/render.py says so in its index when this stands in.
DEFAULT_REGION = "us-east-1"
MOCK_ZONE_COUNT = 4  # regular availability zones the mocked region reports (a test may lower it)
# Where the program writes files meant for provider plugins (the GitLab provider's CA file) during a
# mocked run: a scratch directory, never the project directory, so tests and render cannot replace
# the CA file a real `pulumi` run wrote (components/gitlab_host.py PROVIDER_FILES_DIR_ENV).
PROVIDER_FILES_DIR_ENV = "GITOPS_PROVIDER_FILES_DIR"
_PROVIDER_FILES_DIR: Path | None = None
# The tests' own stack files: a user edits Pulumi.<stack>.yaml, never these, so tests that assert
# specific values read these; the user's files are only held to invariants (tests/test_user_stacks.py).
FIXTURE_STACKS = ROOT / "tests" / "fixtures" / "stacks"


# --------------------------------------------------------------------------------------------
# Configuration, as the CLI assembles it
# --------------------------------------------------------------------------------------------
def _config_string(value: Any) -> str:
    """Pulumi passes every config value to the program as a string; structured values as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def stack_file_path(stack: str, stack_dir: Path | None = None) -> Path:
    """``Pulumi.<stack>.yaml`` in ``stack_dir`` (default: the project directory, the user's file)."""
    return (stack_dir or ROOT) / f"Pulumi.{stack}.yaml"


def stack_config(
    stack: str, overrides: Mapping[str, Any] | None = None, *, stack_dir: Path | None = None
) -> tuple[dict[str, str], list[str]]:
    """Return (config, secret_keys) for a stack: Pulumi.yaml defaults < stack file < overrides.

    The stack file is ``Pulumi.<stack>.yaml`` in ``stack_dir`` (default: the project directory).
    Override keys may be bare (``workerCount``: this project) or namespaced (``aws:region``). A
    value of ``None`` removes the key, as ``pulumi config rm`` would.
    """
    project_file = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    config: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, schema in (project_file.get("config") or {}).items():
        if isinstance(schema, dict) and "default" in schema:
            config[f"{PROJECT}:{key}"] = _config_string(schema["default"])
    stack_file = stack_file_path(stack, stack_dir)
    if stack_file.exists():
        for key, value in ((yaml.safe_load(stack_file.read_text()) or {}).get("config") or {}).items():
            if isinstance(value, dict) and set(value) == {"secure"}:
                config[key] = MOCK_SECRET_VALUE
                secret_keys.append(key)
            else:
                config[key] = _config_string(value)
    for key, value in (overrides or {}).items():
        full_key = key if ":" in key else f"{PROJECT}:{key}"
        if value is None:
            config.pop(full_key, None)
        else:
            config[full_key] = _config_string(value)
    return config, secret_keys


# --------------------------------------------------------------------------------------------
# Realistic mock values
# --------------------------------------------------------------------------------------------
def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def _number(name: str, modulo: int) -> int:
    return int(_digest(name)[:8], 16) % modulo


_KEY_CACHE: dict[str, Any] = {}


def _private_key(name: str, algorithm: str, rsa_bits: int, curve: str) -> Any:
    """A real private key per resource name (cached: RSA generation is slow)."""
    cache_key = f"{name}/{algorithm}/{rsa_bits}/{curve}"
    if cache_key not in _KEY_CACHE:
        if algorithm == "RSA":
            _KEY_CACHE[cache_key] = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
        elif algorithm == "ECDSA":
            curves = {"P224": ec.SECP224R1(), "P256": ec.SECP256R1(), "P384": ec.SECP384R1(), "P521": ec.SECP521R1()}
            _KEY_CACHE[cache_key] = ec.generate_private_key(curves[curve])
        elif algorithm == "ED25519":
            _KEY_CACHE[cache_key] = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(f"tls.PrivateKey: unsupported algorithm {algorithm!r}")
    return _KEY_CACHE[cache_key]


def _private_key_state(name: str, inputs: dict) -> dict:
    algorithm = inputs.get("algorithm", "RSA")
    key = _private_key(name, algorithm, int(inputs.get("rsaBits", 2048)), inputs.get("ecdsaCurve", "P224"))
    public = key.public_key()
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    if algorithm == "RSA":
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    elif algorithm == "ECDSA":
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    else:
        pem = pkcs8  # the tls provider emits PKCS#8 for ED25519
    openssh_private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    openssh_public = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    blob = openssh_public.split()[1]
    fingerprint = "SHA256:" + base64.b64encode(hashlib.sha256(base64.b64decode(blob)).digest()).decode().rstrip("=")
    return {
        **inputs,
        "privateKeyPem": pem.decode(),
        "privateKeyPemPkcs8": pkcs8.decode(),
        "privateKeyOpenssh": openssh_private.decode(),
        "publicKeyPem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode(),
        "publicKeyOpenssh": openssh_public.decode() + "\n",
        "publicKeyFingerprintSha256": fingerprint,
    }


def _load_private_key(pem: str) -> Any:
    return serialization.load_pem_private_key(pem.encode(), password=None)


def _name(subject: dict | None) -> x509.Name:
    subject = subject or {}
    attributes = []
    for key, oid in (("commonName", NameOID.COMMON_NAME), ("organization", NameOID.ORGANIZATION_NAME)):
        if subject.get(key):
            attributes.append(x509.NameAttribute(oid, subject[key]))
    return x509.Name(attributes)


def _sign(name: str, inputs: dict, subject: x509.Name, public_key: Any, issuer: x509.Name, signer: Any) -> str:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    hours = int(inputs.get("validityPeriodHours", 24))
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(int(_digest(name, "serial")[:30], 16))
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=hours))
    )
    is_ca = bool(inputs.get("isCaCertificate"))
    builder = builder.add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in inputs.get("dnsNames") or []]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in inputs.get("ipAddresses") or []]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    uses = set(inputs.get("allowedUses") or [])
    extended = [
        oid
        for use, oid in (
            ("server_auth", ExtendedKeyUsageOID.SERVER_AUTH),
            ("client_auth", ExtendedKeyUsageOID.CLIENT_AUTH),
        )
        if use in uses
    ]
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(signer, algorithm).public_bytes(serialization.Encoding.PEM).decode()


def _self_signed_cert_state(name: str, inputs: dict) -> dict:
    key = _load_private_key(inputs["privateKeyPem"])
    subject = _name(inputs.get("subject"))
    return {**inputs, "certPem": _sign(name, inputs, subject, key.public_key(), subject, key)}


def _cert_request_state(name: str, inputs: dict) -> dict:
    key = _load_private_key(inputs["privateKeyPem"])
    builder = x509.CertificateSigningRequestBuilder().subject_name(_name(inputs.get("subject")))
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in inputs.get("dnsNames") or []]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in inputs.get("ipAddresses") or []]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = builder.sign(key, algorithm)
    return {**inputs, "certRequestPem": csr.public_bytes(serialization.Encoding.PEM).decode()}


def _locally_signed_cert_state(name: str, inputs: dict) -> dict:
    csr = x509.load_pem_x509_csr(inputs["certRequestPem"].encode())
    ca_cert = x509.load_pem_x509_certificate(inputs["caCertPem"].encode())
    ca_key = _load_private_key(inputs["caPrivateKeyPem"])
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        inputs = {
            **inputs,
            "dnsNames": san.get_values_for_type(x509.DNSName),
            "ipAddresses": [str(ip) for ip in san.get_values_for_type(x509.IPAddress)],
        }
    except x509.ExtensionNotFound:
        pass
    cert = _sign(name, inputs, csr.subject, csr.public_key(), ca_cert.subject, ca_key)
    state = {k: v for k, v in inputs.items() if k not in ("dnsNames", "ipAddresses")}
    return {**state, "certPem": cert}


def _random_text(name: str, inputs: dict) -> str:
    length = int(inputs.get("length", 16))
    alphabet = ""
    if inputs.get("lower", True):
        alphabet += string.ascii_lowercase
    if inputs.get("upper", True):
        alphabet += string.ascii_uppercase
    if inputs.get("numeric", inputs.get("number", True)):
        alphabet += string.digits
    if inputs.get("special", True):
        alphabet += inputs.get("overrideSpecial") or "!@#$%&*()-_=+[]{}<>:?"
    seed = int(_digest(name, "random"), 16)
    chars = []
    for _ in range(length):
        seed, index = divmod(seed * 6364136223846793005 + 1442695040888963407, len(alphabet))
        chars.append(alphabet[index])
        seed %= 2**64
    return "".join(chars)


def _private_ip(name: str) -> str:
    return f"10.42.{_number(name, 16)}.{10 + _number(name + 'host', 200)}"


def _public_ip(name: str) -> str:
    # 198.51.100.0/24 (TEST-NET-2): realistic shape, never a real host.
    return f"198.51.100.{10 + _number(name, 200)}"


# ---- names that depend on the region, as AWS forms them ---------------------------------------
# AWS VPC user guide, "DNS attributes for your VPC" (docs.aws.amazon.com/vpc/latest/userguide/
# vpc-dns.html#vpc-dns-hostnames): the public DNS hostname is ec2-<public IPv4>.compute-1.amazonaws.com
# in us-east-1 and ec2-<public IPv4>.<region>.compute.amazonaws.com elsewhere; the private one is
# ip-<private IPv4>.ec2.internal in us-east-1 and ip-<private IPv4>.<region>.compute.internal elsewhere.
_DIRECTIONS = {
    "north": "n",
    "south": "s",
    "east": "e",
    "west": "w",
    "central": "c",
    "northeast": "ne",
    "northwest": "nw",
    "southeast": "se",
    "southwest": "sw",
}


def partition(region: str) -> tuple[str, str]:
    """(partition, DNS suffix) of a region: aws-cn and aws-us-gov have their own."""
    if region.startswith("cn-"):
        return "aws-cn", "amazonaws.com.cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov", "amazonaws.com"
    return "aws", "amazonaws.com"


def zone_names(region: str, count: int | None = None) -> list[str]:
    """The region's zone names: the region plus a letter (us-east-1a, eu-west-3b...)."""
    return [f"{region}{letter}" for letter in "abcdefgh"[: count or MOCK_ZONE_COUNT]]


def zone_ids(region: str, count: int | None = None) -> list[str]:
    """Zone ids as AWS spells them: a short region code plus -az<N> (use1-az1, euw3-az2, apse2-az1).

    Which name maps to which id differs per account; the mock simply numbers them in order.
    """
    words = region.split("-")
    code = words[0] + "".join(_DIRECTIONS.get(word, word[:1]) for word in words[1:-1]) + words[-1]
    return [f"{code}-az{index}" for index in range(1, (count or MOCK_ZONE_COUNT) + 1)]


def public_dns(ip: str, region: str) -> str:
    host = f"ec2-{ip.replace('.', '-')}"
    if region == "us-east-1":
        return f"{host}.compute-1.amazonaws.com"
    return f"{host}.{region}.compute.{partition(region)[1]}"


def private_dns(ip: str, region: str) -> str:
    host = f"ip-{ip.replace('.', '-')}"
    return f"{host}.ec2.internal" if region == "us-east-1" else f"{host}.{region}.compute.internal"


def provider_files_dir() -> Path:
    """The scratch directory mocked runs write provider files into (one per process)."""
    global _PROVIDER_FILES_DIR
    if _PROVIDER_FILES_DIR is None:
        _PROVIDER_FILES_DIR = Path(tempfile.mkdtemp(prefix="gitops-provider-files-"))
        atexit.register(shutil.rmtree, _PROVIDER_FILES_DIR, True)
    return _PROVIDER_FILES_DIR


def _step_stdout(inputs: dict, config: Mapping[str, str]) -> str:
    """What a remote step prints on stdout when a test does not say (most steps print nothing).

    userdata/cluster/kubeadm-version.sh prints the kubeadm a new control plane installed: the newest
    patch of the configured minor (``.5`` here). userdata/cluster/control-plane-upgrade.sh prints the
    version the control plane runs afterwards: the exact TARGET_VERSION, or the newest patch of
    TARGET_MINOR. userdata/cluster/certificates.sh prints the earliest certificate expiry, a year
    ahead. userdata/gitlab/seed-admin-token.sh prints the seeded token's expiry date, 365 days ahead.
    userdata/agent/agentk-rollout.sh prints the agentk pods that run now (two replicas, the chart's default).
    """
    create = str(inputs.get("create") or "")
    if "STEP_NAME=gitlab/seed-admin-token.sh" in create:
        expires = datetime.date.today() + datetime.timedelta(days=365)
        return f"expires_at={expires.isoformat()}\n"
    if "STEP_NAME=cluster/kubeadm-version.sh" in create:
        minor = config.get(f"{PROJECT}:kubernetesVersion", "1.36").removeprefix("v")
        return f"v{minor}.5\n"
    if "STEP_NAME=cluster/control-plane-upgrade.sh" in create:
        exact = re.search(r"\bTARGET_VERSION=(\d+\.\d+\.\d+)\b", create)
        minor = re.search(r"\bTARGET_MINOR=(\d+\.\d+)\b", create)
        return f"v{exact.group(1)}\n" if exact else f"v{minor.group(1) if minor else '1.36'}.5\n"
    if "STEP_NAME=cluster/certificates.sh" in create:
        return f"{clock.today() + datetime.timedelta(days=365)}T00:00:00Z\n"
    if "STEP_NAME=cluster/control-plane-init.sh" in create:
        # A cluster this step initialised records the endpoint it was given (CONTROL_PLANE_ENDPOINT).
        endpoint = re.search(r"\bCONTROL_PLANE_ENDPOINT=(\S+)", create)
        return f"{endpoint.group(1)}\n" if endpoint else ""
    if "STEP_NAME=agent/agentk-rollout.sh" in create:
        token = re.search(r"\bAGENT_TOKEN_ID=(\d+)\b", create)
        suffix = _digest("agentk", token.group(1) if token else "")[:5]
        return f"gitlab-agent-v2-7d9f4c{suffix[:4]}-{suffix}a,gitlab-agent-v2-7d9f4c{suffix[:4]}-{suffix}b\n"
    return ""


# The tls provider keeps what it made in state; a second run of the program (tools/plan.py) must
# see the same keys and certificates for the same inputs, as a second `pulumi up` would. Signing
# and OpenSSH serialisation are randomised, so outputs are kept per (type, name, inputs).
_TLS_CACHE: dict[str, dict] = {}


def _tls_outputs(typ: str, name: str, inputs: dict) -> dict:
    key = json.dumps([typ, name, plain(inputs)], sort_keys=True, default=str)
    if key not in _TLS_CACHE:
        # Key inputs arrive as secrets (the tls SDK marks private keys secret): compute on plain values.
        values = plain(inputs)
        if typ == "tls:index/privateKey:PrivateKey":
            state = _private_key_state(name, values)
        elif typ == "tls:index/selfSignedCert:SelfSignedCert":
            state = {"certPem": _self_signed_cert_state(name, values)["certPem"]}
        elif typ == "tls:index/certRequest:CertRequest":
            state = {"certRequestPem": _cert_request_state(name, values)["certRequestPem"]}
        elif typ == "tls:index/locallySignedCert:LocallySignedCert":
            state = {"certPem": _locally_signed_cert_state(name, values)["certPem"]}
        else:
            raise NotImplementedError(f"no mock for {typ}; add one to tools/harness.py")
        _TLS_CACHE[key] = {k: v for k, v in state.items() if k not in values}
    return _TLS_CACHE[key]


class StackMocks(pulumi_mocks.Mocks):
    """Answers resource registrations and invokes with values shaped like the real providers'."""

    def __init__(
        self,
        command_stdout: Mapping[str, str] | None = None,
        region: str = DEFAULT_REGION,
        newest_ami: str | None = None,
    ) -> None:
        # Remote/local commands print what a test needs (e.g. a token read back); keyed by resource name.
        self.command_stdout = dict(command_stdout or {})
        self.region = region  # run_function sets it from the stack's aws:region
        # The image a `most_recent` AMI lookup finds: set it to stand for a newer image published later.
        self.newest_ami = newest_ami
        self.config: Mapping[str, str] = {}  # the run's configuration, set by run_function
        # A stack deployed before (tools/plan.py): a resource registered again with the same inputs
        # keeps its id and outputs, as the engine keeps them for an unchanged resource.
        self.deployed: dict[tuple[str, str], Registration] = {}
        # Each registration's ignore_changes (set by RecordingMonitor): the engine keeps the old
        # value of an ignored input (processIgnoreChanges), so it does not make the resource new.
        self.ignore_changes: dict[tuple[str, str], list[str]] = {}

    def keep_deployed(self, run: ProgramRun) -> None:
        self.deployed = {(r.type, r.name): r for r in run.registrations if r.custom}

    def _arn(self, service: str, resource: str) -> str:
        return f"arn:{partition(self.region)[0]}:{service}:{self.region}:123456789012:{resource}"

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str | None, dict]:
        inputs = dict(args.inputs)
        name, typ = args.name, args.typ
        deployed = self.deployed.get((typ, name))
        if deployed is not None:
            ignored = {key for key in self.ignore_changes.get((typ, name), []) if key in deployed.inputs}
            if plain(deployed.inputs) == plain({**inputs, **{key: deployed.inputs[key] for key in ignored}}):
                return deployed.id, deployed.state
        short = _digest(typ, name)[:17]
        state: dict = dict(inputs)
        if typ == "aws:ec2/vpc:Vpc":
            state.update(arn=self._arn("ec2", f"vpc/vpc-{short}"), defaultSecurityGroupId=f"sg-{short[::-1]}")
            return f"vpc-{short}", state
        if typ == "aws:ec2/subnet:Subnet":
            return f"subnet-{short}", state
        if typ == "aws:ec2/internetGateway:InternetGateway":
            return f"igw-{short}", state
        if typ == "aws:ec2/routeTable:RouteTable":
            return f"rtb-{short}", state
        if typ == "aws:ec2/routeTableAssociation:RouteTableAssociation":
            return f"rtbassoc-{short}", state
        if typ == "aws:ec2/securityGroup:SecurityGroup":
            return f"sg-{short}", state
        if typ in (
            "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
            "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
        ):
            return f"sgr-{short}", state
        if typ == "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup":
            # The VPC's own default group, adopted (its id is the VPC's defaultSecurityGroupId).
            state.update(arn=self._arn("ec2", f"security-group/sg-{short}"), name="default")
            return f"sg-{short}", state
        if typ == "aws:ec2/launchTemplate:LaunchTemplate":
            template_id = f"lt-{short}"
            state.update(
                arn=self._arn("ec2", f"launch-template/{template_id}"),
                name=inputs.get("name") or f"{name}-{short[:7]}",
                latestVersion=1,
                defaultVersion=1,
            )
            return template_id, state
        if typ == "aws:autoscaling/group:Group":
            # Autonamed like every Pulumi resource: <logical name>-<7 random characters>.
            group_name = inputs.get("name") or f"{name}-{short[:7]}"
            state.update(
                name=group_name,
                arn=self._arn(
                    "autoscaling",
                    f"autoScalingGroup:{_digest(name, 'uuid')[:8]}-{_digest(name, 'uuid')[8:12]}-"
                    f"{_digest(name, 'uuid')[12:16]}-{_digest(name, 'uuid')[16:20]}-"
                    f"{_digest(name, 'uuid')[20:32]}:autoScalingGroupName/{group_name}",
                ),
                desiredCapacity=inputs.get("minSize", 0),
            )
            return group_name, state
        if typ == "aws:cloudwatch/logGroup:LogGroup":
            group_name = inputs.get("name") or f"{name}-{short[:7]}"
            # The provider strips the ":*" AWS appends to a log group's ARN.
            state.update(name=group_name, arn=self._arn("logs", f"log-group:{group_name}"))
            return group_name, state
        if typ == "aws:ec2/flowLog:FlowLog":
            state.update(arn=self._arn("ec2", f"vpc-flow-log/fl-{short}"))
            return f"fl-{short}", state
        if typ == "aws:iam/rolePolicy:RolePolicy":
            # Its id is "<role name>:<policy name>".
            policy_name = inputs.get("name") or f"{name}-{short[:7]}"
            state.update(name=policy_name)
            return f"{inputs.get('role')}:{policy_name}", state
        if typ == "aws:ec2/instance:Instance":
            private_ip = inputs.get("privateIp") or _private_ip(name)
            state.update(
                arn=self._arn("ec2", f"instance/i-{short}"),
                privateIp=private_ip,
                privateDns=private_dns(private_ip, self.region),
                publicIp=_public_ip(name) if inputs.get("associatePublicIpAddress") else "",
                publicDns=public_dns(_public_ip(name), self.region) if inputs.get("associatePublicIpAddress") else "",
                primaryNetworkInterfaceId=f"eni-{short}",
                instanceState="running",
            )
            if state["publicIp"] == "":
                state.pop("publicIp")
                state.pop("publicDns")
            return f"i-{short}", state
        if typ == "aws:ec2/eip:Eip":
            ip = _public_ip(name)
            state.update(
                publicIp=ip, publicDns=public_dns(ip, self.region), allocationId=f"eipalloc-{short}", domain="vpc"
            )
            return f"eipalloc-{short}", state
        if typ == "aws:ec2/eipAssociation:EipAssociation":
            return f"eipassoc-{short}", state
        if typ == "aws:ebs/volume:Volume":
            state.update(arn=self._arn("ec2", f"volume/vol-{short}"))
            return f"vol-{short}", state
        if typ == "aws:s3/bucket:Bucket":
            # Autonamed from bucket_prefix (terraform's id.PrefixedUniqueId: prefix + 26 characters).
            bucket = inputs.get("bucket") or f"{inputs.get('bucketPrefix') or name + '-'}{short}{short[:9]}"
            state.update(bucket=bucket, arn=f"arn:{partition(self.region)[0]}:s3:::{bucket}", region=self.region)
            return bucket, state
        if typ == "aws:dlm/lifecyclePolicy:LifecyclePolicy":
            state.update(arn=self._arn("dlm", f"policy/policy-{short}"))
            return f"policy-{short}", state
        if typ == "aws:ec2/volumeAttachment:VolumeAttachment":
            return f"vai-{short}", state
        if typ == "aws:lb/loadBalancer:LoadBalancer":
            # An internal load balancer's DNS name starts with "internal-"; the alias zone of load
            # balancer DNS names is per region and kind (AWS General Reference, Elastic Load Balancing
            # endpoints: us-east-1 Z26RNL4JYFTOTI for Network, Z35SXDOTRQ7X7K for Application Load
            # Balancers); the mock uses those two in every region.
            lb_name = inputs.get("name") or f"{name}-{short[:7]}"
            kind = "net" if inputs.get("loadBalancerType") == "network" else "app"
            scheme = "internal-" if inputs.get("internal") else ""
            domain = "elb"
            state.update(
                name=lb_name,
                arn=self._arn("elasticloadbalancing", f"loadbalancer/{kind}/{lb_name}/{short[:16]}"),
                arnSuffix=f"{kind}/{lb_name}/{short[:16]}",
                dnsName=f"{scheme}{lb_name}-{short[:16]}.{domain}.{self.region}.{partition(self.region)[1]}",
                zoneId="Z26RNL4JYFTOTI" if kind == "net" else "Z35SXDOTRQ7X7K",
                vpcId=f"vpc-{_digest('vpc')[:17]}",
            )
            return state["arn"], state
        if typ == "aws:lb/targetGroup:TargetGroup":
            group_name = inputs.get("name") or f"{name}-{short[:7]}"
            state.update(
                name=group_name, arn=self._arn("elasticloadbalancing", f"targetgroup/{group_name}/{short[:16]}")
            )
            return state["arn"], state
        if typ == "aws:lb/listener:Listener":
            state.update(arn=self._arn("elasticloadbalancing", f"listener/net/{name}/{short[:16]}/{short[::-1][:16]}"))
            return state["arn"], state
        if typ == "aws:lb/targetGroupAttachment:TargetGroupAttachment":
            return f"{inputs.get('targetGroupArn')},{inputs.get('targetId')},{inputs.get('port')}", state
        if typ == "aws:route53/zone:Zone":
            zone_id = "Z" + _digest(name, "zone")[:20].upper()
            state.update(zoneId=zone_id, arn=f"arn:{partition(self.region)[0]}:route53:::hostedzone/{zone_id}")
            state["nameServers"] = [] if inputs.get("vpcs") else [f"ns-{n}.awsdns-00.org" for n in range(4)]
            return zone_id, state
        if typ == "aws:route53/record:Record":
            record_name = str(inputs.get("name", "")).rstrip(".").lower()
            state["fqdn"] = record_name
            return f"{inputs.get('zoneId')}_{record_name}_{inputs.get('type')}", state
        if typ == "aws:ec2/keyPair:KeyPair":
            state.update(keyPairId=f"key-{short}", arn=self._arn("ec2", f"key-pair/{name}"))
            return inputs.get("keyName", name), state
        if typ.startswith("aws:iam/"):
            resource_name = inputs.get("name") or f"{name}-{short[:7]}"
            kind = typ.split(":")[-1]
            state.update(
                name=resource_name,
                arn=f"arn:{partition(self.region)[0]}:iam::123456789012:{kind[0].lower() + kind[1:]}/{resource_name}",
            )
            if kind in ("Role", "InstanceProfile"):
                state["uniqueId"] = f"AROA{short.upper()}"
            return resource_name, state
        if typ.startswith("tls:index/"):
            return name, {**inputs, **_tls_outputs(typ, name, inputs)}
        if typ in ("random:index/randomPassword:RandomPassword", "random:index/randomString:RandomString"):
            state["result"] = _random_text(name, inputs)
            if typ.endswith("RandomPassword"):
                state["bcryptHash"] = "$2a$10$" + _digest(name)[:53]
            return name, state
        if typ == "random:index/randomId:RandomId":
            length = int(inputs.get("byteLength", 8))
            state.update(hex=_digest(name)[: 2 * length], dec=str(int(_digest(name)[: 2 * length], 16)))
            return state["hex"], state
        if typ in ("command:remote:Command", "command:local:Command"):
            stdout = self.command_stdout.get(name)
            state.update(stdout=_step_stdout(inputs, self.config) if stdout is None else stdout, stderr="")
            return f"{name}-{short[:8]}", state
        if typ == "gitlab:index/project:Project":
            path = inputs.get("path") or inputs.get("name", name)
            namespace = "operator"
            state.update(
                pathWithNamespace=f"{namespace}/{path}",
                webUrl=f"https://gitlab.example.test/{namespace}/{path}",
                sshUrlToRepo=f"ssh://git@gitlab.example.test:2222/{namespace}/{path}.git",
                httpUrlToRepo=f"https://gitlab.example.test/{namespace}/{path}.git",
                projectId=str(100 + _number(name, 800)),
            )
            return state["projectId"], state
        if typ == "gitlab:index/personalAccessToken:PersonalAccessToken":
            # GitLab returns the token once; rotation_configuration sets expiresAt from today.
            rotation = inputs.get("rotationConfiguration") or {}
            days = int(rotation.get("expirationDays", 30))
            token_id = 1 + _number(name, 999)
            state.update(
                token="glpat-" + _random_text(name, {"length": 20, "special": False}),
                expiresAt=inputs.get("expiresAt")
                or (datetime.date.today() + datetime.timedelta(days=days)).isoformat(),
                active=True,
                revoked=False,
            )
            return f"{inputs.get('userId')}:{token_id}", state
        if typ == "gitlab:index/userRunner:UserRunner":
            state.update(token="glrt-" + _random_text(name, {"length": 20, "special": False}))
            return str(1 + _number(name, 99)), state
        if typ == "gitlab:index/projectDeployToken:ProjectDeployToken":
            state.update(
                token="gldt-" + _random_text(name, {"length": 20, "special": False}),
                username=f"gitlab+deploy-token-{_number(name, 99)}",
            )
            return str(1 + _number(name, 99)), state
        if typ == "gitlab:index/clusterAgent:ClusterAgent":
            # POST /projects/:id/cluster_agents returns the agent's id; the provider's id is <project>:<id>.
            state["agentId"] = 1 + _number(name, 99)
            return f"{inputs.get('project')}:{state['agentId']}", state
        if typ == "gitlab:index/clusterAgentToken:ClusterAgentToken":
            # The token is returned once, at creation; agent tokens start with glagent-.
            state.update(
                token="glagent-" + _random_text(name, {"length": 50, "special": False}),
                tokenId=1 + _number(name + "token", 999),
                status="active",
            )
            return f"{inputs.get('project')}:{inputs.get('agentId')}:{state['tokenId']}", state
        if typ == "gitlab:index/user:User":
            # namespaceId: the user's personal namespace, made with the user.
            state.update(userId=1 + _number(name, 99), namespaceId=100 + _number(name, 99))
            return str(state["userId"]), state
        if typ == "kubernetes:core/v1:Secret" and inputs.get("type") == "kubernetes.io/service-account-token":
            # The token controller fills these in once the ServiceAccount exists.
            state["data"] = {
                "token": base64.b64encode(f"eyJhbGciOiJSUzI1NiJ9.{_digest(name)}.sig".encode()).decode(),
                **(inputs.get("data") or {}),
            }
            return f"{name}", state
        if typ.startswith("kubernetes:"):
            metadata = dict(inputs.get("metadata") or {})
            metadata.setdefault("name", name)
            state["metadata"] = metadata
            return metadata["name"], state
        return f"{name}-{short[:8]}" if args.custom else None, state

    def call(self, args: pulumi_mocks.MockCallArgs) -> dict:
        token = args.token
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {"names": zone_names(self.region), "zoneIds": zone_ids(self.region), "id": self.region}
        if token == "aws:ec2/getAmi:getAmi":
            owners = args.args.get("owners") or ["self"]
            image_ids = [
                value
                for item in args.args.get("filters") or []
                if item.get("name") == "image-id"
                for value in item.get("values") or []
            ]
            return {
                "id": image_ids[0] if image_ids else self.newest_ami or f"ami-{_digest('ami', *owners)[:17]}",
                "name": "debian-12-amd64-20261101-2345",
                "architecture": "x86_64",
                # Debian's official images boot from /dev/xvda (https://wiki.debian.org/Cloud/AmazonEC2Image).
                "rootDeviceName": "/dev/xvda",
                "rootDeviceType": "ebs",
            }
        if token == "aws:ec2/getInstanceType:getInstanceType":
            # DescribeInstanceTypes EbsInfo.EbsOptimizedSupport: the Nitro families are EBS-optimized by
            # default; t2 and other Xen-era types are not (AWS "Amazon EBS-optimized instances").
            instance_type = str(args.args.get("instanceType", ""))
            family = instance_type.split(".", 1)[0]
            support = "unsupported" if family in ("t1", "t2", "m1", "m3", "c1", "c3") else "default"
            # ProcessorInfo.SupportedArchitectures: Graviton families (a generation digit, then g) and
            # Apple silicon Macs are arm64.
            arm = re.match(r"^(a1|[a-z]+\d+g[a-z]*|mac2(-[a-z0-9]+)?)$", family)
            return {
                "id": instance_type,
                "instanceType": instance_type,
                "ebsOptimizedSupport": support,
                "supportedArchitectures": ["arm64"] if arm else ["x86_64"],
            }
        if token == "aws:index/getRegion:getRegion":
            return {"name": self.region, "region": self.region, "id": self.region}
        if token == "aws:index/getPartition:getPartition":
            name, suffix = partition(self.region)
            return {"partition": name, "dnsSuffix": suffix, "id": name}
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": "123456789012",
                "arn": f"arn:{partition(self.region)[0]}:iam::123456789012:user/ci",
                "userId": "AIDAMOCK",
                "id": "123456789012",
            }
        raise NotImplementedError(f"no mock for invoke {token}; add one to tools/harness.py StackMocks.call")


# --------------------------------------------------------------------------------------------
# Recording what the program registers
# --------------------------------------------------------------------------------------------
@dataclass
class Registration:
    """One resource the program registered: what a reviewer or a policy sees."""

    type: str
    name: str
    urn: str
    custom: bool
    inputs: dict  # camelCase, secrets still wrapped (see ``plain``/``is_secret_value``)
    state: dict
    id: str | None
    parent: str
    protect: bool
    retain_on_delete: bool
    delete_before_replace: bool
    ignore_changes: list[str]
    depends_on: list[str]
    property_dependencies: dict[str, list[str]]
    provider: str
    additional_secret_outputs: list[str]
    aliases: list[Any] = field(default_factory=list)
    # The providers map sent with the registration: what a component's children (a remote component's
    # too, built by the provider's Construct) inherit, by package name.
    providers: dict[str, str] = field(default_factory=dict)
    replace_on_changes: list[str] = field(default_factory=list)

    @property
    def plain_inputs(self) -> dict:
        return plain(self.inputs)


def is_secret_value(value: Any) -> bool:
    return rpc.is_rpc_secret(value)


def plain(value: Any) -> Any:
    """Strip the secret markers from a deserialized value, keeping the data."""
    if rpc.is_rpc_secret(value):
        return plain(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


class RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: pulumi_mocks.Mocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Registration] = []

    def RegisterResource(self, request: Any) -> Any:
        if isinstance(self.mocks, StackMocks):
            self.mocks.ignore_changes[(request.type, request.name)] = list(request.ignoreChanges)
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        inputs = rpc.deserialize_properties(request.object, keep_unknowns=True)
        registered = self.resources.get(response.urn)
        self.registrations.append(
            Registration(
                type=request.type,
                name=request.name,
                urn=response.urn,
                custom=bool(request.custom),
                inputs=inputs,
                state=registered.state if registered else {},
                id=registered.id if registered else None,
                parent=request.parent,
                protect=bool(request.protect),
                retain_on_delete=bool(request.retainOnDelete),
                delete_before_replace=bool(request.deleteBeforeReplace),
                ignore_changes=list(request.ignoreChanges),
                depends_on=list(request.dependencies),
                property_dependencies={k: list(v.urns) for k, v in request.propertyDependencies.items()},
                provider=request.provider,
                additional_secret_outputs=list(request.additionalSecretOutputs),
                aliases=list(request.aliases),
                replace_on_changes=list(request.replaceOnChanges),
                providers=dict(request.providers),
            )
        )
        return response


@dataclass
class ProgramRun:
    """The result of one mocked run: registrations and resolved stack outputs."""

    stack: str
    config: dict[str, str]
    registrations: list[Registration]
    outputs: dict[str, Any]
    secret_outputs: set[str]

    def all(self, type_: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_]

    def one(self, type_: str, name: str | None = None) -> Registration:
        matches = [r for r in self.all(type_) if name is None or r.name == name]
        if len(matches) != 1:
            names = [r.name for r in self.all(type_)]
            raise AssertionError(f"expected one {type_} named {name!r}, found {len(matches)} among {names}")
        return matches[0]

    def named(self, name: str) -> Registration:
        matches = [r for r in self.registrations if r.name == name]
        if len(matches) != 1:
            raise AssertionError(f"expected one resource named {name!r}, found {len(matches)}")
        return matches[0]

    def by_urn(self, urn: str) -> Registration:
        return next(r for r in self.registrations if r.urn == urn)

    def types(self) -> set[str]:
        return {r.type for r in self.registrations}

    def __iter__(self) -> Iterator[Registration]:
        return iter(self.registrations)


class ProgramError(Exception):
    """The program stopped (e.g. a RunError for bad configuration) before or while registering."""

    def __init__(self, error: BaseException, registrations: list[Registration]) -> None:
        super().__init__(str(error))
        self.error = error
        self.registrations = registrations


def _resolve(value: Any) -> tuple[Any, bool]:
    output = pulumi.Output.from_input(value)
    return _sync_await(output.future()), bool(_sync_await(output.is_secret()))


def run_program(
    stack: str = "dev",
    overrides: Mapping[str, Any] | None = None,
    *,
    preview: bool = False,
    mocks: StackMocks | None = None,
    stack_dir: Path | None = None,
) -> ProgramRun:
    """Run ``__main__.py`` under mocks for ``stack`` and return what it registered and exported.

    ``stack_dir`` holds the ``Pulumi.<stack>.yaml`` to use (default: the user's, in the project
    directory; tests pass ``FIXTURE_STACKS``). Raises ``ProgramError`` (carrying what was registered
    before the failure) when the program fails.
    """
    return run_function(
        lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__"),
        stack,
        overrides,
        preview=preview,
        mocks=mocks,
        stack_dir=stack_dir,
    )


def run_fixture_stack(
    stack: str = "dev",
    overrides: Mapping[str, Any] | None = None,
    *,
    preview: bool = False,
    mocks: StackMocks | None = None,
) -> ProgramRun:
    """``run_program`` with the tests' own stack file (``FIXTURE_STACKS``), not the user's."""
    return run_program(stack, overrides, preview=preview, mocks=mocks, stack_dir=FIXTURE_STACKS)


def run_function(
    program: Callable[[], Any],
    stack: str = "dev",
    overrides: Mapping[str, Any] | None = None,
    *,
    preview: bool = False,
    mocks: StackMocks | None = None,
    stack_dir: Path | None = None,
) -> ProgramRun:
    """Run any Pulumi program function (e.g. one component on its own) like ``run_program`` does."""
    config, secret_keys = stack_config(stack, overrides, stack_dir=stack_dir)
    mocks = mocks or StackMocks()
    mocks.region = config.get("aws:region") or DEFAULT_REGION
    mocks.config = config
    monitor = RecordingMonitor(mocks)
    settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor)
    pulumi.runtime.set_all_config(config, secret_keys)
    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    previous_files_dir = os.environ.get(PROVIDER_FILES_DIR_ENV)
    os.environ[PROVIDER_FILES_DIR_ENV] = str(provider_files_dir())
    try:
        _sync_await(run_pulumi_func(program))
    except Exception as error:
        raise ProgramError(error, list(monitor.registrations)) from error
    finally:
        if previous_files_dir is None:
            os.environ.pop(PROVIDER_FILES_DIR_ENV, None)
        else:
            os.environ[PROVIDER_FILES_DIR_ENV] = previous_files_dir
    root = settings.get_root_resource()
    outputs: dict[str, Any] = {}
    secret_outputs: set[str] = set()
    for key, value in getattr(root, "outputs", {}).items():
        outputs[key], is_secret = _resolve(value)
        if is_secret:
            secret_outputs.add(key)
    return ProgramRun(stack, config, list(monitor.registrations), outputs, secret_outputs)
