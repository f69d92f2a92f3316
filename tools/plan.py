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

Modelled types (everything else: a change is an in-place update):

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
* ``aws:ec2/eipAssociation``, ``aws:ec2/keyPair``, ``aws:ec2/subnet``, ``aws:ec2/securityGroup``,
  ``aws:vpc/securityGroupIngressRule`` and the IAM role/profile: their ``ForceNew`` fields, listed
  in ``REPLACE_ON_CHANGE`` below.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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
}
# Inputs applied by stopping and starting the instance (ModifyInstanceAttribute needs it stopped).
STOP_START: dict[str, frozenset[str]] = {INSTANCE: frozenset({"userData", "userDataBase64", "instanceType"})}
# Outputs an EC2 stop/start changes: an auto-assigned public IPv4 address is released on stop.
STOP_START_OUTPUTS = ("publicIp", "publicDns")
# Providers whose every input replaces, except the listed ones.
REPLACE_ALL_BUT: dict[str, frozenset[str]] = {"tls:": frozenset({"earlyRenewalHours"}), "random:": frozenset()}


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


def classify(type_: str, keys: Iterable[str], inputs: Mapping[str, Any]) -> Action:
    """The action for an existing resource whose ``keys`` (paths, ignore_changes applied) changed."""
    keys = list(keys)
    if not keys:
        return "same"
    for prefix, kept in REPLACE_ALL_BUT.items():
        if type_.startswith(prefix):
            return "replace" if any(_top(key) not in kept for key in keys) else "update"
    replace_on = REPLACE_ON_CHANGE.get(type_, frozenset())
    if ALL in replace_on or any(_under(key, field) for key in keys for field in replace_on):
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
def plan(before: ProgramRun, after: ProgramRun, replace: Iterable[str] = ()) -> Plan:
    """The changes a `pulumi up` of ``after``'s program would make to a stack deployed as ``before``.

    ``replace`` names resources to replace whatever their diff, as `pulumi up --replace <urn>` does.
    """
    forced = set(replace)
    old = {r.urn: r for r in before.registrations}
    new = {r.urn: r for r in after.registrations}
    changes: dict[str, Change] = {}
    errors: list[str] = []
    replaced: set[str] = set()
    restarted: dict[str, set[str]] = {}  # urn -> output values a stop/start changes

    for registration in after.registrations:
        previous = old.get(registration.urn)
        if previous is None:
            changes[registration.urn] = _change(registration, "create")
            continue
        keys = diff_paths(plain(previous.inputs), plain(registration.inputs))
        for key, dependencies in registration.property_dependencies.items():
            for dependency in dependencies:
                if dependency in replaced or (
                    dependency in restarted and _contains(plain(previous.inputs.get(key)), restarted[dependency])
                ):
                    keys.add(key)
        keys = {key for key in keys if not ignored(key, registration.ignore_changes)}
        action = classify(registration.type, keys, plain(registration.inputs)) if registration.custom else "same"
        if registration.name in forced and registration.custom:
            action, keys = "replace", {*keys, "--replace"}
        if action == "replace":
            replaced.add(registration.urn)
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
) -> TwoRuns:
    """Run the program with config overrides (and mocked cloud) A, then B; return both and the plan.

    ``after`` overrides are applied on top of ``before``'s (``None`` removes a key). ``program``
    defaults to the whole ``__main__.py``; pass a function to run one component on its own.
    ``replace`` names resources the second `up` replaces on request (`pulumi up --replace`).
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
    return TwoRuns(run_a, run_b, plan(run_a, run_b, replace))
