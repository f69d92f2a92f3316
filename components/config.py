"""The stack's configuration: one typed, frozen object, validated before any resource exists.

Every key the program reads is declared in ``KEYS`` (name, type, default, description). The same
table is declared in ``Pulumi.yaml`` and documented in the README; tests keep the three in sync.
``parse_config`` is a pure function over raw strings (what ``pulumi.Config.get`` returns), so every
rule is tested without the Pulumi engine; ``load_config`` feeds it from ``pulumi.Config`` and turns
the collected problems into a single ``pulumi.RunError`` (a clean message, no traceback).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import pulumi

from components import versions

# Kubernetes minors still patched upstream (kubernetes.io/releases: 1.34 reached end of life on
# 2026-10-27) and inside the default Flux release's support range (Flux v2.10: 1.35-1.37). A minor
# outside this list is rejected rather than deployed half-working.
SUPPORTED_KUBERNETES_MINORS = versions.SUPPORTED_KUBERNETES_MINORS
MAX_WORKERS = 20
# Control-plane nodes, each with a stacked etcd member (components/cluster.py). etcd commits a write
# once a majority of its members hold it: 3 members keep working with one lost, 2 need both (no
# better than 1, with twice the chance of an outage), and 5 would need more zones than a stack has.
CONTROL_PLANE_COUNTS = (1, 3)
NODE_PORT_RANGE = (30000, 32767)  # kube-apiserver default --service-node-port-range
RESERVED_TAG_KEYS = ("Project", "Stack", "ManagedBy", "Name")
DELIVERY_MODES = ("pull", "push")
# How GitLab reaches the cluster: its agent for Kubernetes (agentk in the cluster, KAS in GitLab), or
# the tutorial's deprecated certificate-based cluster (components/gitlab_integration.py).
CLUSTER_INTEGRATIONS = ("agent", "certificate")
# The private project whose members may use the agent through GitLab (kubernetesDashboard).
OPERATORS_PROJECT = "cluster-operators"
# The cluster's own address ranges (components/kubeadm.py: Flannel's pod network, kubeadm's
# default service range): the VPC must not overlap them.
CLUSTER_RANGES = {"pod network": "10.244.0.0/16", "service network": "10.96.0.0/12"}
VISIBILITIES = ("public", "internal", "private")
# The autoscaled CI fleet (components/runners.py): bounds a typo cannot exceed by accident.
MAX_RUNNER_INSTANCES = 20
MAX_RUNNER_CAPACITY = 8
MAX_RUNNER_IDLE_SECONDS = 24 * 3600
# The values CloudWatch Logs accepts for a log group's retention (PutRetentionPolicy, retentionInDays).
LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)
# Keys a newer program replaced: named with what to do instead of the generic "unknown key".
RETIRED_KEYS = {
    "gitlabRunnerImageTag": "replaced by gitlabRunnerVersion (X.Y.Z, e.g. "
    f"{versions.GITLAB_RUNNER_VERSION}): the runner now runs on its own manager instance from GitLab's apt "
    "repository, not as a container on the GitLab host. Run `pulumi config rm gitlabRunnerImageTag` and, to pin "
    "another release than the default, `pulumi config set gitlabRunnerVersion <X.Y.Z>`",
}


@dataclass(frozen=True)
class Key:
    """One configuration key: its Pulumi.yaml type, default (None = required/optional) and meaning."""

    name: str
    type: Literal["string", "integer", "boolean", "array"]
    default: str | int | bool | list[str] | None
    description: str


KEYS: tuple[Key, ...] = (
    Key(
        "adminCidrs",
        "array",
        None,
        "Required. IPv4 CIDRs allowed to reach SSH, the Kubernetes API (6443) and GitLab's web UI, "
        'API, registry and git-over-SSH. Example: ["203.0.113.7/32"].',
    ),
    Key("appCidrs", "array", ["0.0.0.0/0"], "IPv4 CIDRs allowed to reach the app's NodePort on the workers."),
    Key("vpcCidr", "string", "10.42.0.0/16", "IPv4 CIDR of the dedicated VPC (a /16 to /24 private range)."),
    Key("availabilityZoneCount", "integer", 2, "How many availability zones get a public subnet (1-3)."),
    Key(
        "flowLogRetentionDays",
        "integer",
        365,
        "Days the VPC flow logs are kept in CloudWatch Logs (one of " + ", ".join(map(str, LOG_RETENTION_DAYS)) + ").",
    ),
    Key("gitlabInstanceType", "string", "t3.large", "EC2 instance type of the GitLab host (GitLab needs ~8 GB)."),
    Key("controlPlaneInstanceType", "string", "t3.medium", "EC2 instance type of the Kubernetes control plane."),
    Key("workerInstanceType", "string", "t3.medium", "EC2 instance type of each Kubernetes worker."),
    Key("rootVolumeSizeGb", "integer", 30, "Size in GiB of every instance's encrypted gp3 root volume (20-1000)."),
    Key(
        "gitlabDataVolumeSizeGb",
        "integer",
        50,
        "Size in GiB of the GitLab data volume (/srv/gitlab: config, repositories, registry) (20-16384).",
    ),
    Key(
        "gitlabDataVolumeProtect",
        "boolean",
        True,
        "Protect the GitLab data volume from deletion by Pulumi (set false only to tear a stack down for good).",
    ),
    Key(
        "controlPlaneCount",
        "integer",
        1,
        "Kubernetes control-plane nodes, each with an etcd member: 1, or 3 for a highly available control plane "
        "behind an internal load balancer (README: Highly available control plane). 1 to 3 is a `pulumi up`; "
        "3 to 1 is refused.",
    ),
    Key(
        "backups",
        "boolean",
        True,
        "Back up GitLab (daily gitlab-backup and its secrets to S3, daily EBS snapshots of its data volume) and "
        'etcd (snapshots to S3) into this stack\'s bucket (README "Backups and restore"). The policy pack flags '
        "false in prod.",
    ),
    Key(
        "backupHourUtc",
        "integer",
        3,
        "UTC hour (0-23) of the daily GitLab backup; the data volume's snapshot follows 2 h later.",
    ),
    Key("gitlabBackupRetentionDays", "integer", 30, "Days each daily GitLab backup is kept in S3 (1-3650)."),
    Key(
        "gitlabSnapshotRetentionDays",
        "integer",
        7,
        "Days each daily EBS snapshot of the GitLab data volume is kept (1-365).",
    ),
    Key(
        "etcdSnapshotIntervalMinutes",
        "integer",
        60,
        "Minutes between etcd snapshots on each control-plane node (15-1440).",
    ),
    Key("etcdSnapshotRetentionDays", "integer", 7, "Days each frequent etcd snapshot is kept in S3 (1-3650)."),
    Key(
        "etcdDailyRetentionDays", "integer", 90, "Days the first etcd snapshot of each UTC day is kept in S3 (1-3650)."
    ),
    Key(
        "preUpgradeBackupRetentionDays",
        "integer",
        90,
        "Days the backups taken before a GitLab or Kubernetes upgrade are kept in S3 (1-3650).",
    ),
    Key(
        "backupNoncurrentRetentionDays",
        "integer",
        7,
        "Days an expired or overwritten backup stays recoverable as a noncurrent S3 version (1-365).",
    ),
    Key("workerCount", "integer", 2, f"Number of Kubernetes workers (1-{MAX_WORKERS})."),
    Key(
        "kubernetesVersion",
        "string",
        versions.KUBERNETES_MINOR,
        f"Kubernetes minor installed from pkgs.k8s.io (one of {', '.join(SUPPORTED_KUBERNETES_MINORS)}).",
    ),
    Key(
        "kubernetesPatch",
        "string",
        "",
        "Exact Kubernetes patch to run, e.g. 1.36.7 (a patch of kubernetesVersion). Empty: the newest patch "
        "of kubernetesVersion when the cluster is created or moved to that minor; nothing upgrades by itself.",
    ),
    Key(
        "flannelVersion",
        "string",
        versions.FLANNEL_VERSION,
        "Flannel CNI release whose kube-flannel.yml is applied (vX.Y.Z).",
    ),
    Key(
        "gitlabImageTag",
        "string",
        versions.GITLAB_CE_TAG,
        "Pinned gitlab/gitlab-ce image tag: 18.11.x or 19.x. "
        "Changing it upgrades GitLab in place, one required upgrade stop at a time (README).",
    ),
    Key(
        "gitlabRunnerVersion",
        "string",
        versions.GITLAB_RUNNER_VERSION,
        "Pinned GitLab Runner release (X.Y.Z) installed on the runner manager from GitLab's apt repository; "
        "keep its major.minor with GitLab's.",
    ),
    Key(
        "runnerManagerInstanceType",
        "string",
        "t3.small",
        "EC2 instance type of the runner manager (runs gitlab-runner only; jobs run on the job VMs).",
    ),
    Key(
        "runnerInstanceType",
        "string",
        "t3.medium",
        "EC2 instance type of each autoscaled CI job VM; x86_64 (Graviton types such as t4g are refused).",
    ),
    Key(
        "runnerMaxInstances",
        "integer",
        2,
        f"Most CI job VMs running at once (1-{MAX_RUNNER_INSTANCES}); with no job there are none.",
    ),
    Key(
        "runnerCapacityPerInstance",
        "integer",
        1,
        f"Jobs one job VM runs at once (1-{MAX_RUNNER_CAPACITY}). 1: every job gets a fresh VM of its own; "
        "more shares a VM (and its privileged Docker-in-Docker) between concurrent jobs.",
    ),
    Key(
        "runnerIdleCount",
        "integer",
        0,
        "Job slots kept booted and waiting for jobs (0 to runnerMaxInstances x runnerCapacityPerInstance). "
        "0: no VM when no job runs.",
    ),
    Key(
        "runnerIdleTime",
        "string",
        "10m",
        "How long a job VM with a free job slot and no job waits before it is removed (unless runnerIdleCount "
        "keeps it), as a duration such as 10m, 1h or 1h30m (0s to 24h).",
    ),
    Key(
        "gitlabHostname",
        "string",
        "",
        "GitLab's DNS name. Empty: the Elastic IP's public DNS name (ec2-….compute-1.amazonaws.com in "
        "us-east-1, ec2-….<region>.compute.amazonaws.com elsewhere).",
    ),
    Key("gitlabAdminUsername", "string", "operator", "Non-root GitLab administrator created for daily work."),
    Key("gitlabAdminEmail", "string", "operator@example.com", "E-mail address of that administrator."),
    Key(
        "adminTokenRotation",
        "string",
        "1",
        "Keeper of the seeded GitLab admin token: change it (e.g. to a date) to mint and seed a new token.",
    ),
    Key(
        "operatorSshPublicKey",
        "string",
        "",
        "Optional OpenSSH public key of the operator: kept in the login user's authorized_keys on every "
        "host (a change is applied over SSH, no reboot) and added to GitLab's daily admin user for git over "
        "SSH. The EC2 key pair stays Pulumi's own.",
    ),
    Key("amiId", "string", "", "Optional AMI id for every instance. Empty: newest official Debian 12 amd64 AMI."),
    Key(
        "fluxVersion",
        "string",
        versions.FLUX_VERSION,
        "Pinned Flux v2 release whose install.yaml is applied (vX.Y.Z).",
    ),
    Key("delivery", "string", "pull", "How the app reaches the cluster: pull (Flux) or push (a deploy stage)."),
    Key(
        "clusterIntegration",
        "string",
        "agent",
        "How GitLab reaches the cluster: agent (GitLab agent for Kubernetes) or certificate (the tutorial's "
        "deprecated certificate-based cluster, GitLab below 20.0 only). README: switching.",
    ),
    Key(
        "kubernetesDashboard",
        "boolean",
        False,
        "GitLab's dashboard for Kubernetes (and its Kubernetes API proxy) for the members of a private "
        f"project {OPERATORS_PROJECT}, who then act as cluster-admin; instance admins too. Agent mode only. "
        "README: security model.",
    ),
    Key("projectName", "string", "shark-application", "GitLab project path of the sample app."),
    Key("projectVisibility", "string", "public", "GitLab visibility of the app project: public, internal or private."),
    Key("appName", "string", "shark-app", "Kubernetes name of the app's Deployment and Service."),
    Key("appNodePort", "integer", 30000, "NodePort the app is served on, on every worker (30000-32767)."),
    Key("defaultBranch", "string", "main", "Default branch of the app project; pipelines and Flux follow it."),
    Key("extraTags", "array", [], 'Extra AWS tags as "Key=Value" strings, added to every taggable resource.'),
)

_KEYS_BY_NAME = {key.name: key for key in KEYS}

_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_AMI_ID = re.compile(r"^ami-[0-9a-f]{8}([0-9a-f]{9})?$")
# AWS Graviton (arm64) families by name: a1, and a generation digit followed by the processor letter g
# (t4g, m6g, c7gn, x2gd, im4gn, is4gen, g5g, r8g, hpc7g: aws/aws-graviton-getting-started's list).
# Every host boots Debian's amd64 image (components/hosts.py), and an Auto Scaling group would fail
# such launches in its activity history only, with `pulumi up` green (components/runners.py checks
# DescribeInstanceTypes too, for what the name does not tell, such as mac2).
_ARM64_FAMILY = re.compile(r"^(a1|[a-z]+\d+g[a-z]*)\.")
# gitlab/gitlab-ce tags are <major>.<minor>.<patch>-ce.<build> (hub.docker.com/r/gitlab/gitlab-ce).
_GITLAB_TAG = re.compile(r"^(\d+)\.(\d+)\.(\d+)-ce\.\d+$")
_RUNNER_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
# A Go time.Duration as GitLab Runner parses idle_time: hours, minutes and seconds, e.g. 1h30m.
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_SEMVER_TAG = re.compile(r"^v\d+\.\d+\.\d+$")
# GitLab project paths: letters, digits, '_', '-', '.'; must start and end with a letter or digit.
_PROJECT_PATH = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,253}[A-Za-z0-9])?$")
# Kubernetes object names (RFC 1123 label, Service names must be DNS-1035: start with a letter).
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,254}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SSH_PUBLIC_KEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,3}( .*)?$")
# git check-ref-format, simplified to what a default branch needs.
_BRANCH = re.compile(r"^(?!/|.*(?:/\.|//|\.\.|@\{|\.lock$|/$))[A-Za-z0-9._/-]+$")


@dataclass(frozen=True)
class StackConfig:
    """Validated configuration of one stack. Field meanings: see ``KEYS``."""

    project: str
    stack: str
    admin_cidrs: tuple[str, ...]
    app_cidrs: tuple[str, ...]
    vpc_cidr: str
    availability_zone_count: int
    gitlab_instance_type: str
    control_plane_instance_type: str
    worker_instance_type: str
    root_volume_size_gb: int
    gitlab_data_volume_size_gb: int
    gitlab_data_volume_protect: bool
    control_plane_count: int
    backups: bool
    backup_hour_utc: int
    gitlab_backup_retention_days: int
    gitlab_snapshot_retention_days: int
    etcd_snapshot_interval_minutes: int
    etcd_snapshot_retention_days: int
    etcd_daily_retention_days: int
    pre_upgrade_backup_retention_days: int
    backup_noncurrent_retention_days: int
    worker_count: int
    kubernetes_version: str
    kubernetes_patch: str | None
    flannel_version: str
    gitlab_image_tag: str
    gitlab_runner_version: str
    runner_manager_instance_type: str
    runner_instance_type: str
    runner_max_instances: int
    runner_capacity_per_instance: int
    runner_idle_count: int
    runner_idle_time: str
    flow_log_retention_days: int
    gitlab_hostname: str | None
    gitlab_admin_username: str
    gitlab_admin_email: str
    admin_token_rotation: str
    operator_ssh_public_key: str | None
    ami_id: str | None
    flux_version: str
    delivery: Literal["pull", "push"]
    cluster_integration: Literal["agent", "certificate"]
    kubernetes_dashboard: bool
    project_name: str
    project_visibility: Literal["public", "internal", "private"]
    app_name: str
    app_node_port: int
    default_branch: str
    extra_tags: tuple[tuple[str, str], ...]

    @property
    def common_tags(self) -> dict[str, str]:
        """Tags every taggable resource carries (``Name`` is added per resource)."""
        tags = dict(self.extra_tags)
        tags.update({"Project": self.project, "Stack": self.stack, "ManagedBy": "pulumi"})
        return tags

    def tags(self, name: str) -> dict[str, str]:
        """Common tags plus ``Name``: the one helper every component tags through."""
        return {**self.common_tags, "Name": name}


class ConfigError(Exception):
    """Every problem found in a stack's configuration, reported together."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid stack configuration:\n" + "\n".join(f"  - {problem}" for problem in problems))


class _Reader:
    """Reads raw string values, converting and collecting problems instead of raising at the first."""

    def __init__(self, raw: Mapping[str, str | None]) -> None:
        self._raw = raw
        self.problems: list[str] = []

    def _value(self, name: str) -> str | None:
        value = self._raw.get(name)
        if value is None:
            default = _KEYS_BY_NAME[name].default
            if default is None:
                return None
            return json.dumps(default) if isinstance(default, (list, bool)) else str(default)
        return value

    def fail(self, name: str, value: object, accepted: str) -> None:
        self.problems.append(f"{name}: got {value!r}; expected {accepted}")

    def string(self, name: str) -> str:
        return self._value(name) or ""

    def integer(self, name: str, low: int, high: int) -> int:
        text = self._value(name) or ""
        try:
            number = int(text.strip())
        except ValueError:
            self.fail(name, text, f"an integer from {low} to {high}")
            return low
        if not low <= number <= high:
            self.fail(name, number, f"an integer from {low} to {high}")
        return number

    def boolean(self, name: str) -> bool:
        text = (self._value(name) or "").strip().lower()
        if text not in ("true", "false"):
            self.fail(name, text, "true or false")
        return text == "true"

    def string_list(self, name: str, example: str) -> list[str] | None:
        """A JSON array of strings, as `pulumi config set --path 'key[0]' value` stores it."""
        text = self._value(name)
        if text is None:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.fail(
                name,
                value,
                f"a list of strings; set it with `pulumi config set --path '{name}[0]' {example}`",
            )
            return []
        return value

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self.string(name)
        if value not in choices:
            self.fail(name, value, "one of " + ", ".join(choices))
        return value

    def matching(self, name: str, pattern: re.Pattern[str], accepted: str) -> str:
        value = self.string(name)
        if not pattern.match(value):
            self.fail(name, value, accepted)
        return value

    def optional_matching(self, name: str, pattern: re.Pattern[str], accepted: str) -> str | None:
        value = self.string(name).strip()
        if not value:
            return None
        if not pattern.match(value):
            self.fail(name, value, accepted)
        return value


def _x86_64_instance_type(reader: _Reader, name: str, accepted: str) -> str:
    value = reader.matching(name, _INSTANCE_TYPE, accepted)
    if _ARM64_FAMILY.match(value):
        reader.fail(
            name,
            value,
            "an x86_64 instance type such as t3.medium or c6i.large: job VMs boot Debian's amd64 image, "
            "and Graviton (arm64) families such as t4g or m7g cannot run it",
        )
    return value


def _cidrs(reader: _Reader, name: str, values: list[str] | None) -> tuple[str, ...]:
    accepted = "IPv4 CIDRs in network/prefix form such as 203.0.113.7/32"
    if values is None:
        reader.problems.append(
            f"{name}: missing; set the CIDRs allowed to reach SSH, the Kubernetes API and GitLab, e.g. "
            f"`pulumi config set --path '{name}[0]' $(curl -s https://checkip.amazonaws.com)/32`"
        )
        return ()
    if not values:
        reader.fail(name, values, f"at least one entry: {accepted}")
    cidrs = []
    for value in values:
        try:
            if "/" not in value:  # a bare address is almost always a forgotten /32: make it explicit
                raise ValueError(value)
            network = ipaddress.ip_network(value, strict=True)
        except ValueError:
            reader.fail(name, value, accepted + " (host bits zero, e.g. 10.0.0.0/8, not 10.0.0.1/8)")
            continue
        if network.version != 4:
            reader.fail(name, value, accepted + " (IPv6 is not supported: the VPC is IPv4-only)")
            continue
        cidrs.append(str(network))
    return tuple(cidrs)


def _control_plane_count(reader: _Reader) -> int:
    """1 or 3: an etcd of N members needs N // 2 + 1 of them to accept a write."""
    text = (reader.string("controlPlaneCount") or "").strip()
    accepted = "1 or 3"
    try:
        count = int(text)
    except ValueError:
        reader.fail("controlPlaneCount", text, accepted)
        return 1
    if count in CONTROL_PLANE_COUNTS:
        return count
    if count < 1:
        reason = "a cluster needs at least one control-plane node (its API server and etcd)"
    elif count % 2 == 0:
        quorum = count // 2 + 1
        reason = (
            f"etcd needs a majority of its members to accept a write ({quorum} of {count}), so {count} "
            f"control-plane nodes survive the loss of no more than {count - quorum} of them, like {count - 1}, "
            "with more nodes that can fail"
        )
    else:
        reason = "more than 3 etcd members need more availability zones than a stack has (availabilityZoneCount <= 3)"
    reader.fail("controlPlaneCount", count, f"{accepted}: {reason}")
    return count


def _vpc_cidr(reader: _Reader) -> str:
    value = reader.string("vpcCidr")
    accepted = "a private IPv4 CIDR from /16 to /24 such as 10.42.0.0/16"
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError:
        reader.fail("vpcCidr", value, accepted)
        return value
    if network.version != 4 or not network.is_private or not 16 <= network.prefixlen <= 24:
        reader.fail("vpcCidr", value, accepted)
    for name, cluster_range in CLUSTER_RANGES.items():
        if network.version == 4 and network.overlaps(ipaddress.ip_network(cluster_range)):
            # Node addresses inside the pod or service range break routing on every node.
            reader.fail("vpcCidr", value, f"{accepted} that does not overlap the cluster's {name} {cluster_range}")
    return value


def _kubernetes_minor(reader: _Reader) -> str:
    value = reader.string("kubernetesVersion").strip()
    minor = value.removeprefix("v")
    if minor not in SUPPORTED_KUBERNETES_MINORS:
        reader.fail(
            "kubernetesVersion",
            value,
            "a supported Kubernetes minor without patch, one of " + ", ".join(SUPPORTED_KUBERNETES_MINORS),
        )
    return minor


def gitlab_version(tag: str) -> tuple[int, int, int]:
    """(major, minor, patch) of a gitlab/gitlab-ce tag such as 19.4.1-ce.0."""
    match = _GITLAB_TAG.match(tag)
    if not match:
        raise ValueError(f"{tag!r} is not a gitlab/gitlab-ce tag such as {versions.GITLAB_CE_TAG}")
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def _gitlab_image_tag(reader: _Reader, integration: str) -> str:
    value = reader.string("gitlabImageTag").strip()
    oldest = ".".join(map(str, versions.GITLAB_OLDEST_SUPPORTED))
    unsupported = versions.GITLAB_FIRST_UNSUPPORTED_MAJOR
    removal = versions.CERTIFICATE_CLUSTERS_REMOVED_MAJOR
    try:
        version = gitlab_version(value)
    except ValueError:
        reader.fail(
            "gitlabImageTag",
            value,
            f"a pinned gitlab/gitlab-ce tag such as {versions.GITLAB_CE_TAG} (<major>.<minor>.<patch>-ce.<n>; "
            "not latest, not an EE tag)",
        )
        return value
    if version[:2] < versions.GITLAB_OLDEST_SUPPORTED:
        reader.fail(
            "gitlabImageTag",
            value,
            f"GitLab {oldest}.x or 19.x, e.g. {versions.GITLAB_CE_TAG}: older releases get no security fixes, and "
            f"{oldest} is the required upgrade stop before 19.x",
        )
    elif integration == "certificate" and version[0] >= removal:
        reader.fail(
            "gitlabImageTag",
            value,
            f"GitLab {oldest}.x or 19.x, e.g. {versions.GITLAB_CE_TAG}: GitLab {removal}.0 removes the "
            "certificate-based cluster integration (clusterIntegration certificate); "
            "set clusterIntegration to agent first (README: switching)",
        )
    elif version[0] >= unsupported:
        reader.fail(
            "gitlabImageTag",
            value,
            f"GitLab {oldest}.x or 19.x, e.g. {versions.GITLAB_CE_TAG}: GitLab {unsupported} is not supported by "
            "this program yet (its required upgrade stops and PostgreSQL minimum are not known)",
        )
    return value


def _kubernetes_patch(reader: _Reader) -> str | None:
    """An exact patch of the configured minor, or None (the newest patch when the minor is installed)."""
    value = reader.string("kubernetesPatch").strip().removeprefix("v")
    if not value:
        return None
    minor = reader.string("kubernetesVersion").strip().removeprefix("v")
    if not re.fullmatch(r"\d+\.\d+\.\d+", value) or not value.startswith(minor + "."):
        reader.fail(
            "kubernetesPatch",
            value,
            f"an exact patch of kubernetesVersion {minor} such as {minor}.7, or empty for the newest patch",
        )
    return value


def duration_seconds(text: str) -> int | None:
    """Seconds in a duration such as 10m or 1h30m (GitLab Runner's idle_time), or None if malformed."""
    match = _DURATION.match(text)
    if not text or not match:
        return None
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _runner_idle_time(reader: _Reader) -> str:
    value = reader.string("runnerIdleTime").strip()
    seconds = duration_seconds(value)
    if seconds is None or seconds > MAX_RUNNER_IDLE_SECONDS:
        reader.fail(
            "runnerIdleTime", value, "a duration from 0s to 24h in hours, minutes and seconds, such as 10m or 1h30m"
        )
    return value


def _runner_idle_count(reader: _Reader) -> int:
    """Idle job slots: at most every slot the fleet has (runnerMaxInstances x runnerCapacityPerInstance)."""
    slots = MAX_RUNNER_INSTANCES * MAX_RUNNER_CAPACITY
    count = reader.integer("runnerIdleCount", 0, slots)
    try:
        slots = int(reader.string("runnerMaxInstances")) * int(reader.string("runnerCapacityPerInstance"))
    except ValueError:
        return count  # those keys report their own problem
    if slots > 0 and count > slots:
        reader.fail(
            "runnerIdleCount",
            count,
            f"at most runnerMaxInstances x runnerCapacityPerInstance = {slots} (idle slots beyond the fleet's "
            "size are never reached)",
        )
    return count


def _log_retention(reader: _Reader) -> int:
    text = reader.string("flowLogRetentionDays").strip()
    accepted = "one of the retention periods CloudWatch Logs accepts: " + ", ".join(map(str, LOG_RETENTION_DAYS))
    try:
        days = int(text)
    except ValueError:
        reader.fail("flowLogRetentionDays", text, accepted)
        return LOG_RETENTION_DAYS[0]
    if days not in LOG_RETENTION_DAYS:
        reader.fail("flowLogRetentionDays", days, accepted)
    return days


def _extra_tags(reader: _Reader) -> tuple[tuple[str, str], ...]:
    tags = []
    for item in reader.string_list("extraTags", "CostCenter=platform") or []:
        key, sep, value = item.partition("=")
        accepted = '"Key=Value" with a key of 1-128 characters not starting with aws: and a value of at most 256'
        if not sep or not key or len(key) > 128 or len(value) > 256 or key.lower().startswith("aws:"):
            reader.fail("extraTags", item, accepted)
        elif key in RESERVED_TAG_KEYS:
            reader.fail("extraTags", item, f"a key other than {', '.join(RESERVED_TAG_KEYS)} (set by the program)")
        else:
            tags.append((key, value))
    return tuple(tags)


def parse_config(raw: Mapping[str, str | None], project: str, stack: str) -> StackConfig:
    """Build the validated configuration from raw values; raise ConfigError listing every problem.

    ``raw`` maps key names to the strings Pulumi stores (arrays as JSON); a missing key takes its
    ``KEYS`` default, the same default Pulumi.yaml declares.
    """
    unknown = sorted(set(raw) - set(_KEYS_BY_NAME))
    reader = _Reader(raw)
    for name in unknown:
        if name in RETIRED_KEYS:
            reader.problems.append(f"{name}: {RETIRED_KEYS[name]}")
        else:
            reader.problems.append(f"{name}: unknown key; known keys are {', '.join(sorted(_KEYS_BY_NAME))}")

    instance = "an EC2 instance type such as t3.large (family.size, lower case)"
    config = StackConfig(
        project=project,
        stack=stack,
        admin_cidrs=_cidrs(reader, "adminCidrs", reader.string_list("adminCidrs", "203.0.113.7/32")),
        app_cidrs=_cidrs(reader, "appCidrs", reader.string_list("appCidrs", "0.0.0.0/0")),
        vpc_cidr=_vpc_cidr(reader),
        availability_zone_count=reader.integer("availabilityZoneCount", 1, 3),
        gitlab_instance_type=reader.matching("gitlabInstanceType", _INSTANCE_TYPE, instance),
        control_plane_instance_type=reader.matching("controlPlaneInstanceType", _INSTANCE_TYPE, instance),
        worker_instance_type=reader.matching("workerInstanceType", _INSTANCE_TYPE, instance),
        root_volume_size_gb=reader.integer("rootVolumeSizeGb", 20, 1000),
        gitlab_data_volume_size_gb=reader.integer("gitlabDataVolumeSizeGb", 20, 16384),
        gitlab_data_volume_protect=reader.boolean("gitlabDataVolumeProtect"),
        control_plane_count=_control_plane_count(reader),
        backups=reader.boolean("backups"),
        backup_hour_utc=reader.integer("backupHourUtc", 0, 23),
        gitlab_backup_retention_days=reader.integer("gitlabBackupRetentionDays", 1, 3650),
        gitlab_snapshot_retention_days=reader.integer("gitlabSnapshotRetentionDays", 1, 365),
        etcd_snapshot_interval_minutes=reader.integer("etcdSnapshotIntervalMinutes", 15, 1440),
        etcd_snapshot_retention_days=reader.integer("etcdSnapshotRetentionDays", 1, 3650),
        etcd_daily_retention_days=reader.integer("etcdDailyRetentionDays", 1, 3650),
        pre_upgrade_backup_retention_days=reader.integer("preUpgradeBackupRetentionDays", 1, 3650),
        backup_noncurrent_retention_days=reader.integer("backupNoncurrentRetentionDays", 1, 365),
        worker_count=reader.integer("workerCount", 1, MAX_WORKERS),
        kubernetes_version=_kubernetes_minor(reader),
        kubernetes_patch=_kubernetes_patch(reader),
        flannel_version=reader.matching("flannelVersion", _SEMVER_TAG, "a pinned release tag such as v0.28.9"),
        gitlab_image_tag=_gitlab_image_tag(reader, reader.string("clusterIntegration")),
        gitlab_runner_version=reader.matching(
            "gitlabRunnerVersion",
            _RUNNER_VERSION,
            f"a GitLab Runner release such as {versions.GITLAB_RUNNER_VERSION} (X.Y.Z, not latest)",
        ),
        runner_manager_instance_type=reader.matching("runnerManagerInstanceType", _INSTANCE_TYPE, instance),
        runner_instance_type=_x86_64_instance_type(reader, "runnerInstanceType", instance),
        runner_max_instances=reader.integer("runnerMaxInstances", 1, MAX_RUNNER_INSTANCES),
        runner_capacity_per_instance=reader.integer("runnerCapacityPerInstance", 1, MAX_RUNNER_CAPACITY),
        runner_idle_count=_runner_idle_count(reader),
        runner_idle_time=_runner_idle_time(reader),
        flow_log_retention_days=_log_retention(reader),
        gitlab_hostname=reader.optional_matching(
            "gitlabHostname", _HOSTNAME, "a lower-case DNS name such as gitlab.example.com, or empty"
        ),
        gitlab_admin_username=reader.matching(
            "gitlabAdminUsername", _USERNAME, "a GitLab username (letters, digits, '_', '-', '.'; 2-255 characters)"
        ),
        gitlab_admin_email=reader.matching("gitlabAdminEmail", _EMAIL, "an e-mail address such as ops@example.com"),
        admin_token_rotation=reader.matching("adminTokenRotation", re.compile(r"^\S+$"), "a non-empty word"),
        operator_ssh_public_key=reader.optional_matching(
            "operatorSshPublicKey", _SSH_PUBLIC_KEY, "one OpenSSH public key line (ssh-ed25519 AAAA…), or empty"
        ),
        ami_id=reader.optional_matching("amiId", _AMI_ID, "an AMI id such as ami-0123456789abcdef0, or empty"),
        flux_version=reader.matching("fluxVersion", _SEMVER_TAG, "a pinned Flux v2 release tag such as v2.10.0"),
        delivery=reader.choice("delivery", DELIVERY_MODES),  # type: ignore[arg-type]
        cluster_integration=reader.choice("clusterIntegration", CLUSTER_INTEGRATIONS),  # type: ignore[arg-type]
        kubernetes_dashboard=reader.boolean("kubernetesDashboard"),
        project_name=reader.matching(
            "projectName",
            _PROJECT_PATH,
            "a GitLab project path: letters, digits, '_', '-', '.', starting and ending with a letter or digit",
        ),
        project_visibility=reader.choice("projectVisibility", VISIBILITIES),  # type: ignore[arg-type]
        app_name=reader.matching(
            "appName", _DNS_1035, "a Kubernetes name: lower-case letters, digits and '-', starting with a letter"
        ),
        app_node_port=reader.integer("appNodePort", *NODE_PORT_RANGE),
        default_branch=reader.matching("defaultBranch", _BRANCH, "a git branch name such as main"),
        extra_tags=_extra_tags(reader),
    )
    if config.kubernetes_dashboard and config.cluster_integration == "certificate":
        reader.fail(
            "kubernetesDashboard",
            True,
            "false with clusterIntegration certificate: the dashboard needs GitLab's agent (clusterIntegration agent)",
        )
    if config.kubernetes_dashboard and config.project_name == OPERATORS_PROJECT:
        reader.fail(
            "projectName",
            config.project_name,
            f"a name other than {OPERATORS_PROJECT}, the dashboard's operators project (kubernetesDashboard)",
        )
    if config.flux_version and not config.flux_version.startswith("v2."):
        reader.fail("fluxVersion", config.flux_version, "a Flux v2 release (v2.X.Y): Flux v1 is end of life")
    if reader.problems:
        raise ConfigError(reader.problems)
    return config


def load_config() -> StackConfig:
    """Read and validate this stack's configuration; stop the program with every problem at once."""
    config = pulumi.Config()
    raw: dict[str, str | None] = {key.name: config.get(key.name) for key in KEYS}
    # Also see keys the program does not read, so a typo (`adminCidr`) is reported, not ignored.
    prefix = f"{pulumi.get_project()}:"
    every_key = {**pulumi.runtime.get_config_env(), **pulumi.runtime.config.CONFIG.get()}
    for full_key in every_key:
        if full_key.startswith(prefix) and full_key[len(prefix) :] not in raw:
            raw[full_key[len(prefix) :]] = config.get(full_key[len(prefix) :])
    try:
        return parse_config(raw, pulumi.get_project(), pulumi.get_stack())
    except ConfigError as error:
        raise pulumi.RunError(str(error)) from None
