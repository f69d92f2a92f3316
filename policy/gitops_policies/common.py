"""What every policy of the pack shares: how a policy is declared, how it reads props and config.

How the engine presents a resource to a policy (pulumi_policy 1.21, policy.py ``Analyze`` and
``AnalyzeStack``), and what that means for the checks written here:

* ``props`` are the resource's **inputs** (``Analyze``) or its **outputs** (``AnalyzeStack``), with
  camelCase names, wrapped in a proxy that raises ``UnknownValueError`` when a value that is unknown
  during preview is *read*. The SDK turns that error into an advisory "can't run policy during
  preview" diagnostic, so a check must read only the properties that decide it: an unrelated unknown
  value must not weaken a mandatory policy. ``Mapping.get``/``in`` read the value (and raise);
  ``has`` below only looks at the keys.
* Numbers arrive as floats (they travel in a protobuf ``Struct``), config numbers too.
* Secret values arrive **unwrapped**: ``deserialize_properties`` drops the secret marker unless the
  SDK is remediating (deserialize.py, ``SPECIAL_SECRET_SIG``). A policy cannot tell whether a value
  is secret (pulumi/pulumi-policy#241); the stack policies use what *is* visible instead
  (``additionalSecretOutputs``, property dependencies).
* Resource options carry ``protect`` but not ``retainOnDelete`` (``AnalyzerResourceOptions``).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyResourceOptions,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Severity,
    StackValidationArgs,
    StackValidationPolicy,
)


# --------------------------------------------------------------------------------------------
# Reading props without tripping over unknown values
# --------------------------------------------------------------------------------------------
def is_mapping(value: Any) -> bool:
    return isinstance(value, Mapping)


def is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def has(mapping: Any, key: str) -> bool:
    """Whether ``key`` is set, without reading its value (which may be unknown during preview)."""
    return is_mapping(mapping) and any(k == key for k in mapping)


def get(mapping: Any, *path: str | int, default: Any = None) -> Any:
    """The value at ``path`` (keys and list indexes), or ``default`` where it is absent.

    Reading a value that is unknown during preview raises, as the SDK intends: the caller only
    walks a path whose value decides the policy.
    """
    current = mapping
    for step in path:
        if isinstance(step, int):
            if not is_list(current) or not -len(current) <= step < len(current):
                return default
            current = current[step]
        else:
            if not has(current, step):
                return default
            current = current[step]
        if current is None:
            return default
    return current


def items(value: Any) -> list[Any]:
    """A list property as a list (absent or null: empty)."""
    return list(value) if is_list(value) else []


def size(mapping: Any, key: str) -> int:
    """How many entries a list property has, without reading them (ids may be unknown in preview)."""
    value = get(mapping, key)
    return len(value) if is_list(value) else 0


def number(value: Any) -> int | None:
    """A port or count as an int (the engine sends floats); None when absent or not a number."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def truthy(value: Any) -> bool:
    """A boolean property; the AWS provider types some booleans as strings ("true")."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True


def decode_user_data(text: str, base64_encoded: bool) -> str:
    """User data as the instance sees it: base64 (and gzip, which cloud-init accepts) undone."""
    data = text.encode()
    if base64_encoded:
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return text
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except OSError:
            return data.decode("utf-8", "replace")
    return data.decode("utf-8", "replace")


# --------------------------------------------------------------------------------------------
# Credential material, as it looks in text
# --------------------------------------------------------------------------------------------
PRIVATE_KEY_BLOCK = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
# GitLab token prefixes: personal/project/group access (glpat-), runner authentication (glrt-),
# deploy (gldt-), pipeline trigger (glptt-), feed, incoming mail, agent, OAuth, SCIM, CI job and
# feature-flag client tokens; GR1348941 starts a legacy runner registration token.
GITLAB_TOKEN = re.compile(r"\b(?:gl(?:pat|rt|dt|ptt|ft|imt|agent|oas|soat|cbt|ffct)-|GR1348941)[0-9A-Za-z_.\-]{20,}")
# kubeadm bootstrap token: [a-z0-9]{6}.[a-z0-9]{16} (kubeadm v1beta4 reference, bootstrapTokens).
KUBEADM_TOKEN = re.compile(r"(?<![0-9a-z.\-])[a-z0-9]{6}\.[a-z0-9]{16}(?![0-9a-z.\-])")


# --------------------------------------------------------------------------------------------
# Network rules, normalised across the three ways AWS security groups take ingress
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PortRange:
    low: int
    high: int

    @classmethod
    def parse(cls, text: str | int | float) -> PortRange:
        """``22``, ``"22"`` or ``"2379-2380"``."""
        low, _, high = str(text).partition("-")
        first = int(float(low))
        return cls(first, int(float(high)) if high else first)

    def overlaps(self, other: PortRange) -> bool:
        return self.low <= other.high and other.low <= self.high

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


ALL_PORTS = PortRange(0, 65535)


@dataclass(frozen=True)
class IngressRule:
    """One ingress permission: which ports, from which CIDRs or whether from a group/prefix list."""

    label: str  # where it is, for messages ("ingress[0]" or "the rule")
    protocol: str  # "tcp", "udp", "icmp", "-1" (all) ...
    ports: PortRange
    cidrs: tuple[str, ...]
    from_group: bool  # a security group (referenced, source or self) is the source
    from_prefix_list: bool

    @property
    def all_traffic(self) -> bool:
        return self.protocol in ("-1", "all")


_PROTOCOL_NUMBERS = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6"}


def _protocol(value: Any) -> str:
    text = str(value if value is not None else "-1").strip().lower()
    return _PROTOCOL_NUMBERS.get(text, text)


def _ports(protocol: str, from_port: Any, to_port: Any) -> PortRange:
    if protocol in ("-1", "all"):
        return ALL_PORTS
    low, high = number(from_port), number(to_port)
    if protocol not in ("tcp", "udp"):
        return ALL_PORTS if low is None else PortRange(low, high if high is not None else low)
    if low is None and high is None:
        return ALL_PORTS
    low = 0 if low is None or low < 0 else low
    high = 65535 if high is None or high < 0 else high
    return PortRange(low, high)


SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS_RULE = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
INGRESS_TYPES = (INGRESS_RULE, SECURITY_GROUP_RULE, SECURITY_GROUP)


def ingress_rules(resource_type: str, props: Mapping[str, Any]) -> Iterator[IngressRule]:
    """Every ingress permission a resource grants, whatever the resource type that grants it."""
    if resource_type == INGRESS_RULE:
        protocol = _protocol(get(props, "ipProtocol"))
        cidrs = tuple(c for c in (get(props, "cidrIpv4"), get(props, "cidrIpv6")) if c)
        yield IngressRule(
            "the rule",
            protocol,
            _ports(protocol, get(props, "fromPort"), get(props, "toPort")),
            cidrs,
            from_group=has(props, "referencedSecurityGroupId"),
            from_prefix_list=has(props, "prefixListId"),
        )
    elif resource_type == SECURITY_GROUP_RULE:
        if get(props, "type") != "ingress":
            return
        yield _inline_rule("the rule", props, source_key="sourceSecurityGroupId")
    elif resource_type == SECURITY_GROUP:
        for index, rule in enumerate(items(get(props, "ingress"))):
            yield _inline_rule(f"ingress[{index}]", rule, source_key="securityGroups")


def _inline_rule(label: str, rule: Mapping[str, Any], source_key: str) -> IngressRule:
    protocol = _protocol(get(rule, "protocol"))
    cidrs = tuple(items(get(rule, "cidrBlocks"))) + tuple(items(get(rule, "ipv6CidrBlocks")))
    if source_key == "securityGroups":
        from_group = size(rule, source_key) > 0
    else:
        from_group = has(rule, source_key)
    from_group = from_group or truthy(get(rule, "self"))
    return IngressRule(
        label,
        protocol,
        _ports(protocol, get(rule, "fromPort"), get(rule, "toPort")),
        tuple(str(c) for c in cidrs),
        from_group=from_group,
        from_prefix_list=size(rule, "prefixListIds") > 0,
    )


def network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None


def is_world(cidr: str) -> bool:
    net = network(cidr)
    return net is not None and net.prefixlen == 0


# --------------------------------------------------------------------------------------------
# Kubernetes objects: typed resources and manifests committed to GitLab for Flux to apply
# --------------------------------------------------------------------------------------------
K8S_WORKLOADS = {
    "kubernetes:core/v1:Pod": ("spec",),
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template", "spec"),
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
_POD_SPEC_BY_KIND = {token.rsplit(":", 1)[1]: path for token, path in K8S_WORKLOADS.items()}
REPOSITORY_FILE = "gitlab:index/repositoryFile:RepositoryFile"
# Where a repository keeps the manifests Flux or a deploy job applies (the product uses kubernetes/,
# the path of its Flux Kustomization); other files (.gitlab-ci.yml, package.json) are not read.
_MANIFEST_PATH = re.compile(r"(^|/)(kubernetes|k8s|manifests|deploy)/([^/]+/)*[^/]+\.(ya?ml|json|tpl)$")


@dataclass(frozen=True)
class KubeObject:
    """A Kubernetes object a resource creates, directly or through a manifest file in Git."""

    kind: str
    body: Mapping[str, Any]
    where: str  # "" for a typed resource, 'file kubernetes/deployment.yml' for a manifest

    @property
    def name(self) -> str:
        return str(get(self.body, "metadata", "name", default="") or "")

    @property
    def namespace(self) -> str:
        return str(get(self.body, "metadata", "namespace", default="") or "default")

    @property
    def label(self) -> str:
        text = f"{self.kind} {self.namespace}/{self.name}" if self.name else self.kind
        return f"{text} ({self.where})" if self.where else text

    def pod_spec(self) -> Mapping[str, Any] | None:
        path = _POD_SPEC_BY_KIND.get(self.kind)
        if path is None:
            return None
        spec = get(self.body, *path)
        return spec if is_mapping(spec) else None


def kube_objects(resource_type: str, props: Mapping[str, Any]) -> Iterator[KubeObject]:
    """The Kubernetes objects behind a resource.

    A ``kubernetes:<group>/<version>:<Kind>`` resource is one object. A GitLab repository file whose
    path looks like a manifest may hold several (Flux applies them from Git, out of the engine's
    sight, so the pack reads them where the program writes them).
    """
    if resource_type.startswith("kubernetes:") and not resource_type.startswith("kubernetes:yaml"):
        yield KubeObject(resource_type.rsplit(":", 1)[1], props, "")
    elif resource_type == REPOSITORY_FILE:
        path = str(get(props, "filePath", default=""))
        if not _MANIFEST_PATH.search(path):
            return
        text = get(props, "content", default="")
        if not isinstance(text, str):
            return
        if get(props, "encoding", default="text") == "base64":
            try:
                text = base64.b64decode(text).decode("utf-8")
            except (binascii.Error, ValueError):
                return
        yield from _manifest_objects(text, f"file {path}")


def _manifest_objects(text: str, where: str) -> Iterator[KubeObject]:
    import yaml  # imported here: only manifests need it

    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        return
    for document in documents:
        if is_mapping(document) and isinstance(document.get("kind"), str) and "apiVersion" in document:
            if document["kind"] == "List":
                for item in items(document.get("items")):
                    if is_mapping(item) and isinstance(item.get("kind"), str):
                        yield KubeObject(item["kind"], item, where)
            else:
                yield KubeObject(document["kind"], document, where)


def containers(pod_spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(label, container) for every container, init container and ephemeral container."""
    for field in ("containers", "initContainers", "ephemeralContainers"):
        for container in items(get(pod_spec, field)):
            if is_mapping(container):
                yield f"{field[:-1]} {get(container, 'name', default='?')!s}", container


# --------------------------------------------------------------------------------------------
# Declaring a policy
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Subject:
    """What a resource check sees: the resource, its options, and the policy's effective config."""

    resource_type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    opts: PolicyResourceOptions
    provider_props: Mapping[str, Any]
    config: Mapping[str, Any]


Check = Callable[[Subject], Iterable[str]]
StackCheck = Callable[[StackValidationArgs, Mapping[str, Any]], Iterable[tuple[str, str | None]]]


def effective_config(schema: Mapping[str, Mapping[str, Any]], given: Mapping[str, Any] | None) -> dict[str, Any]:
    """Schema defaults overlaid with the configuration the engine passed.

    The engine already fills in schema defaults (ReconcilePolicyPackConfig); doing it here too keeps
    a check correct when it is called without any config, e.g. by a future engine or a test.
    """
    config = {key: spec["default"] for key, spec in schema.items() if "default" in spec}
    config.update(dict(given or {}))
    return config


def _message(problem: str, remediation: str) -> str:
    return f"{problem}\nRemediation: {remediation}"


def resource_policy(
    *,
    name: str,
    description: str,
    remediation: str,
    resource_types: Iterable[str] | None,
    config: Mapping[str, dict[str, Any]] | None = None,
    severity: Severity = Severity.HIGH,
) -> Callable[[Check], ResourceValidationPolicy]:
    """Turn ``check(subject) -> problems`` into a mandatory ResourceValidationPolicy.

    ``resource_types`` limits the check to those type tokens (None: every resource). Each problem is
    reported with the remediation hint appended; the SDK prefixes the policy description.
    """
    types = frozenset(resource_types) if resource_types is not None else None
    schema = dict(config or {})

    def decorate(check: Check) -> ResourceValidationPolicy:
        def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
            if types is not None and args.resource_type not in types:
                return
            subject = Subject(
                resource_type=args.resource_type,
                name=args.name,
                urn=args.urn,
                props=args.props,
                opts=args.opts,
                provider_props=args.provider.props if args.provider is not None else {},
                config=effective_config(schema, args.get_config()),
            )
            for problem in check(subject):
                report_violation(_message(problem, remediation), None)

        return ResourceValidationPolicy(
            name=name,
            description=description,
            validate=validate,
            enforcement_level=EnforcementLevel.MANDATORY,
            config_schema=PolicyConfigSchema(properties=schema) if schema else None,
            severity=severity,
            remediation_steps=remediation,
        )

    return decorate


def stack_policy(
    *,
    name: str,
    description: str,
    remediation: str,
    config: Mapping[str, dict[str, Any]] | None = None,
    severity: Severity = Severity.HIGH,
) -> Callable[[StackCheck], StackValidationPolicy]:
    """Turn ``check(args, config) -> (problem, urn)`` pairs into a mandatory StackValidationPolicy.

    Stack policies run on the resources' outputs after the deployment (during ``pulumi up``) or on
    the planned state (during ``pulumi preview``): run a preview first for them to stop a change.
    """
    schema = dict(config or {})

    def decorate(check: StackCheck) -> StackValidationPolicy:
        def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
            for problem, urn in check(args, effective_config(schema, args.get_config())):
                report_violation(_message(problem, remediation), urn)

        return StackValidationPolicy(
            name=name,
            description=description,
            validate=validate,
            enforcement_level=EnforcementLevel.MANDATORY,
            config_schema=PolicyConfigSchema(properties=schema) if schema else None,
            severity=severity,
            remediation_steps=remediation,
        )

    return decorate


def string_list(description: str, default: list[str]) -> dict[str, Any]:
    """A config property: a list of strings with a default."""
    return {"type": "array", "items": {"type": "string"}, "default": default, "description": description}
