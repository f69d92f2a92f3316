"""GitLab policies: visibility per stack, write access for Flux only, masked credentials, no sign-up."""

from __future__ import annotations

import pytest

from policy.tests import resources as r
from policy.tests.cases import Case
from tools.policy_runner import analyze, secret, stack_config_file

SETTINGS = r.application_settings(False)  # every stack that manages GitLab has them

CASES = [
    Case(
        "gitlab-project-visibility",
        "public-project-by-default-config",
        bad=[r.project(visibility="public"), SETTINGS],
        expect="project shark-application is public; this stack allows private, internal",
        good=[r.project(visibility="private"), SETTINGS],
    ),
    Case(
        "gitlab-project-visibility",
        "visibility-left-to-the-instance-default",
        bad=[r.project(visibility=None), SETTINGS],
        expect="leaves visibilityLevel to the instance default",
        good=[r.project(visibility="internal"), SETTINGS],
    ),
    Case(
        "gitlab-deploy-key-write-only-flux",
        "ci-key-with-write-access",
        bad=[r.deploy_key("ci-key", "ci-pusher", can_push=True), SETTINGS],
        expect="deploy key 'ci-pusher' can push",
        good=[r.deploy_key("ci-key", "ci-pusher", can_push=False), SETTINGS],
    ),
    Case(
        "gitlab-deploy-key-write-only-flux",
        "flux-key-is-the-one-that-pushes",
        bad=[r.deploy_key("flux-deploy-key", "argocd", can_push=True), SETTINGS],
        expect="can push",
        good=[r.deploy_key("flux-deploy-key", "flux-shark-application", can_push=True), SETTINGS],
    ),
    Case(
        "gitlab-ci-credentials-masked",
        "kube-token-unmasked",
        bad=[r.project_variable("KUBE_TOKEN", masked=False, value=secret("ZXlKaGJHY2lPaUpTVXpJMU5pSjk=")), SETTINGS],
        expect="variable KUBE_TOKEN is not masked",
        good=[r.project_variable("KUBE_TOKEN", masked=True, value=secret("ZXlKaGJHY2lPaUpTVXpJMU5pSjk=")), SETTINGS],
    ),
    Case(
        "gitlab-ci-credentials-masked",
        "registry-password-masked-unset",
        bad=[r.project_variable("REGISTRY_PASSWORD", masked=None), SETTINGS],
        expect="REGISTRY_PASSWORD is not masked",
        good=[r.project_variable("KUBE_URL", masked=None, value="https://10.42.0.10:6443"), SETTINGS],
    ),
    Case(
        "gitlab-signup-disabled",
        "signup-left-enabled",
        bad=[r.project(), r.application_settings(True)],
        expect="leave signupEnabled True",
        good=[r.project(), r.application_settings(False)],
    ),
    Case(
        "gitlab-signup-disabled",
        "gitlab-managed-without-settings",
        bad=[r.project()],
        expect="no gitlab.ApplicationSettings",
        good=[r.project(), r.application_settings(False)],
    ),
]


@pytest.mark.parametrize(("stack", "public_allowed"), [("dev", True), ("prod", False)])
def test_a_public_project_is_a_dev_only_choice(stack: str, public_allowed: bool) -> None:
    report = analyze([r.project(visibility="public"), SETTINGS], config_file=stack_config_file(stack))
    assert (report.of("gitlab-project-visibility") == []) is public_allowed


def test_a_stack_without_gitlab_needs_no_gitlab_settings() -> None:
    assert analyze([r.vpc()]).of("gitlab-signup-disabled") == []
