"""AWS policies: what the tutorial's CloudFormation got wrong must not come back.

Instances (IMDSv2, encrypted disks, no secret in user data, current-generation families), security
groups (nothing world-open but the app's NodePort, admin and cluster-internal ports only from
narrow CIDRs or groups, every rule described), least-privilege IAM, tags, and the GitLab data
volume that must outlive its instance.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, cast

from pulumi_policy import PolicyResource, Severity, StackValidationArgs
from pulumi_policy.proxy import UnknownValueError

from .common import (
    EGRESS_RULE,
    GITLAB_TOKEN,
    INGRESS_RULE,
    INGRESS_TYPES,
    KUBEADM_TOKEN,
    PRIVATE_KEY_BLOCK,
    SECURITY_GROUP,
    SECURITY_GROUP_RULE,
    IngressRule,
    PortRange,
    Subject,
    decode_user_data,
    get,
    has,
    ingress_rules,
    is_list,
    is_mapping,
    is_world,
    items,
    network,
    resource_policy,
    stack_policy,
    string_list,
    truthy,
)

INSTANCE = "aws:ec2/instance:Instance"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
AUTOSCALING_GROUP = "aws:autoscaling/group:Group"
VOLUME = "aws:ebs/volume:Volume"
VPC = "aws:ec2/vpc:Vpc"
FLOW_LOG = "aws:ec2/flowLog:FlowLog"
DEFAULT_SECURITY_GROUP = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
# What an Auto Scaling group launches from a launch template must be tagged by the template itself:
# provider default tags do not reach those resources (pulumi-aws ec2/launch_template.py).
LAUNCHED_RESOURCE_TYPES = ("instance", "volume")

# Types this product creates (or may) that accept tags; any other AWS resource given a `tags`
# property is checked too.
TAGGABLE = frozenset(
    {
        "aws:ec2/vpc:Vpc",
        "aws:ec2/subnet:Subnet",
        "aws:ec2/internetGateway:InternetGateway",
        "aws:ec2/natGateway:NatGateway",
        "aws:ec2/routeTable:RouteTable",
        "aws:ec2/networkInterface:NetworkInterface",
        "aws:ec2/vpcEndpoint:VpcEndpoint",
        SECURITY_GROUP,
        INGRESS_RULE,
        EGRESS_RULE,
        INSTANCE,
        LAUNCH_TEMPLATE,
        AUTOSCALING_GROUP,
        FLOW_LOG,
        DEFAULT_SECURITY_GROUP,
        LOG_GROUP,
        "aws:ec2/eip:Eip",
        VOLUME,
        "aws:ec2/keyPair:KeyPair",
        "aws:iam/role:Role",
        "aws:iam/instanceProfile:InstanceProfile",
        "aws:iam/policy:Policy",
        "aws:iam/user:User",
        "aws:kms/key:Key",
        # The Kubernetes API's stable endpoint (components/cluster_endpoint.py).
        "aws:route53/zone:Zone",
        "aws:lb/loadBalancer:LoadBalancer",
        "aws:lb/targetGroup:TargetGroup",
        "aws:lb/listener:Listener",
    }
)


# --------------------------------------------------------------------------------------------
# Instances
# --------------------------------------------------------------------------------------------
@resource_policy(
    name="aws-ec2-imdsv2-required",
    description="EC2 instances and launch templates require IMDSv2 (metadataOptions.httpTokens = required).",
    remediation='set metadata_options=aws.ec2.InstanceMetadataOptionsArgs(http_tokens="required", '
    "http_put_response_hop_limit=1), as components/hosts.py hardened_instance does.",
    resource_types=(INSTANCE, LAUNCH_TEMPLATE),
    severity=Severity.CRITICAL,
)
def imdsv2_required(subject: Subject) -> Iterator[str]:
    if get(subject.props, "metadataOptions", "httpEndpoint") == "disabled":
        return  # no metadata service at all
    tokens = get(subject.props, "metadataOptions", "httpTokens")
    if tokens != "required":
        yield (
            f"metadataOptions.httpTokens is {tokens!r}: IMDSv1 answers unauthenticated GETs, so any SSRF "
            "or container on the host can read the instance role's credentials."
        )


@resource_policy(
    name="aws-ec2-block-devices-encrypted",
    description="Instance root and attached EBS block devices (and launch template mappings) are encrypted.",
    remediation="set root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(encrypted=True, ...) and "
    "encrypted=True on every ebs_block_devices entry (launch templates: ebs.encrypted='true').",
    resource_types=(INSTANCE, LAUNCH_TEMPLATE),
    severity=Severity.HIGH,
)
def block_devices_encrypted(subject: Subject) -> Iterator[str]:
    props = subject.props
    if subject.resource_type == INSTANCE:
        if not has(props, "rootBlockDevice"):
            yield (
                "rootBlockDevice is not set: the root volume's encryption then depends on the account's "
                "EBS-encryption-by-default setting, which this stack does not control."
            )
        elif not truthy(get(props, "rootBlockDevice", "encrypted")):
            yield "rootBlockDevice.encrypted is not true."
        for index, device in enumerate(items(get(props, "ebsBlockDevices"))):
            if not truthy(get(device, "encrypted")):
                yield f"ebsBlockDevices[{index}] ({get(device, 'deviceName', default='?')}) is not encrypted."
    else:
        for index, mapping in enumerate(items(get(props, "blockDeviceMappings"))):
            if has(mapping, "ebs") and not truthy(get(mapping, "ebs", "encrypted")):
                yield f"blockDeviceMappings[{index}].ebs.encrypted is not true."


@resource_policy(
    name="aws-ebs-volume-encrypted",
    description="Standalone EBS volumes (the GitLab data volume) are encrypted.",
    remediation="pass encrypted=True to aws.ebs.Volume (changing it replaces the volume: snapshot first).",
    resource_types=(VOLUME,),
    severity=Severity.HIGH,
)
def ebs_volume_encrypted(subject: Subject) -> Iterator[str]:
    if not truthy(get(subject.props, "encrypted")):
        yield f"volume {subject.name} has encrypted={get(subject.props, 'encrypted')!r}."


_DEFAULT_PREVIOUS_GENERATION = [
    # The first EC2 generations, and the Xen-based (pre-Nitro) families that all have a Nitro
    # successor at the same or a lower price (t2 -> t3, m4 -> m6i, c4 -> c6i, r4 -> r6i, d2 -> d3).
    *("c1", "c3", "c4", "cc1", "cc2", "cg1", "cr1", "d2", "g2", "g3", "h1", "hi1", "hs1", "i2"),
    *("m1", "m2", "m3", "m4", "p2", "r3", "r4", "t1", "t2", "x1", "x1e"),
]


@resource_policy(
    name="aws-ec2-current-generation",
    description="Instances use a current-generation (Nitro) instance family, not t2, m4, c4, r4 or older.",
    remediation="pick the current family of the same size (t2.medium -> t3.medium, m4.large -> m6i.large) "
    "in gitlabInstanceType / controlPlaneInstanceType / workerInstanceType.",
    resource_types=(INSTANCE, LAUNCH_TEMPLATE),
    config={
        "previousGenerationFamilies": string_list(
            "Instance families (the part before the dot) that are refused.", _DEFAULT_PREVIOUS_GENERATION
        )
    },
    severity=Severity.LOW,
)
def current_generation(subject: Subject) -> Iterator[str]:
    instance_type = get(subject.props, "instanceType")
    if not isinstance(instance_type, str):
        return
    family = instance_type.split(".", 1)[0].lower()
    if family in {f.lower() for f in subject.config["previousGenerationFamilies"]}:
        yield f"instanceType {instance_type} is of the previous-generation family {family}."


# --------------------------------------------------------------------------------------------
# User data
# --------------------------------------------------------------------------------------------
# key = value / key: value where the key ends in password, passwd, passphrase, secret or token.
# The key may not follow `$` or `{` (a shell expansion such as "$token" or ${token:-}), and `==`/`=~`
# are comparisons, not assignments.
_CREDENTIAL_ASSIGNMENT = re.compile(
    r"(?<![\w${.\-])(?P<key>[A-Za-z0-9_.\-\[\]'\"]*?(?:password|passwd|passphrase|secret|token))['\"\]]*"
    r"[ \t]*(?::|=>|(?<![=!<>])=(?![=~]))[ \t]*(?P<value>[^\s#,;]+)",
    re.IGNORECASE,
)
_NOT_A_VALUE = {"", "true", "false", "yes", "no", "null", "none", "~", "''", '""'}


def _assignment_is_literal(value: str) -> bool:
    """A literal credential, not a boolean, a variable reference, a path or a template."""
    bare = value.strip().strip("'\"")
    if bare.lower() in _NOT_A_VALUE:
        return False
    return not bare.startswith(("$", "<", "/", "{", "(", "%", "!", "`"))


def user_data_findings(text: str) -> list[str]:
    """What in user data looks like a secret (pure function: the tests call it directly)."""
    findings = []
    if PRIVATE_KEY_BLOCK.search(text) or "PRIVATE KEY" in text:
        findings.append("a private key")
    if GITLAB_TOKEN.search(text):
        findings.append("a GitLab token")
    if KUBEADM_TOKEN.search(text):
        findings.append("a kubeadm bootstrap token")
    for match in _CREDENTIAL_ASSIGNMENT.finditer(text):
        if _assignment_is_literal(match.group("value")):
            findings.append(f"a credential assignment to {match.group('key').strip(chr(39) + chr(34))!r}")
            break
    return findings


@resource_policy(
    name="aws-user-data-no-secrets",
    description="EC2 user data holds no private key, token or password (anyone with "
    "ec2:DescribeInstanceAttribute, and every process on the host via IMDS, can read it).",
    remediation="send the secret over SSH on stdin in a command.remote.Command step (components/remote.py "
    "remote_step), after `cloud-init status --wait`; keep user data to public material.",
    resource_types=(INSTANCE, LAUNCH_TEMPLATE),
    severity=Severity.CRITICAL,
)
def user_data_no_secrets(subject: Subject) -> Iterator[str]:
    sources = (
        [("userData", False), ("userDataBase64", True)]
        if subject.resource_type == INSTANCE
        else [("userData", True)]  # launch templates take base64
    )
    for key, encoded in sources:
        text = get(subject.props, key)
        if isinstance(text, str) and text:
            for finding in user_data_findings(decode_user_data(text, encoded)):
                yield f"{key} contains {finding}."


# --------------------------------------------------------------------------------------------
# Security groups
# --------------------------------------------------------------------------------------------
def _rules(subject: Subject) -> Iterator[IngressRule]:
    return ingress_rules(subject.resource_type, subject.props)


def _where(subject: Subject, rule: IngressRule) -> str:
    return rule.label if subject.resource_type == SECURITY_GROUP else f"rule {subject.name}"


@resource_policy(
    name="aws-ingress-not-world-open",
    description="No security group ingress from 0.0.0.0/0 or ::/0, except to the allow-listed public ports "
    "(the app's NodePort).",
    remediation="restrict the source to adminCidrs/appCidrs or to a security group; if a port really must be "
    "public, add it to publicPorts in policy/config.<stack>.json.",
    resource_types=INGRESS_TYPES,
    config={
        "publicPorts": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 65535},
            "default": [30000],
            "description": "TCP/UDP ports that may be open to the world: the app's NodePort (appNodePort).",
        }
    },
    severity=Severity.CRITICAL,
)
def ingress_not_world_open(subject: Subject) -> Iterator[str]:
    public = {int(port) for port in subject.config["publicPorts"]}
    for rule in _rules(subject):
        world = [cidr for cidr in rule.cidrs if is_world(cidr)]
        if not world:
            continue
        single_public_port = (
            rule.protocol in ("tcp", "udp") and rule.ports.low == rule.ports.high and rule.ports.low in public
        )
        if not single_public_port:
            what = "all traffic" if rule.all_traffic else f"{rule.protocol} {rule.ports}"
            yield f"{_where(subject, rule)} opens {what} to {', '.join(world)}."


@resource_policy(
    name="aws-admin-ports-restricted",
    description="SSH (22), the Kubernetes API (6443) and GitLab's web, registry and git-over-SSH ports "
    "(80, 443, 5050, 2222) are reachable only from a security group or from a CIDR no wider than the "
    "configured prefix.",
    remediation="source the rule from the stack's adminCidrs (e.g. 203.0.113.7/32) or from the peer's "
    "security group (referenced_security_group_id), never from a wide range.",
    resource_types=INGRESS_TYPES,
    config={
        "adminPorts": string_list(
            'Ports or ranges ("2379-2380") treated as administrative.', ["22", "80", "443", "2222", "5050", "6443"]
        ),
        "minIpv4PrefixLength": {
            "type": "integer",
            "minimum": 1,
            "maximum": 32,
            "default": 16,
            "description": "Widest IPv4 source allowed on an admin port: /16 admits the VPC, refuses 0.0.0.0/0.",
        },
        "minIpv6PrefixLength": {
            "type": "integer",
            "minimum": 1,
            "maximum": 128,
            "default": 48,
            "description": "Widest IPv6 source allowed on an admin port.",
        },
    },
    severity=Severity.CRITICAL,
)
def admin_ports_restricted(subject: Subject) -> Iterator[str]:
    admin = [PortRange.parse(port) for port in subject.config["adminPorts"]]
    limits = {4: int(subject.config["minIpv4PrefixLength"]), 6: int(subject.config["minIpv6PrefixLength"])}
    for rule in _rules(subject):
        touched = [str(port) for port in admin if rule.ports.overlaps(port)]
        if not touched:
            continue
        for cidr in rule.cidrs:
            net = network(cidr)
            if net is None or net.prefixlen < limits[net.version]:
                yield (
                    f"{_where(subject, rule)} admits {cidr} to admin port(s) {', '.join(touched)}; the widest "
                    f"source allowed is /{limits[net.version] if net else limits[4]}."
                )


@resource_policy(
    name="aws-cluster-ports-from-groups",
    description="etcd (2379-2380), the kubelet API (10250) and Flannel's VXLAN (8472/udp) accept traffic only "
    "from security groups (the cluster's own), never from a CIDR.",
    remediation="use aws.vpc.SecurityGroupIngressRule(referenced_security_group_id=<cluster group id>) "
    "(a self-referencing rule on the cluster group).",
    resource_types=INGRESS_TYPES,
    config={
        "internalPorts": string_list(
            "Ports or ranges only the cluster's nodes may reach.", ["2379-2380", "10250", "8472"]
        )
    },
    severity=Severity.CRITICAL,
)
def cluster_ports_from_groups(subject: Subject) -> Iterator[str]:
    internal = [PortRange.parse(port) for port in subject.config["internalPorts"]]
    for rule in _rules(subject):
        touched = [str(port) for port in internal if rule.ports.overlaps(port)]
        if touched and (rule.cidrs or rule.from_prefix_list):
            sources = ", ".join(rule.cidrs) or "a prefix list"
            yield f"{_where(subject, rule)} admits {sources} to cluster-internal port(s) {', '.join(touched)}."


_PULUMI_DEFAULT_GROUP_DESCRIPTION = "Managed by Pulumi"


@resource_policy(
    name="aws-security-group-rules-described",
    description="Every security group and every ingress/egress rule says why it exists (a non-empty description).",
    remediation="pass description=... naming the peer and the purpose, e.g. 'Kubernetes API from adminCidrs'.",
    resource_types=(SECURITY_GROUP, SECURITY_GROUP_RULE, INGRESS_RULE, EGRESS_RULE),
    severity=Severity.LOW,
)
def security_group_rules_described(subject: Subject) -> Iterator[str]:
    props = subject.props
    description = get(props, "description")
    if subject.resource_type == SECURITY_GROUP:
        if not description or description == _PULUMI_DEFAULT_GROUP_DESCRIPTION:
            yield f"security group {subject.name} has no description of its own ({description!r})."
        for direction in ("ingress", "egress"):
            for index, rule in enumerate(items(get(props, direction))):
                if not str(get(rule, "description", default="")).strip():
                    yield f"{direction}[{index}] of {subject.name} has no description."
    elif not str(description or "").strip():
        yield f"rule {subject.name} has no description."


# --------------------------------------------------------------------------------------------
# IAM
# --------------------------------------------------------------------------------------------
_POLICY_DOCUMENT_TYPES = (
    "aws:iam/policy:Policy",
    "aws:iam/rolePolicy:RolePolicy",
    "aws:iam/userPolicy:UserPolicy",
    "aws:iam/groupPolicy:GroupPolicy",
)
_ATTACHMENT_TYPES = (
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
    "aws:iam/userPolicyAttachment:UserPolicyAttachment",
    "aws:iam/groupPolicyAttachment:GroupPolicyAttachment",
    "aws:iam/policyAttachment:PolicyAttachment",
)
ROLE = "aws:iam/role:Role"
_READ_ONLY_VERBS = ("describe", "get", "list", "head", "batchget")


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if is_list(value) else [value]


def _read_only(action: str) -> bool:
    _, _, verb = action.partition(":")
    return bool(verb) and verb.lower().startswith(_READ_ONLY_VERBS)


def policy_document_findings(document: Any, allowed_actions: set[str]) -> list[str]:
    """Over-broad Allow statements in an IAM policy document (pure function)."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError:
            return ["the policy document is not valid JSON"]
    if not is_mapping(document):
        return ["the policy document is not a JSON object"]
    findings = []
    for index, statement in enumerate(_as_list(document.get("Statement"))):
        if not is_mapping(statement) or statement.get("Effect", "Allow") != "Allow":
            continue
        where = f"Statement[{index}]" + (f" ({statement['Sid']})" if statement.get("Sid") else "")
        if "NotAction" in statement:
            findings.append(f"{where} allows NotAction: every action but the listed ones")
            continue
        actions = [str(action) for action in _as_list(statement.get("Action"))]
        if any(action in ("*", "*:*") for action in actions):
            findings.append(f"{where} allows every action ('*')")
            continue
        resources = [str(resource) for resource in _as_list(statement.get("Resource"))]
        if "NotResource" in statement or "*" in resources:
            writes = [a for a in actions if not _read_only(a) and a.lower() not in allowed_actions]
            if writes:
                findings.append(f"{where} allows {', '.join(writes)} on every resource ('*')")
    return findings


@resource_policy(
    name="aws-iam-least-privilege",
    description="No IAM statement allows every action ('*', NotAction) or a write action on every resource, "
    "and no role gets AdministratorAccess-like managed policies.",
    remediation="list the actions the host needs and scope Resource to ARNs (read-only Describe*/Get*/List* "
    "may use '*'); the hosts need only their own prefix of the backup bucket (components/backups.py).",
    resource_types=(*_POLICY_DOCUMENT_TYPES, *_ATTACHMENT_TYPES, ROLE),
    config={
        "allowedWildcardResourceActions": string_list(
            "Write actions AWS only grants on Resource '*' (e.g. ec2:CreateTags at launch), lower case.", []
        ),
        "forbiddenManagedPolicies": string_list(
            "Managed policy names (ARN suffix) no principal may be given.",
            ["AdministratorAccess", "PowerUserAccess", "IAMFullAccess"],
        ),
    },
    severity=Severity.CRITICAL,
)
def iam_least_privilege(subject: Subject) -> Iterator[str]:
    allowed = {action.lower() for action in subject.config["allowedWildcardResourceActions"]}
    forbidden = set(subject.config["forbiddenManagedPolicies"])
    props = subject.props
    documents: list[tuple[str, Any]] = []
    arns: list[str] = []
    if subject.resource_type in _POLICY_DOCUMENT_TYPES:
        documents.append(("policy", get(props, "policy")))
    elif subject.resource_type in _ATTACHMENT_TYPES:
        arns.append(str(get(props, "policyArn", default="")))
    else:
        for index, inline in enumerate(items(get(props, "inlinePolicies"))):
            if has(inline, "policy"):
                documents.append((f"inlinePolicies[{index}]", get(inline, "policy")))
        arns.extend(str(arn) for arn in items(get(props, "managedPolicyArns")))
    for label, document in documents:
        if document is None:
            continue
        for finding in policy_document_findings(document, allowed):
            yield f"{label}: {finding}."
    for arn in arns:
        name = arn.rsplit("/", 1)[-1]
        if ":iam::aws:policy/" in arn and name in forbidden:
            yield f"attaches the AWS managed policy {name}."


# --------------------------------------------------------------------------------------------
# GitLab data and tags
# --------------------------------------------------------------------------------------------
@resource_policy(
    name="aws-gitlab-data-survives-instance",
    description="The GitLab data volume is a separate, protected aws.ebs.Volume, and no instance carries data "
    "disks that are deleted on termination.",
    remediation="create the data disk as aws.ebs.Volume + aws.ec2.VolumeAttachment with "
    "ResourceOptions(protect=True) (gitlabDataVolumeProtect, default true); to tear a stack down for good "
    "run `pulumi state unprotect <urn>` first. Policies cannot see retain_on_delete, so protect is required.",
    resource_types=(VOLUME, INSTANCE),
    config={
        "dataVolumeNamePattern": {
            "type": "string",
            "default": "gitlab-data",
            "description": "Regular expression matched against a volume's logical name and Name tag.",
        }
    },
    severity=Severity.CRITICAL,
)
def gitlab_data_survives_instance(subject: Subject) -> Iterator[str]:
    if subject.resource_type == VOLUME:
        pattern = re.compile(subject.config["dataVolumeNamePattern"])
        name_tag = _tag(subject.props, "Name")
        if not (pattern.search(subject.name) or (isinstance(name_tag, str) and pattern.search(name_tag))):
            return
        if not subject.opts.protect:
            yield f"GitLab data volume {subject.name} is not protected: `pulumi destroy` or a replacement deletes it."
    else:
        for index, device in enumerate(items(get(subject.props, "ebsBlockDevices"))):
            if get(device, "deleteOnTermination") is not False:
                yield (
                    f"ebsBlockDevices[{index}] ({get(device, 'deviceName', default='?')}) is deleted when the instance "
                    "terminates (AWS default); data disks must outlive the instance."
                )


def _provider_default_tags(provider_props: Mapping[str, Any]) -> Mapping[str, Any]:
    default_tags = get(provider_props, "defaultTags")
    if isinstance(default_tags, str):  # a default provider receives its config as JSON text
        try:
            default_tags = json.loads(default_tags)
        except ValueError:
            return {}
    tags = get(default_tags, "tags") if is_mapping(default_tags) else None
    return cast(Mapping[str, Any], tags) if is_mapping(tags) else {}


def _tag(props: Any, key: str) -> Any:
    """A tag's value, reading only that tag (another may be unknown during preview). An Auto Scaling
    group's tags are a list of {key, value, propagateAtLaunch}, not a map."""
    if is_list(get(props, "tags")):
        for tag in items(get(props, "tags")):
            if get(tag, "key") == key:
                return get(tag, "value")
        return None
    value = get(props, "tags", key)
    return get(props, "tagsAll", key) if value is None else value


def _missing(props: Any, required: list[str], defaults: Mapping[str, Any]) -> list[str]:
    missing = []
    for key in required:
        value = _tag(props, key)
        if value is None:
            value = get(defaults, key)
        if not (isinstance(value, str) and value.strip()):
            missing.append(key)
    return missing


@resource_policy(
    name="aws-required-tags",
    description="Every taggable AWS resource carries the Project, Stack, ManagedBy and Name tags, and so do "
    "the instances and volumes a launch template launches.",
    remediation="tag through StackConfig.tags(name) (components/config.py), which sets all four; give launch "
    "templates tag_specifications for instance and volume with the same tags.",
    resource_types=None,
    config={
        "requiredTags": string_list(
            "Tag keys every taggable resource must carry.", ["Project", "Stack", "ManagedBy", "Name"]
        )
    },
    severity=Severity.LOW,
)
def required_tags(subject: Subject) -> Iterator[str]:
    if not subject.resource_type.startswith("aws:"):
        return
    if subject.resource_type not in TAGGABLE and not has(subject.props, "tags"):
        return
    defaults = _provider_default_tags(subject.provider_props)
    required = list(subject.config["requiredTags"])
    missing = _missing(subject.props, required, defaults)
    if missing:
        yield f"{subject.name} lacks the tag(s) {', '.join(missing)}."
    if subject.resource_type == LAUNCH_TEMPLATE:
        specifications = {get(spec, "resourceType"): spec for spec in items(get(subject.props, "tagSpecifications"))}
        for kind in LAUNCHED_RESOURCE_TYPES:
            if kind not in specifications:
                yield f"{subject.name} tags no {kind} it launches (tagSpecifications has no resourceType {kind!r})."
            elif missing := _missing(specifications[kind], required, {}):
                yield f"the {kind}s {subject.name} launches lack the tag(s) {', '.join(missing)}."


# --------------------------------------------------------------------------------------------
# The VPC itself
# --------------------------------------------------------------------------------------------
def _known_value(props: Any, *path: str) -> Any:
    try:
        return get(props, *path)
    except UnknownValueError:
        return None


def _depends_on(resource: PolicyResource, prop: str, urn: str) -> bool:
    return any(dependency.urn == urn for dependency in resource.property_dependencies.get(prop, []))


@stack_policy(
    name="aws-vpc-flow-logs-and-closed-default-group",
    description="Every VPC the stack creates records all its traffic in flow logs (to a log group that expires "
    "them, or to S3) and manages its default security group with no rule (AWS's default admits the group itself "
    "and allows all egress).",
    remediation="build the VPC with components/network.py Network: components/flow_logs.py vpc_flow_logs "
    "(traffic_type ALL, a log group with retention_in_days) and aws.ec2.DefaultSecurityGroup(vpc_id=..., "
    "ingress=[], egress=[]).",
    severity=Severity.MEDIUM,
)
def vpc_flow_logs_and_closed_default_group(
    args: StackValidationArgs, _config: Mapping[str, Any]
) -> Iterator[tuple[str, str | None]]:
    resources = list(args.resources)
    for vpc in (r for r in resources if r.resource_type == VPC):
        flow_logs = [r for r in resources if r.resource_type == FLOW_LOG and _depends_on(r, "vpcId", vpc.urn)]
        if not any(_known_value(f.props, "trafficType") in ("ALL", None) for f in flow_logs):
            yield (
                f"VPC {vpc.name} has no flow log of ALL its traffic: rejected and accepted connections go unrecorded.",
                vpc.urn,
            )
        for flow_log in flow_logs:
            if _known_value(flow_log.props, "logDestinationType") not in (None, "cloud-watch-logs"):
                continue
            for group in flow_log.property_dependencies.get("logDestination", []):
                if group.resource_type == LOG_GROUP and not _known_value(group.props, "retentionInDays"):
                    yield (
                        f"log group {group.name} of flow log {flow_log.name} keeps flow logs forever "
                        "(retentionInDays unset or 0): storage grows without end.",
                        group.urn,
                    )
        defaults = [
            r for r in resources if r.resource_type == DEFAULT_SECURITY_GROUP and _depends_on(r, "vpcId", vpc.urn)
        ]
        if not defaults:
            yield (
                f"VPC {vpc.name}'s default security group is not managed: AWS creates it admitting its own members "
                "and allowing all egress, for any instance launched without a group.",
                vpc.urn,
            )
        for group in defaults:
            rules = [direction for direction in ("ingress", "egress") if items(_known_value(group.props, direction))]
            if rules:
                yield (
                    f"default security group {group.name} of VPC {vpc.name} has {' and '.join(rules)} rules.",
                    group.urn,
                )


POLICIES = [
    imdsv2_required,
    block_devices_encrypted,
    ebs_volume_encrypted,
    current_generation,
    user_data_no_secrets,
    ingress_not_world_open,
    admin_ports_restricted,
    cluster_ports_from_groups,
    security_group_rules_described,
    iam_least_privilege,
    gitlab_data_survives_instance,
    required_tags,
]
STACK_POLICIES = [vpc_flow_logs_and_closed_default_group]
