"""Stack policies: properties of the whole stack that no single resource shows.

What a stack policy can see (pulumi_policy 1.21 ``AnalyzeStack``): every resource's outputs, its
options (``additionalSecretOutputs`` included), its parent, dependencies and per-property
dependencies, and the root ``pulumi:pulumi:Stack`` resource whose outputs are the stack's exports.
What it cannot see: whether a value is secret (the SDK unwraps secrets before a policy runs,
pulumi/pulumi-policy#241). So "every export that carries a credential is secret" is enforced where
secrecy is decided and visible:

1. every output that holds a credential is declared secret (``additionalSecretOutputs``): the
   generated SDK classes add the ones their schema marks (private keys, passwords, tokens, Secret
   data), the program must add the others, i.e. the stdout/stderr of a remote or local step that
   prints a key or token (checked on the value once it is known). Pulumi propagates secrecy from
   such an output to every Output and export derived from it;
2. an export whose value holds credential material (a private key, a GitLab or kubeadm token, a
   kubeconfig with a key or token) must contain the value of one of those secret outputs: a
   credential typed into code or config, or read from an unmarked output, is refused.

Not covered: an export passed through ``pulumi.unsecret`` (its value still matches a secret source).
The program's own tests check ``is_secret()`` on every sensitive export (STYLE.md, Secrets).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator, Mapping
from typing import Any

from pulumi_policy import PolicyResource, Severity, StackValidationArgs
from pulumi_policy.proxy import UnknownValueError

from .common import (
    GITLAB_TOKEN,
    KUBEADM_TOKEN,
    PRIVATE_KEY_BLOCK,
    get,
    has,
    is_list,
    is_mapping,
    kube_objects,
    stack_policy,
    string_list,
)

ROOT_STACK = "pulumi:pulumi:Stack"
K8S_SECRET = "kubernetes:core/v1:Secret"
REMOTE_COMMAND = "command:remote:Command"
LOCAL_COMMAND = "command:local:Command"

# Outputs that hold a credential, by resource type.
CREDENTIAL_OUTPUTS: Mapping[str, tuple[str, ...]] = {
    "tls:index/privateKey:PrivateKey": ("privateKeyPem", "privateKeyOpenssh", "privateKeyPemPkcs8"),
    "random:index/randomPassword:RandomPassword": ("result",),
    "gitlab:index/personalAccessToken:PersonalAccessToken": ("token",),
    "gitlab:index/projectAccessToken:ProjectAccessToken": ("token",),
    "gitlab:index/groupAccessToken:GroupAccessToken": ("token",),
    "gitlab:index/userRunner:UserRunner": ("token",),
    "gitlab:index/projectDeployToken:ProjectDeployToken": ("token",),
    "gitlab:index/groupDeployToken:GroupDeployToken": ("token",),
    "gitlab:index/pipelineTrigger:PipelineTrigger": ("token",),
    "gitlab:index/clusterAgentToken:ClusterAgentToken": ("token",),
    K8S_SECRET: ("data", "stringData"),
    "aws:iam/accessKey:AccessKey": ("secret", "sesSmtpPasswordV4"),
}
# random.RandomString is not listed: Pulumi's answer for a credential is RandomPassword, and a
# RandomString holds public values (a kubeadm token id, a name suffix).


def credential_outputs(resource: PolicyResource) -> tuple[str, ...]:
    """The outputs of ``resource`` that hold a credential.

    A step's stdout/stderr is whatever its script prints, so it counts when its (known) value holds
    credential material: a version or progress line does not, a token read back does.
    """
    if resource.resource_type in (REMOTE_COMMAND, LOCAL_COMMAND):
        return tuple(
            output
            for output in ("stdout", "stderr")
            if any(credential_material(text) for text in _strings(_known(resource.props, output)))
        )
    return CREDENTIAL_OUTPUTS.get(resource.resource_type, ())


def _known(mapping: Any, *path: str) -> Any:
    """The value at ``path``, or None if it is unknown (preview) or absent."""
    try:
        return get(mapping, *path)
    except UnknownValueError:
        return None


def _strings(value: Any) -> Iterator[str]:
    """Every known string inside a value (unknown parts skipped)."""
    if isinstance(value, str):
        yield value
    elif is_mapping(value):
        for key in list(value):
            yield from _strings(_known(value, key))
    elif is_list(value):
        for index in range(len(value)):
            try:
                item = value[index]
            except UnknownValueError:
                continue
            yield from _strings(item)


_KUBECONFIG_CREDENTIAL = re.compile(r"^\s*(client-key-data|token|password):\s*\S", re.MULTILINE)


def credential_material(text: str) -> str | None:
    """What kind of credential a text holds, or None (pure function)."""
    if PRIVATE_KEY_BLOCK.search(text):
        return "a private key"
    if GITLAB_TOKEN.search(text):
        return "a GitLab token"
    if "clusters:" in text and "users:" in text and _KUBECONFIG_CREDENTIAL.search(text):
        return "a kubeconfig with credentials"
    if KUBEADM_TOKEN.search(text):
        return "a kubeadm bootstrap token"
    return None


def _forms(value: str) -> set[str]:
    """A secret value as it may appear once embedded: itself, base64-encoded, base64-decoded."""
    forms = {value, base64.b64encode(value.encode()).decode()}
    try:
        forms.add(base64.b64decode(value, validate=True).decode("utf-8"))
    except (binascii.Error, ValueError):
        pass
    return {form.strip() for form in forms if len(form.strip()) >= 8}


@stack_policy(
    name="credential-outputs-secret",
    description="Every credential the stack holds is a Pulumi secret: outputs that carry private keys, "
    "passwords, tokens or read-back values are declared secret, and every export carrying a credential "
    "derives from one of them.",
    remediation="add ResourceOptions(additional_secret_outputs=[...]) for the output (e.g. ['stdout'] on a step "
    "that reads a token back) and export it through pulumi.Output.secret; never export a credential typed into "
    "code or config.",
    config={"exemptResources": string_list("Logical names of resources whose outputs are not credentials.", [])},
    severity=Severity.CRITICAL,
)
def credential_outputs_secret(args: StackValidationArgs, config: Mapping[str, Any]) -> Iterator[tuple[str, str | None]]:
    exempt = set(config["exemptResources"])
    secret_values: set[str] = set()
    for resource in args.resources:
        if resource.name in exempt:
            continue
        declared = set(resource.opts.additional_secret_outputs or [])
        outputs = credential_outputs(resource)
        undeclared = [output for output in outputs if output not in declared]
        if undeclared:
            yield (
                f"{resource.resource_type.rsplit(':', 1)[-1]} {resource.name}: credential output(s) "
                f"{', '.join(undeclared)} missing from additionalSecretOutputs, so stored and displayed in plain text.",
                resource.urn,
            )
        for output in outputs:
            if output in declared:
                for text in _strings(_known(resource.props, output)):
                    secret_values |= _forms(text)
    for root in (r for r in args.resources if r.resource_type == ROOT_STACK):
        for export in list(root.props):
            texts = list(_strings(_known(root.props, export)))
            kinds = {kind for kind in map(credential_material, texts) if kind}
            if not kinds:
                continue
            if not any(value in text for text in texts for value in secret_values):
                yield (
                    f"export {export} carries {' and '.join(sorted(kinds))} that does not come from any secret "
                    "output of the stack (a literal, a config value or an unmarked output).",
                    root.urn,
                )


@stack_policy(
    name="k8s-secret-data-generated",
    description="Kubernetes Secrets hold generated material (keys, tokens, passwords made by Pulumi "
    "resources), never literals written in code, and no Secret manifest with data is committed to Git.",
    remediation="derive stringData from a tls.PrivateKey / random.RandomPassword / GitLab token output; keep "
    "Secret objects out of the repository Flux applies (create them with pulumi_kubernetes instead).",
    config={
        "allowedLiteralSecrets": string_list(
            'Secrets ("namespace/name") whose data may be literal (non-sensitive configuration).', []
        )
    },
    severity=Severity.CRITICAL,
)
def secret_data_generated(args: StackValidationArgs, config: Mapping[str, Any]) -> Iterator[tuple[str, str | None]]:
    allowed = set(config["allowedLiteralSecrets"])
    for resource in args.resources:
        try:
            yield from _secret_findings(resource, allowed)
        except UnknownValueError:
            continue  # an output unknown during preview: the resource is checked again after `up`


def _secret_findings(resource: PolicyResource, allowed: set[str]) -> Iterator[tuple[str, str | None]]:
    """Findings for one resource: a literal Secret it creates, or a Secret manifest it commits."""
    for obj in kube_objects(resource.resource_type, resource.props):
        if obj.kind != "Secret" or f"{obj.namespace}/{obj.name}" in allowed:
            continue
        if obj.where:
            if has(obj.body, "data") or has(obj.body, "stringData"):
                yield (
                    f"{obj.label} commits a Secret with data to Git: everyone who can read the repository "
                    "reads the secret.",
                    resource.urn,
                )
            continue
        if _known(obj.body, "type") == "kubernetes.io/service-account-token":
            continue  # filled in by the token controller, not by the program
        fields = [field for field in ("stringData", "data") if has(obj.body, field)]
        generated = any(resource.property_dependencies.get(field) for field in ("stringData", "data"))
        if fields and not generated:
            yield (
                f"{obj.label}: {'/'.join(fields)} depends on no resource, so its values are literals written "
                "in code (or config).",
                resource.urn,
            )


PROJECT_CLUSTER = "gitlab:index/projectCluster:ProjectCluster"
CLUSTER_AGENT = "gitlab:index/clusterAgent:ClusterAgent"
SERVICE_ACCOUNT_TOKEN = "kubernetes.io/service-account-token"


@stack_policy(
    name="k8s-service-account-tokens",
    description="No long-lived ServiceAccount token Secret exists but the certificate-based GitLab integration's "
    "(kube-system/gitlab-admin, and only in a stack with that integration's gitlab.ProjectCluster): with GitLab's "
    "agent for Kubernetes agentk runs as gitlab-admin with short-lived projected tokens, and nothing needs one.",
    remediation="delete the kubernetes.io/service-account-token Secret; in agent mode (clusterIntegration agent) "
    "GitLab reaches the cluster through agentk, CI jobs through the agent's context; add a ServiceAccount to "
    "certificateAccounts only for another certificate-based integration that needs its token.",
    config={
        "certificateAccounts": string_list(
            'ServiceAccounts ("namespace/name") whose token a certificate-based GitLab integration needs.',
            ["kube-system/gitlab-admin"],
        )
    },
    severity=Severity.CRITICAL,
)
def service_account_tokens(args: StackValidationArgs, config: Mapping[str, Any]) -> Iterator[tuple[str, str | None]]:
    types = {resource.resource_type for resource in args.resources}
    certificate_integration = PROJECT_CLUSTER in types
    allowed = set(config["certificateAccounts"]) if certificate_integration else set()
    if certificate_integration:
        why = "only the certificate-based integration's accounts (certificateAccounts) may have one"
    elif CLUSTER_AGENT in types:
        why = "the stack uses GitLab's agent (a gitlab.ClusterAgent), which needs no long-lived token"
    else:
        why = "no certificate-based GitLab integration (gitlab.ProjectCluster) in the stack uses it"
    for resource in args.resources:
        for obj in kube_objects(resource.resource_type, resource.props):
            if obj.kind != "Secret":
                continue
            try:
                if _known(obj.body, "type") != SERVICE_ACCOUNT_TOKEN:
                    continue
                account = str(
                    get(obj.body, "metadata", "annotations", "kubernetes.io/service-account.name", default="") or "?"
                )
            except UnknownValueError:
                continue
            if f"{obj.namespace}/{account}" not in allowed:
                yield (
                    f"{obj.label} is a long-lived token of ServiceAccount {obj.namespace}/{account}: {why}.",
                    resource.urn,
                )


STACK_POLICIES = [credential_outputs_secret, secret_data_generated, service_account_tokens]
