"""Run the policy pack over a mocked program the way the Pulumi engine does, without the CLI.

The engine side is reproduced here, the SDK side is the SDK itself:

* **config** (engine, pkg/resource/analyzer/config.go ``ReconcilePolicyPackConfig``): each policy's
  schema defaults and its enforcement level, then the stack's ``--policy-pack-config`` file (``"all"``
  first, then per policy; properties shallow-merged), validated against the schemas (draft 4, as
  gojsonschema);
* **resources** (engine ``Analyze``/``AnalyzeStack``): inputs for resource policies, outputs for stack
  policies, marshalled with secrets kept (the ``4dabf1...`` signature form) and unknowns as the
  sentinel string, into a protobuf ``Struct`` (numbers become floats); options (protect, parent,
  additionalSecretOutputs, ...), the provider, and property dependencies (empty ones dropped); the
  root ``pulumi:pulumi:Stack`` resource carries the exports;
* **policies** (SDK): the requests go to ``pulumi_policy``'s own analyzer servicer, which deserializes
  props, wraps them in the unknown-checking proxy, applies enforcement levels and turns an unknown
  value into an advisory "can't run policy during preview" diagnostic.

Usage: ``analyze_program(run, config_file=POLICY_DIR / "config.dev.json")`` for a ``tools.harness``
run, or ``analyze([...Resource...])`` for hand-built resources.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
from google.protobuf import struct_pb2
from pulumi.runtime import rpc
from pulumi.runtime.proto import analyzer_pb2
from pulumi_policy import Policy
from pulumi_policy.deserialize import SPECIAL_SECRET_SIG, SPECIAL_SIG_KEY, serialize_properties
from pulumi_policy.policy import _PolicyAnalyzerServicer

from policy.gitops_policies import ALL_POLICIES, PACK_ENFORCEMENT_LEVEL, PACK_NAME

ROOT = Path(__file__).resolve().parent.parent
POLICY_DIR = ROOT / "policy"
UNKNOWN = rpc.UNKNOWN  # the engine's unknown sentinel, as the harness records preview values

_LEVEL_TO_PROTO = {
    "advisory": analyzer_pb2.ADVISORY,
    "mandatory": analyzer_pb2.MANDATORY,
    "remediate": analyzer_pb2.REMEDIATE,
    "disabled": analyzer_pb2.DISABLED,
}
_PROTO_TO_LEVEL = {value: key for key, value in _LEVEL_TO_PROTO.items()}


# --------------------------------------------------------------------------------------------
# What the engine knows about a resource
# --------------------------------------------------------------------------------------------
def secret(value: Any) -> dict[str, Any]:
    """A value marked secret, in the form the engine sends (and the harness records)."""
    return {SPECIAL_SIG_KEY: SPECIAL_SECRET_SIG, "value": value}


@dataclass
class Resource:
    """One resource as the engine shows it to policies. ``outputs`` default to the inputs."""

    type: str
    name: str
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] | None = None
    urn: str = ""
    parent: str = ""
    protect: bool = False
    provider: str = ""
    dependencies: list[str] = field(default_factory=list)
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    additional_secret_outputs: list[str] = field(default_factory=list)
    ignore_changes: list[str] = field(default_factory=list)
    delete_before_replace: bool | None = None
    aliases: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.urn:
            self.urn = urn_for(self.type, self.name)


def urn_for(type_: str, name: str, stack: str = "dev", project: str = "gitops", parent_type: str = "") -> str:
    qualified = f"{parent_type}${type_}" if parent_type else type_
    return f"urn:pulumi:{stack}::{project}::{qualified}::{name}"


def root_stack(stack: str, project: str, exports: Mapping[str, Any]) -> Resource:
    """The ``pulumi:pulumi:Stack`` resource: its outputs are the stack's exports."""
    name = f"{project}-{stack}"
    return Resource(
        "pulumi:pulumi:Stack",
        name,
        inputs={},
        outputs=dict(exports),
        urn=urn_for("pulumi:pulumi:Stack", name, stack, project),
    )


def from_program(run: Any) -> list[Resource]:
    """Every registration of a ``tools.harness.ProgramRun``, plus the root stack with the exports."""
    project = run.registrations[0].urn.split("::")[1] if run.registrations else "gitops"
    exports = {key: secret(value) if key in run.secret_outputs else value for key, value in run.outputs.items()}
    resources = [root_stack(run.stack, project, exports)]
    for registration in run.registrations:
        resources.append(
            Resource(
                type=registration.type,
                name=registration.name,
                inputs=registration.inputs,
                outputs=registration.state if registration.custom else {},
                urn=registration.urn,
                parent=registration.parent,
                protect=registration.protect,
                provider=registration.provider,
                dependencies=list(registration.depends_on),
                property_dependencies=dict(registration.property_dependencies),
                additional_secret_outputs=list(registration.additional_secret_outputs),
                ignore_changes=list(registration.ignore_changes),
                delete_before_replace=registration.delete_before_replace or None,
                aliases=[str(alias) for alias in registration.aliases if isinstance(alias, str)],
            )
        )
    return resources


# --------------------------------------------------------------------------------------------
# Policy pack configuration, as the engine reconciles it
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PolicyConfig:
    enforcement_level: str
    properties: dict[str, Any]


def _schema(policy: Policy) -> dict[str, Any]:
    properties = policy.config_schema.properties if policy.config_schema else {}
    return {"type": "object", "properties": properties}


def pack_config(
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    policies: Sequence[Policy] = ALL_POLICIES,
) -> dict[str, PolicyConfig]:
    """The per-policy config the engine sends: defaults < config file < overrides, validated."""
    result: dict[str, PolicyConfig] = {}
    for policy in policies:
        level = policy.enforcement_level or PACK_ENFORCEMENT_LEVEL
        defaults = {
            key: copy.deepcopy(spec["default"])
            for key, spec in _schema(policy)["properties"].items()
            if "default" in spec
        }
        result[policy.name] = PolicyConfig(level.value, defaults)
    for given in (json.loads(config_file.read_text()) if config_file else {}, overrides or {}):
        _apply(result, given)
    problems = []
    by_name = {policy.name: policy for policy in policies}
    for name, config in result.items():
        validator = jsonschema.Draft4Validator(_schema(by_name[name]))
        problems += [f"{name}: {error.message}" for error in validator.iter_errors(config.properties)]
    if problems:
        raise ValueError("invalid policy pack config:\n" + "\n".join(problems))
    return result


def _apply(result: dict[str, PolicyConfig], given: Mapping[str, Any]) -> None:
    def split(value: Any) -> tuple[str | None, dict[str, Any]]:
        if isinstance(value, str):
            return value, {}
        if not isinstance(value, Mapping):
            raise ValueError(f"{value!r} is not a valid value; must be a string or object")
        properties = {k: v for k, v in value.items() if k != "enforcementLevel"}
        return value.get("enforcementLevel"), properties

    if "all" in given:
        level, _ = split(given["all"])
        if level:
            for name, config in result.items():
                result[name] = PolicyConfig(level, config.properties)
    for name, value in given.items():
        if name == "all":
            continue
        if name not in result:
            raise ValueError(f"policy config names an unknown policy {name!r}")
        level, properties = split(value)
        if level is not None and level not in _LEVEL_TO_PROTO:
            raise ValueError(f"{name}: {level!r} is not a valid enforcement level")
        current = result[name]
        result[name] = PolicyConfig(level or current.enforcement_level, {**current.properties, **properties})


# --------------------------------------------------------------------------------------------
# Running the pack
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Violation:
    policy: str
    level: str  # "mandatory" or "advisory" (what the engine acts on)
    message: str
    urn: str

    @property
    def resource(self) -> str:
        return self.urn.rsplit("::", 1)[-1] if self.urn else ""

    def __str__(self) -> str:
        return f"[{self.level}] {self.policy} on {self.resource or 'the stack'}: {self.message}"


@dataclass(frozen=True)
class Report:
    violations: tuple[Violation, ...]

    @property
    def mandatory(self) -> list[Violation]:
        return [v for v in self.violations if v.level == "mandatory"]

    @property
    def advisory(self) -> list[Violation]:
        return [v for v in self.violations if v.level == "advisory"]

    def of(self, policy: str) -> list[Violation]:
        return [v for v in self.violations if v.policy == policy]

    def blocks(self) -> bool:
        """Whether the engine would stop the update."""
        return bool(self.mandatory)

    def __str__(self) -> str:
        return "\n".join(map(str, self.violations)) or "no violations"


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(serialize_properties(dict(values)))
    return struct


def _options(resource: Resource) -> analyzer_pb2.AnalyzerResourceOptions:
    return analyzer_pb2.AnalyzerResourceOptions(
        protect=resource.protect,
        ignoreChanges=resource.ignore_changes,
        deleteBeforeReplace=bool(resource.delete_before_replace),
        deleteBeforeReplaceDefined=resource.delete_before_replace is not None,
        additionalSecretOutputs=resource.additional_secret_outputs,
        aliases=resource.aliases,
        parent=resource.parent,
    )


def _provider(
    resource: Resource, by_urn: Mapping[str, Resource], stack_config: Mapping[str, str]
) -> analyzer_pb2.AnalyzerProviderResource | None:
    """The provider the engine reports: the explicit one, or the default provider of the package."""
    package = resource.type.split(":", 1)[0]
    if package == "pulumi" or resource.type.startswith("pulumi:providers:"):
        return None
    urn = resource.provider.rsplit("::", 1)[0] if resource.provider else ""
    explicit = by_urn.get(urn)
    if explicit is not None:
        return analyzer_pb2.AnalyzerProviderResource(
            type=explicit.type, properties=_struct(explicit.inputs), urn=explicit.urn, name=explicit.name
        )
    # A default provider's inputs are the stack config of its package ("aws:region" -> region).
    inputs = {key.split(":", 1)[1]: value for key, value in stack_config.items() if key.startswith(f"{package}:")}
    name = "default"
    return analyzer_pb2.AnalyzerProviderResource(
        type=f"pulumi:providers:{package}",
        properties=_struct(inputs),
        urn=urn_for(f"pulumi:providers:{package}", name),
        name=name,
    )


def _collect(response: Any, into: list[Violation], resource_urn: str = "") -> None:
    """Diagnostics of a response; the engine files a resource policy's findings under that resource."""
    for diagnostic in response.diagnostics:
        into.append(
            Violation(
                policy=diagnostic.policyName,
                level=_PROTO_TO_LEVEL[diagnostic.enforcementLevel],
                message=diagnostic.message,
                urn=diagnostic.urn or resource_urn,
            )
        )


def analyze(
    resources: Iterable[Resource],
    *,
    config_file: Path | None = None,
    config: Mapping[str, Any] | None = None,
    stack_config: Mapping[str, str] | None = None,
    policies: Sequence[Policy] = ALL_POLICIES,
) -> Report:
    """Run every policy on every resource (``Analyze``), then on the whole stack (``AnalyzeStack``)."""
    resources = list(resources)
    servicer = _PolicyAnalyzerServicer(PACK_NAME, "0.1.0", list(policies), PACK_ENFORCEMENT_LEVEL)
    configure = analyzer_pb2.ConfigureAnalyzerRequest()
    for name, policy_config in pack_config(config_file, config, policies).items():
        configure.policyConfig[name].CopyFrom(
            analyzer_pb2.PolicyConfig(
                enforcementLevel=_LEVEL_TO_PROTO[policy_config.enforcement_level],
                properties=_struct(policy_config.properties),
            )
        )
    servicer.Configure(configure, None)

    by_urn = {resource.urn: resource for resource in resources}
    violations: list[Violation] = []
    for resource in resources:
        if resource.type == "pulumi:pulumi:Stack":
            continue  # the root stack is not a step the engine analyzes
        request = analyzer_pb2.AnalyzeRequest(
            type=resource.type,
            properties=_struct(resource.inputs),
            urn=resource.urn,
            name=resource.name,
            options=_options(resource),
        )
        provider = _provider(resource, by_urn, stack_config or {})
        if provider is not None:
            request.provider.CopyFrom(provider)
        _collect(servicer.Analyze(request, None), violations, resource.urn)

    stack_request = analyzer_pb2.AnalyzeStackRequest()
    for resource in resources:
        entry = stack_request.resources.add(
            type=resource.type,
            properties=_struct(resource.outputs if resource.outputs is not None else resource.inputs),
            urn=resource.urn,
            name=resource.name,
            options=_options(resource),
            parent=resource.parent,
            dependencies=resource.dependencies,
        )
        for key, urns in resource.property_dependencies.items():
            if urns:  # the engine skips properties without dependencies
                entry.propertyDependencies[key].urns.extend(urns)
        provider = _provider(resource, by_urn, stack_config or {})
        if provider is not None:
            entry.provider.CopyFrom(provider)
    _collect(servicer.AnalyzeStack(stack_request, None), violations)
    return Report(tuple(violations))


def analyze_program(run: Any, *, config_file: Path | None = None, extra: Iterable[Resource] = ()) -> Report:
    """The pack over a mocked program run (plus optional extra resources), with the stack's config file."""
    return analyze([*from_program(run), *extra], config_file=config_file, stack_config=run.config)


def stack_config_file(stack: str) -> Path:
    return POLICY_DIR / f"config.{stack}.json"
