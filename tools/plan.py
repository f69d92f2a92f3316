"""What a second `pulumi up` would execute: run the program twice (state A, then B) and diff by URN.

    from tools.plan import plan, run_twice
    result = run_twice(after={"workerCount": 3})          # A: the fixture stack, B: with the change
    assert result.plan.touched(INSTANCE) == {}             # no instance created, replaced or stopped
    assert result.plan.action_of("gitops-k8s-worker3") == "create"

``plan(before, after)`` compares two ``ProgramRun``s (tools/harness.py) registration by registration
and classifies each URN with the documented update semantics of its provider, the way the engine
does (pulumi/pulumi pkg/resource/deploy/step_generator.go):

* ``ignore_changes`` first: an ignored property keeps its old value (``processIgnoreChanges``), so a
  change to it decides nothing. A replacement re-reads the program's values
  (``Check`` with ``goal.Properties``), so ``pulumi up --replace`` builds the new resource from the
  current program (a new AMI, the current user data), not from the ignored old values.
* a replaced resource's outputs are all new (a new id, new IPs): every input of a dependent that
  has a property dependency on it counts as changed. An EC2 stop/start keeps the id and private IP
  but releases an auto-assigned public IP: only inputs that contained the old public IP or DNS
  name change. (The mocks of run B answer with the same ids as run A, so the harness adds these.)
* ``delete_before_replace``: the resource and every dependent that the replacement forces to be
  replaced are deleted first, dependents first, then created again in order
  (``calculateDependentReplacements``). Otherwise the replacement is created first and the old one
  deleted at the end. Removed resources are deleted at the end, dependents before dependencies.
* ``protect``: replacing or deleting a protected resource is an error, listed in ``Plan.errors``.
* a replaced provider replaces every resource it manages: the engine's ``providerChanged`` asks the
  new provider's ``DiffConfig`` and, when it answers "replace", replaces the resource
  (step_generator.go ``diff``). ``preview=True`` plans a `pulumi preview`: there every output of a
  resource being created or replaced is unknown, so an input that depends on one is computed (an
  updated resource's outputs are taken as known).

A change to a custom type modelled nowhere below raises ``UnmodelledChange``: the harness never
guesses "update" (it would hide a replacement). Modelled types:

* ``aws:ec2/instance:Instance`` (hashicorp/terraform-provider-aws internal/service/ec2/ec2_instance.go,
  the provider pulumi-aws bridges): ``ForceNew`` fields replace (``ami``, ``subnetId``,
  ``availabilityZone``, ``keyName``, ``privateIp``, ``associatePublicIpAddress``, ...); ``userData``
  and ``instanceType`` are applied by ``modifyInstanceAttributeWithStopStart``/stop, modify, start:
  **stop-start**; ``userData`` replaces instead when ``userDataReplaceOnChange`` is true.
* ``command:remote:Command``, ``command:local:Command`` (pulumi/pulumi-command v1.2.1,
  provider/pkg/provider/common/inputs.go): only ``triggers`` is ``replaceOnChanges``; a change to
  any other input (``create``, ``stdin``, ``environment`` and, since the provider moved to
  pulumi-go-provider in v0.6, ``connection``) re-runs ``update`` or else ``create`` in place. On
  replace and on removal the old resource's ``delete`` runs.
* ``tls:*`` (hashicorp/terraform-provider-tls internal/provider/resource_*.go): every input replaces
  but ``earlyRenewalHours``; ``random:*``: every input replaces (``RequiresReplace`` on all).
* ``gitlab:index/clusterAgent``, ``gitlab:index/clusterAgentToken``: every input replaces.
* ``aws:ec2/eipAssociation``, ``aws:ec2/keyPair``, ``aws:ec2/subnet``, ``aws:ec2/securityGroup``,
  ``aws:vpc/securityGroupIngressRule``, the IAM role/profile/role policy, the CI fleet's launch template and Auto Scaling
  group, the flow logs' log group and flow log, ``aws:ec2/vpc``
  (``vpc_.go``), ``aws:ec2/routeTableAssociation`` (``vpc_route_table_association.go``) and
  ``aws:ec2/volumeAttachment`` (``ebs_volume_attachment.go``), and ``gitlab:index/projectVariable``
  and ``projectCluster`` (gitlabhq/terraform-provider-gitlab ``resource_gitlab_project_variable.go``,
  ``resource_gitlab_project_cluster.go``): their ``ForceNew`` fields, listed in ``REPLACE_ON_CHANGE``;
  ``gitlab:index/repositoryFile`` (``resource_gitlab_repository_file.go``) likewise;
  ``gitlab:index/applicationSettings`` updates in place (create and update are one call).
* the API endpoint (components/cluster_endpoint.py), hashicorp/terraform-provider-aws
  internal/service/elbv2/ and internal/service/route53/: ``aws:lb/loadBalancer`` replaces on its
  ``ForceNew`` fields and, being a network load balancer, when a subnet is removed or when security
  groups are added to none or all removed (``customizeDiffLoadBalancerNLB``, ``REPLACE_WHEN``);
  ``aws:lb/targetGroup`` on its ``ForceNew`` fields (its health check and attributes such as
  ``preserveClientIp`` update in place); ``aws:lb/listener`` on ``loadBalancerArn``;
  ``aws:lb/targetGroupAttachment`` on anything (create, read and delete only: every field
  ``ForceNew``); ``aws:route53/zone`` on ``name`` and ``delegationSetId`` (its VPCs are associated
  and disassociated in place); ``aws:route53/record`` on ``name`` and ``zoneId`` only (``records``,
  ``ttl``, ``aliases`` and ``type`` are an UPSERT, or a delete and create in one change batch:
  record.go ``resourceRecordUpdate``), so an A record that becomes an alias is updated in place.
* ``pulumi:providers:kubernetes`` (pulumi/pulumi-kubernetes provider/pkg/provider/provider.go
  ``DiffConfig``): a changed ``clusterIdentifier`` replaces, an unchanged one never does; without
  one, a computed ``kubeconfig``/``context``/``cluster`` replaces, and so does a change of the
  kubeconfig's active cluster (server, CA); anything else updates. ``pulumi:providers:gitlab``:
  pulumi-gitlab declares no ``ForcesProviderReplace`` config (provider/resources.go), so the bridge's
  ``DiffConfig`` always updates.
* ``kubernetes:*`` objects (pulumi-kubernetes provider/pkg/provider/diff.go ``forceNewProperties``):
  ``metadata.name`` and ``metadata.namespace`` replace, plus each kind's own fields
  (``KUBERNETES_FORCE_NEW``: a Secret's ``type``/``data``/``stringData``, a binding's ``roleRef``...).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from components import clock
from tools.harness import FIXTURE_STACKS, ProgramRun, Registration, StackMocks, plain, run_function, run_program

Action = Literal["create", "delete", "replace", "stop-start", "update", "same"]
Operation = Literal["create", "update", "stop-start", "delete"]

INSTANCE = "aws:ec2/instance:Instance"
ALL = "*"  # every input replaces

# aws_instance's ForceNew arguments, as Pulumi names them (camelCase).
_INSTANCE_FORCE_NEW = """
    ami associatePublicIpAddress availabilityZone cpuCoreCount cpuOptions cpuThreadsPerCore ebsBlockDevices
    ebsOptimized enclaveOptions ephemeralBlockDevices hibernation hostId ipv6AddressCount ipv6Addresses keyName
    launchTemplate networkInterfaces placementGroup placementPartitionNumber privateDnsNameOptions privateIp
    rootBlockDevice.encrypted rootBlockDevice.kmsKeyId securityGroups subnetId tenancy
"""
# Inputs whose change replaces the resource (top-level names or dotted paths), by type.
REPLACE_ON_CHANGE: dict[str, frozenset[str]] = {
    INSTANCE: frozenset(_INSTANCE_FORCE_NEW.split()),
    # aws_ebs_volume's ForceNew arguments (internal/service/ec2/ebs_volume.go); tags, size, type, IOPS
    # and throughput change in place (ModifyVolume, or tags only).
    "aws:ebs/volume:Volume": frozenset(
        {"availabilityZone", "encrypted", "kmsKeyId", "multiAttachEnabled", "outpostArn", "snapshotId"}
    ),
    "command:remote:Command": frozenset({"triggers"}),
    "command:local:Command": frozenset({"triggers"}),
    "aws:ec2/eip:Eip": frozenset(
        {"address", "customerOwnedIpv4Pool", "domain", "networkBorderGroup", "publicIpv4Pool"}
    ),
    "aws:ec2/eipAssociation:EipAssociation": frozenset({ALL}),
    "aws:ec2/keyPair:KeyPair": frozenset({"keyName", "keyNamePrefix", "publicKey"}),
    "aws:ec2/subnet:Subnet": frozenset({"availabilityZone", "availabilityZoneId", "cidrBlock", "vpcId"}),
    "aws:ec2/securityGroup:SecurityGroup": frozenset({"description", "name", "namePrefix", "vpcId"}),
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": frozenset({"securityGroupId"}),
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": frozenset({"securityGroupId"}),
    "aws:iam/role:Role": frozenset({"name", "namePrefix", "path"}),
    "aws:iam/instanceProfile:InstanceProfile": frozenset({"name", "namePrefix", "path"}),
    # GitLab's agent and its tokens: the provider implements create, read and delete only (no update:
    # gitlab-org/terraform-provider-gitlab resource_gitlab_cluster_agent(_token).go), so any change
    # replaces them; deleting a token revokes it.
    "gitlab:index/clusterAgent:ClusterAgent": frozenset({ALL}),
    "gitlab:index/clusterAgentToken:ClusterAgentToken": frozenset({ALL}),
    "aws:iam/rolePolicy:RolePolicy": frozenset({"name", "namePrefix", "role"}),
    # The GitLab volume's snapshot policy (components/backups.py, one schedule): of what it sets, only a
    # schedule's copy_tags is ForceNew; description, schedule name, times and retention go through
    # UpdateLifecyclePolicy (terraform-provider-aws internal/service/dlm/lifecycle_policy.go).
    "aws:dlm/lifecyclePolicy:LifecyclePolicy": frozenset({"policyDetails.schedules[0].copyTags"}),
    # The CI fleet (components/runners.py): any other change to a launch template makes a new version
    # (ec2_launch_template.go), and the group takes everything else through UpdateAutoScalingGroup,
    # with no instance refresh unless one is configured (autoscaling/group.go resourceGroupUpdate).
    "aws:ec2/launchTemplate:LaunchTemplate": frozenset({"name", "namePrefix"}),
    "aws:autoscaling/group:Group": frozenset({"name", "namePrefix", "initialLifecycleHooks"}),
    # Flow logs (components/flow_logs.py): every argument of aws_flow_log but its tags is ForceNew.
    "aws:cloudwatch/logGroup:LogGroup": frozenset({"name", "namePrefix", "logGroupClass"}),
    "aws:ec2/flowLog:FlowLog": frozenset(
        """
        deliverCrossAccountRole destinationOptions eniId iamRoleArn logDestination logDestinationType logFormat
        logGroupName maxAggregationInterval subnetId trafficType transitGatewayAttachmentId transitGatewayId vpcId
        """.split()
    ),
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup": frozenset({"vpcId"}),
    "aws:ec2/vpc:Vpc": frozenset({"cidrBlock", "ipv4IpamPoolId", "ipv4NetmaskLength"}),
    "aws:ec2/routeTableAssociation:RouteTableAssociation": frozenset({"subnetId", "gatewayId"}),
    "aws:ec2/volumeAttachment:VolumeAttachment": frozenset({"deviceName", "instanceId", "volumeId"}),
    # gitlabhq/terraform-provider-gitlab internal/provider/resource_gitlab_project_variable.go, _cluster.go.
    "gitlab:index/projectVariable:ProjectVariable": frozenset({"project", "key", "environmentScope"}),
    "gitlab:index/projectCluster:ProjectCluster": frozenset(
        {"project", "enabled", "managed", "kubernetesAuthorizationType"}
    ),
    # A seeded file: a new content is a commit (UpdateFile); another project, path or branch replaces.
    "gitlab:index/repositoryFile:RepositoryFile": frozenset({"project", "filePath", "branch"}),
    # The instance's settings: create and update are the same UpdateSettings call, nothing replaces
    # (resource_gitlab_application_settings.go: CreateContext and UpdateContext are one function).
    "gitlab:index/applicationSettings:ApplicationSettings": frozenset(),
    # Provider configuration the bridge never replaces on (no ForcesProviderReplace declared).
    "pulumi:providers:gitlab": frozenset(),
    # The API endpoint (hashicorp/terraform-provider-aws internal/service/elbv2/load_balancer.go,
    # target_group.go, listener.go, target_group_attachment.go; route53/zone.go, record.go).
    "aws:lb/loadBalancer:LoadBalancer": frozenset(
        {"name", "namePrefix", "internal", "loadBalancerType", "customerOwnedIpv4Pool"}
    ),
    "aws:lb/targetGroup:TargetGroup": frozenset(
        {"name", "namePrefix", "port", "protocol", "protocolVersion", "targetType", "vpcId", "ipAddressType"}
    ),
    "aws:lb/listener:Listener": frozenset({"loadBalancerArn"}),
    "aws:lb/targetGroupAttachment:TargetGroupAttachment": frozenset({ALL}),
    "aws:route53/zone:Zone": frozenset({"name", "delegationSetId"}),
    "aws:route53/record:Record": frozenset({"name", "zoneId"}),
}


def _removes_an_element(old: Any, new: Any) -> bool:
    return any(item not in (new or []) for item in (old or []))


def _groups_added_or_all_removed(old: Any, new: Any) -> bool:
    return bool(old) != bool(new)


# Inputs whose change replaces the resource only in some cases: (old value, new value) -> replace?
# A network load balancer cannot lose a subnet, gain security groups when it has none, or lose all
# of them (terraform-provider-aws load_balancer.go customizeDiffLoadBalancerNLB).
REPLACE_WHEN: dict[str, dict[str, Callable[[Any, Any], bool]]] = {
    "aws:lb/loadBalancer:LoadBalancer": {
        "subnets": _removes_an_element,
        "securityGroups": _groups_added_or_all_removed,
    },
}
# Inputs applied by stopping and starting the instance (ModifyInstanceAttribute needs it stopped).
STOP_START: dict[str, frozenset[str]] = {INSTANCE: frozenset({"userData", "userDataBase64", "instanceType"})}
# Outputs an EC2 stop/start changes: an auto-assigned public IPv4 address is released on stop.
STOP_START_OUTPUTS = ("publicIp", "publicDns")
# Providers whose every input replaces, except the listed ones.
REPLACE_ALL_BUT: dict[str, frozenset[str]] = {"tls:": frozenset({"earlyRenewalHours"}), "random:": frozenset()}
KUBERNETES_PROVIDER = "pulumi:providers:kubernetes"
# pulumi-kubernetes diff.go forceNew, by (API group, kind): fields whose change replaces the object,
# besides metadata.name and metadata.namespace. Secrets and ConfigMaps are immutable unless the
# provider enables enableSecretMutable / enableConfigMapMutable (this program does not).
KUBERNETES_FORCE_NEW: dict[tuple[str, str], frozenset[str]] = {
    ("core", "Secret"): frozenset({"type", "data", "stringData"}),
    ("core", "ConfigMap"): frozenset({"data", "binaryData"}),
    ("core", "Service"): frozenset({"spec.clusterIP"}),
    ("apps", "Deployment"): frozenset({"spec.selector"}),
    ("apps", "DaemonSet"): frozenset({"spec.selector"}),
    ("apps", "StatefulSet"): frozenset({"spec.selector", "spec.podManagementPolicy", "spec.revisionHistoryLimit"}),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): frozenset({"roleRef"}),
    ("rbac.authorization.k8s.io", "RoleBinding"): frozenset({"roleRef"}),
    ("batch", "Job"): frozenset({"spec.completions", "spec.parallelism", "spec.selector", "spec.template"}),
}
# A Helm release is named by its own name and namespace (pulumi-kubernetes helm_release.go).
HELM_RELEASE_FORCE_NEW = frozenset({"name", "namespace"})


class UnmodelledChange(Exception):
    """A change to a resource type whose update semantics the harness does not know."""

    def __init__(self, type_: str, keys: Iterable[str]) -> None:
        super().__init__(
            f"{type_}: {sorted(keys)} changed, and tools/plan.py does not know whether that replaces it. "
            "Add the type's replace-on-change fields (from the provider's source) to REPLACE_ON_CHANGE."
        )


@dataclass(frozen=True)
class Change:
    """What the second `up` does to one resource, and which inputs decided it."""

    urn: str
    type: str
    name: str
    action: Action
    keys: tuple[str, ...] = ()  # changed input paths (after ignore_changes), sorted
    delete_before_replace: bool = False
    protected: bool = False
    custom: bool = True

    @property
    def changes_something(self) -> bool:
        return self.action != "same"


@dataclass
class Plan:
    """Every URN of either run with its action, plus one order the engine may execute them in."""

    changes: dict[str, Change]
    operations: list[tuple[Operation, str]] = field(default_factory=list)  # (operation, urn)
    errors: list[str] = field(default_factory=list)

    def of(self, name: str, type_: str | None = None) -> Change:
        matches = [c for c in self.changes.values() if c.name == name and (type_ is None or c.type == type_)]
        if len(matches) != 1:
            raise AssertionError(f"expected one resource named {name!r}, found {len(matches)}")
        return matches[0]

    def action_of(self, name: str, type_: str | None = None) -> Action:
        return self.of(name, type_).action

    def touched(self, type_: str | None = None) -> dict[str, Action]:
        """Resource name -> action, for every custom resource (of ``type_``) the `up` changes."""
        return {
            c.name: c.action
            for c in self.changes.values()
            if c.custom and c.changes_something and (type_ is None or c.type == type_)
        }

    def with_action(self, action: Action, type_: str | None = None) -> list[str]:
        return sorted(name for name, done in self.touched(type_).items() if done == action)

    def position(self, operation: Operation, name: str) -> int:
        """Index of ``operation`` on the resource named ``name`` in ``operations``."""
        urns = {c.urn for c in self.changes.values() if c.name == name}
        for index, (done, urn) in enumerate(self.operations):
            if done == operation and urn in urns:
                return index
        raise AssertionError(f"the plan does not {operation} {name!r}: {self.describe()}")

    def describe(self) -> str:
        return ", ".join(f"{c.name}: {c.action}" for c in self.changes.values() if c.custom and c.changes_something)


# ------------------------------------------------------------------------------------------------
# Diffing inputs
# ------------------------------------------------------------------------------------------------
def diff_paths(old: Any, new: Any, path: str = "") -> set[str]:
    """Property paths (``a.b[0]``) whose value differs; a whole list when its length changes."""
    if isinstance(old, dict) and isinstance(new, dict):
        changed: set[str] = set()
        for key in set(old) | set(new):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old or key not in new:
                changed.add(sub)
            else:
                changed |= diff_paths(old[key], new[key], sub)
        return changed
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        changed = set()
        for index, (before, after) in enumerate(zip(old, new, strict=True)):
            changed |= diff_paths(before, after, f"{path}[{index}]")
        return changed
    return set() if old == new else {path}


def _normalise(path: str) -> str:
    """``tags["Name"]`` -> ``tags.Name``: property paths in one spelling."""
    return re.sub(r'\["([^"]+)"\]', r".\1", path)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "[")


def ignored(path: str, ignore_changes: Iterable[str]) -> bool:
    return any(_under(_normalise(path), _normalise(entry)) for entry in ignore_changes)


def _top(path: str) -> str:
    return re.split(r"[.\[]", path, maxsplit=1)[0]


def _kubernetes_force_new(type_: str) -> frozenset[str] | None:
    """Replace-on-change fields of a ``kubernetes:<group>/<version>:<Kind>`` object, None if not one."""
    match = re.fullmatch(r"kubernetes:(?:(?P<group>[^/:]+)/)?(?P<version>[^/:]+):(?P<kind>\w+)", type_)
    if match is None:
        return None
    group, kind = match.group("group") or "core", match.group("kind")
    if (group, kind) == ("helm.sh", "Release"):
        return HELM_RELEASE_FORCE_NEW
    return frozenset({"metadata.name", "metadata.namespace"}) | KUBERNETES_FORCE_NEW.get((group, kind), frozenset())


def classify(
    type_: str, keys: Iterable[str], inputs: Mapping[str, Any], previous: Mapping[str, Any] | None = None
) -> Action:
    """The action for an existing resource whose ``keys`` (paths, ignore_changes applied) changed.

    ``previous``: the resource's old inputs, for the fields that replace only on some changes (REPLACE_WHEN).
    """
    keys = list(keys)
    if not keys:
        return "same"
    for prefix, kept in REPLACE_ALL_BUT.items():
        if type_.startswith(prefix):
            return "replace" if any(_top(key) not in kept for key in keys) else "update"
    kubernetes = _kubernetes_force_new(type_)
    if kubernetes is not None:
        return "replace" if any(_under(key, field) for key in keys for field in kubernetes) else "update"
    if type_ not in REPLACE_ON_CHANGE and type_ not in STOP_START:
        raise UnmodelledChange(type_, keys)
    replace_on = REPLACE_ON_CHANGE.get(type_, frozenset())
    if ALL in replace_on or any(_under(key, field) for key in keys for field in replace_on):
        return "replace"
    for path, replaces in REPLACE_WHEN.get(type_, {}).items():
        if any(_under(key, path) for key in keys) and replaces((previous or {}).get(path), inputs.get(path)):
            return "replace"
    stop_start = STOP_START.get(type_, frozenset())
    if any(_top(key) in stop_start for key in keys):
        if (
            type_ == INSTANCE
            and inputs.get("userDataReplaceOnChange")
            and any(_top(key) in ("userData", "userDataBase64") for key in keys)
        ):
            return "replace"
        return "stop-start"
    return "update"


def _active_cluster(inputs: Mapping[str, Any]) -> Any:
    """The cluster entry (server, CA) the provider's kubeconfig points at, as getActiveClusterFromConfig finds it."""
    kubeconfig = inputs.get("kubeconfig")
    config = yaml.safe_load(kubeconfig) if isinstance(kubeconfig, str) and kubeconfig.strip() else {}
    config = config if isinstance(config, dict) else {}
    contexts = {c.get("name"): c.get("context") or {} for c in config.get("contexts") or []}
    context = contexts.get(inputs.get("context") or config.get("current-context"), {})
    clusters = {c.get("name"): c.get("cluster") for c in config.get("clusters") or []}
    return clusters.get(inputs.get("cluster") or context.get("cluster"))


def kubernetes_provider_action(
    old: Mapping[str, Any], new: Mapping[str, Any], keys: Iterable[str], computed: Iterable[str] = ()
) -> Action:
    """pulumi-kubernetes ``DiffConfig`` (provider.go): replace or update; ``computed``: unknown inputs."""
    keys, computed = set(keys), set(computed)
    if not keys and not computed:
        return "same"
    identifier = "clusterIdentifier"
    if identifier in old and identifier in new:
        # Updated -> replace; the same identifier suppresses every other replacement.
        return "replace" if identifier in computed or old[identifier] != new[identifier] else "update"
    if computed & {"kubeconfig", "context", "cluster"}:
        return "replace"  # "We can't tell for sure if a computed value has changed"
    return "replace" if _active_cluster(old) != _active_cluster(new) else "update"


def _contains(value: Any, needles: set[str]) -> bool:
    if isinstance(value, str):
        return any(needle in value for needle in needles)
    if isinstance(value, dict):
        return any(_contains(item, needles) for item in value.values())
    if isinstance(value, list):
        return any(_contains(item, needles) for item in value)
    return False


# ------------------------------------------------------------------------------------------------
# The plan
# ------------------------------------------------------------------------------------------------
def plan(before: ProgramRun, after: ProgramRun, replace: Iterable[str] = (), *, preview: bool = False) -> Plan:
    """The changes a `pulumi up` of ``after``'s program would make to a stack deployed as ``before``.

    ``replace`` names resources to replace whatever their diff, as `pulumi up --replace <urn>` does.
    ``preview``: what `pulumi preview` shows instead, where new resources' outputs are unknown.
    """
    forced = set(replace)
    old = {r.urn: r for r in before.registrations}
    new = {r.urn: r for r in after.registrations}
    changes: dict[str, Change] = {}
    errors: list[str] = []
    replaced: set[str] = set()
    fresh: set[str] = set()  # created or replaced: every output unknown in a preview
    restarted: dict[str, set[str]] = {}  # urn -> output values a stop/start changes

    for registration in after.registrations:
        previous = old.get(registration.urn)
        if previous is None:
            changes[registration.urn] = _change(registration, "create")
            fresh.add(registration.urn)
            continue
        keys = diff_paths(plain(previous.inputs), plain(registration.inputs))
        computed = set()
        for key, dependencies in registration.property_dependencies.items():
            for dependency in dependencies:
                if dependency in replaced or (
                    dependency in restarted and _contains(plain(previous.inputs.get(key)), restarted[dependency])
                ):
                    keys.add(key)
                if preview and dependency in fresh:
                    computed.add(key)
        keys = {key for key in keys if not ignored(key, registration.ignore_changes)}
        if not registration.custom:
            action: Action = "same"
        elif registration.type == KUBERNETES_PROVIDER:
            inputs_before, inputs_after = plain(previous.inputs), plain(registration.inputs)
            action = kubernetes_provider_action(inputs_before, inputs_after, keys, computed)
            keys |= computed
        else:
            action = classify(registration.type, keys, plain(registration.inputs), plain(previous.inputs))
        if registration.provider.rsplit("::", 1)[0] in replaced:
            action, keys = "replace", {*keys, "provider"}  # its provider was replaced
        if registration.name in forced and registration.custom:
            action, keys = "replace", {*keys, "--replace"}
        if action == "replace":
            replaced.add(registration.urn)
            fresh.add(registration.urn)
            if previous.protect:
                errors.append(_protected(registration, "replace"))
        elif action == "stop-start":
            restarted[registration.urn] = {
                str(previous.state[output]) for output in STOP_START_OUTPUTS if previous.state.get(output)
            }
        changes[registration.urn] = _change(registration, action, keys)

    for registration in before.registrations:
        if registration.urn not in new:
            changes[registration.urn] = _change(registration, "delete")
            if registration.protect:
                errors.append(_protected(registration, "delete"))
    return Plan(changes, _operations(before, after, changes), errors)


def _change(registration: Registration, action: Action, keys: Iterable[str] = ()) -> Change:
    return Change(
        urn=registration.urn,
        type=registration.type,
        name=registration.name,
        action=action,
        keys=tuple(sorted(keys)),
        delete_before_replace=registration.delete_before_replace,
        protected=registration.protect,
        custom=registration.custom,
    )


def _protected(registration: Registration, verb: str) -> str:
    # The engine's own wording (step_generator.go): the operation stops before touching anything.
    return (
        f"unable to {verb} resource {registration.urn!r} as it is currently marked for protection. "
        f"To unprotect the resource, remove the `protect` flag from the resource in your Pulumi program "
        f"and run `pulumi up`, or use the command: `pulumi state unprotect {registration.urn!r}`"
    )


def _dependencies(registration: Registration) -> set[str]:
    dependencies = set(registration.depends_on)
    for urns in registration.property_dependencies.values():
        dependencies |= set(urns)
    return dependencies


def _dependents(runs: Iterable[Registration]) -> dict[str, set[str]]:
    """urn -> every urn that depends on it, directly or through others."""
    direct: dict[str, set[str]] = {}
    for registration in runs:
        for dependency in _dependencies(registration):
            direct.setdefault(dependency, set()).add(registration.urn)
    closure: dict[str, set[str]] = {}

    def walk(urn: str) -> set[str]:
        if urn not in closure:
            closure[urn] = set()
            for dependent in direct.get(urn, ()):
                closure[urn] |= {dependent, *walk(dependent)}
        return closure[urn]

    for urn in list(direct):
        walk(urn)
    return closure


def _operations(before: ProgramRun, after: ProgramRun, changes: dict[str, Change]) -> list[tuple[Operation, str]]:
    """One order the engine may run the steps in (it runs independent steps in parallel)."""
    order_before = [r.urn for r in before.registrations]
    dependents = _dependents(before.registrations)
    operations: list[tuple[Operation, str]] = []
    deleted: set[str] = set()
    deferred: list[str] = []
    for registration in after.registrations:
        change = changes[registration.urn]
        if not change.custom or change.action == "same":
            continue
        if change.action == "replace" and change.delete_before_replace:
            # Dependents that this replacement replaces too go first, in reverse dependency order.
            doomed = [
                urn
                for urn in order_before
                if urn in dependents.get(registration.urn, set()) and changes.get(urn, change).action == "replace"
            ]
            for urn in [*reversed(doomed), registration.urn]:
                if urn not in deleted:
                    operations.append(("delete", urn))
                    deleted.add(urn)
            operations.append(("create", registration.urn))
        elif change.action == "replace":
            operations.append(("create", registration.urn))
            if registration.urn not in deleted:
                deferred.append(registration.urn)
        elif change.action == "create":
            operations.append(("create", registration.urn))
        elif change.action in ("update", "stop-start"):
            operations.append((change.action, registration.urn))
    removed = [urn for urn in order_before if changes[urn].action == "delete" or urn in deferred]
    for urn in reversed(removed):
        if changes[urn].custom and urn not in deleted:
            operations.append(("delete", urn))
    return operations


# ------------------------------------------------------------------------------------------------
# Running the program twice
# ------------------------------------------------------------------------------------------------
@dataclass
class TwoRuns:
    before: ProgramRun
    after: ProgramRun
    plan: Plan


def run_twice(
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    *,
    stack: str = "dev",
    mocks_before: StackMocks | None = None,
    mocks_after: StackMocks | None = None,
    program: Callable[[], Any] | None = None,
    stack_dir: Path | None = FIXTURE_STACKS,
    replace: Iterable[str] = (),
    preview: bool = False,
) -> TwoRuns:
    """Run the program with config overrides (and mocked cloud) A, then B; return both and the plan.

    ``after`` overrides are applied on top of ``before``'s (``None`` removes a key). ``program``
    defaults to the whole ``__main__.py``; pass a function to run one component on its own.
    ``replace`` names resources the second `up` replaces on request (`pulumi up --replace`).
    ``preview=True`` gives what `pulumi preview` would show instead of what the `up` does.
    """
    first = dict(before or {})
    second = {**first, **(after or {})}

    def run(overrides: Mapping[str, Any], mocks: StackMocks | None) -> ProgramRun:
        if program is None:
            return run_program(stack, overrides, mocks=mocks, stack_dir=stack_dir)
        return run_function(program, stack, overrides, mocks=mocks, stack_dir=stack_dir)

    # Both runs see the same day (a once-a-day step must not differ between them), and run B's
    # mocks answer an unchanged resource with what run A made (the engine keeps its outputs).
    with clock.frozen(clock.today()):
        run_a = run(first, mocks_before)
        mocks_after = mocks_after or StackMocks()
        mocks_after.keep_deployed(run_a)
        run_b = run(second, mocks_after)
    return TwoRuns(run_a, run_b, plan(run_a, run_b, replace, preview=preview))
