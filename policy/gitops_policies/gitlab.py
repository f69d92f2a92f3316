"""GitLab policies: who can see the code, who can push to it, and what CI jobs may print."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from pulumi_policy import Severity, StackValidationArgs

from .common import Subject, get, resource_policy, stack_policy, string_list, truthy

PROJECT = "gitlab:index/project:Project"
DEPLOY_KEY = "gitlab:index/deployKey:DeployKey"
DEPLOY_KEY_ENABLE = "gitlab:index/deployKeyEnable:DeployKeyEnable"
PROJECT_VARIABLE = "gitlab:index/projectVariable:ProjectVariable"
GROUP_VARIABLE = "gitlab:index/groupVariable:GroupVariable"
INSTANCE_VARIABLE = "gitlab:index/instanceVariable:InstanceVariable"
APPLICATION_SETTINGS = "gitlab:index/applicationSettings:ApplicationSettings"


@resource_policy(
    name="gitlab-project-visibility",
    description="GitLab projects have an explicit visibility the stack allows (prod: private or internal).",
    remediation="set projectVisibility in Pulumi.<stack>.yaml to an allowed value (prod: private, which makes "
    "nodes and Flux pull with a read_registry deploy token), or widen allowedVisibilities in "
    "policy/config.<stack>.json.",
    resource_types=(PROJECT,),
    config={
        "allowedVisibilities": {
            "type": "array",
            "items": {"type": "string", "enum": ["private", "internal", "public"]},
            "default": ["private", "internal"],
            "description": "Visibility levels projects may have on this stack.",
        }
    },
    severity=Severity.HIGH,
)
def project_visibility(subject: Subject) -> Iterator[str]:
    visibility = get(subject.props, "visibilityLevel")
    allowed = list(subject.config["allowedVisibilities"])
    if visibility is None:
        yield (
            f"project {subject.name} leaves visibilityLevel to the instance default, which an administrator "
            "can change; set it explicitly."
        )
    elif visibility not in allowed:
        yield f"project {subject.name} is {visibility}; this stack allows {', '.join(allowed)}."


@resource_policy(
    name="gitlab-deploy-key-write-only-flux",
    description="Only Flux's deploy key may push (image automation commits tag bumps); every other deploy "
    "key is read-only.",
    remediation="set can_push=False, or give Flux's key a title starting with an allowed prefix "
    "(writeKeyTitlePrefixes).",
    resource_types=(DEPLOY_KEY, DEPLOY_KEY_ENABLE),
    config={
        "writeKeyTitlePrefixes": string_list(
            "Title prefixes (case-insensitive) of deploy keys allowed to push.", ["flux"]
        )
    },
    severity=Severity.HIGH,
)
def deploy_key_write_only_flux(subject: Subject) -> Iterator[str]:
    if not truthy(get(subject.props, "canPush")):
        return
    title = str(get(subject.props, "title", default=subject.name) or subject.name)
    prefixes = [prefix.lower() for prefix in subject.config["writeKeyTitlePrefixes"]]
    if not any(title.lower().startswith(prefix) for prefix in prefixes):
        yield f"deploy key {title!r} can push."


@resource_policy(
    name="gitlab-ci-credentials-masked",
    description="CI/CD variables whose key names a credential (TOKEN, PASSWORD, SECRET...) are masked in job logs.",
    remediation="set masked=True (the value must be a single line of 8+ characters; base64-encode a PEM or use "
    "a file variable holding base64).",
    resource_types=(PROJECT_VARIABLE, GROUP_VARIABLE, INSTANCE_VARIABLE),
    config={
        "credentialKeyPattern": {
            "type": "string",
            "default": "TOKEN|PASSWORD|PASSWD|SECRET|PRIVATE_KEY|CREDENTIAL",
            "description": "Regular expression (case-insensitive) matched against variable keys.",
        }
    },
    severity=Severity.HIGH,
)
def ci_credentials_masked(subject: Subject) -> Iterator[str]:
    key = get(subject.props, "key")
    if not isinstance(key, str) or not re.search(subject.config["credentialKeyPattern"], key, re.IGNORECASE):
        return
    if not truthy(get(subject.props, "masked")):
        yield f"variable {key} is not masked: any job log that echoes it publishes the credential."


def _is_gitlab(resource_type: str) -> bool:
    return resource_type.startswith("gitlab:") or resource_type == "pulumi:providers:gitlab"


@stack_policy(
    name="gitlab-signup-disabled",
    description="A stack that manages GitLab also manages its application settings, with sign-up disabled "
    "(GitLab enables self-registration by default).",
    remediation="create gitlab.ApplicationSettings(signup_enabled=False, ...) with the GitLab provider.",
    severity=Severity.HIGH,
)
def signup_disabled(args: StackValidationArgs, _config: Any) -> Iterator[tuple[str, str | None]]:
    gitlab = [r for r in args.resources if _is_gitlab(r.resource_type)]
    settings = [r for r in gitlab if r.resource_type == APPLICATION_SETTINGS]
    for resource in settings:
        if get(resource.props, "signupEnabled") is not False:
            yield (
                f"application settings {resource.name} leave signupEnabled "
                f"{get(resource.props, 'signupEnabled')!r}: anyone who reaches GitLab can create an account.",
                resource.urn,
            )
    if gitlab and not settings:
        yield (
            "the stack manages GitLab resources but no gitlab.ApplicationSettings: sign-up stays at GitLab's "
            "default (enabled).",
            None,
        )


POLICIES = [project_visibility, deploy_key_write_only_flux, ci_credentials_masked]
STACK_POLICIES = [signup_disabled]
