"""Stack policies: credentials stay Pulumi secrets, Kubernetes Secrets hold generated material."""

from __future__ import annotations

import pytest

from policy.gitops_policies.stack import credential_material
from policy.tests import resources as r
from policy.tests.cases import Case
from tools.policy_runner import analyze, secret

KEY = r.tls_key("gitops-admin-client-key")
UNDECLARED_KEY = r.tls_key("gitops-admin-client-key", declared_secret=False)
FLUX_KEY = r.tls_key("flux-deploy-key")

AGENT_TOKEN_SECRET = r.k8s_secret("gitlab-agent-token", {"token": "<token>"}, depends_on=[r.cluster_agent()])

CASES = [
    Case(
        "k8s-service-account-tokens",
        "agent-mode-with-a-long-lived-gitlab-admin-token",
        bad=[r.cluster_agent(), r.service_account_token("gitlab-admin"), r.application_settings(False)],
        expect="Secret kube-system/gitlab-admin-token is a long-lived token of ServiceAccount kube-system/gitlab-admin: "
        "the stack uses GitLab's agent",
        # agentk's own token is an Opaque Secret, not a ServiceAccount's.
        good=[r.cluster_agent(), AGENT_TOKEN_SECRET, r.application_settings(False)],
    ),
    Case(
        "k8s-service-account-tokens",
        "certificate-mode-token-of-another-account",
        bad=[r.project_cluster(), r.service_account_token("deployer", "default"), r.application_settings(False)],
        expect="long-lived token of ServiceAccount default/deployer: only the certificate-based integration's accounts",
        good=[r.project_cluster(), r.service_account_token("gitlab-admin"), r.application_settings(False)],
    ),
    Case(
        "k8s-service-account-tokens",
        "token-with-no-integration-that-needs-it",
        bad=[r.service_account_token("gitlab-admin")],
        expect="no certificate-based GitLab integration (gitlab.ProjectCluster) in the stack uses it",
        good=[r.service_account_token("gitlab-admin"), r.project_cluster(), r.application_settings(False)],
    ),
    Case(
        "credential-outputs-secret",
        "token-read-back-over-ssh-in-plain-stdout",
        bad=[r.remote_step("gitlab-seed-admin-token", stdout="glpat-0123456789abcdefghij\n", stdout_secret=False)],
        expect="Command gitlab-seed-admin-token: credential output(s) stdout missing from additionalSecretOutputs",
        good=[r.remote_step("gitlab-seed-admin-token", stdout="glpat-0123456789abcdefghij\n", stdout_secret=True)],
    ),
    Case(
        "credential-outputs-secret",
        "admin-kubeconfig-printed-by-a-step",
        bad=[
            r.remote_step(
                "gitops-k8s-fetch-kubeconfig",
                stdout=r.kubeconfig(r.private_key_pem(KEY)),
                stdout_secret=False,
                stdin=False,
            )
        ],
        expect="credential output(s) stdout missing",
        # A step printing a version (the kubeadm-version step) keeps a plain, exportable stdout.
        good=[r.remote_step("gitops-k8s-master-kubeadm-version", stdout="v1.34.5\n", stdout_secret=False, stdin=False)],
    ),
    Case(
        "credential-outputs-secret",
        "private-key-registered-without-its-secret-outputs",
        bad=[UNDECLARED_KEY],
        expect="credential output(s) privateKeyPem, privateKeyOpenssh, privateKeyPemPkcs8 missing",
        good=[KEY],
    ),
    Case(
        "credential-outputs-secret",
        "kubeconfig-export-with-a-pasted-key",
        bad=[KEY, r.exports(kubeconfig=r.kubeconfig(r.private_key_pem(r.tls_key("pasted"))))],
        expect="export kubeconfig carries a kubeconfig with credentials that does not come from any secret output",
        good=[KEY, r.exports(kubeconfig=secret(r.kubeconfig(r.private_key_pem(KEY))))],
    ),
    Case(
        "credential-outputs-secret",
        "token-exported-from-config",
        bad=[r.exports(gitlabApiToken="glpat-0123456789abcdefghij")],
        expect="export gitlabApiToken carries a GitLab token",
        good=[r.exports(gitlabUrl="https://ec2-198-51-100-20.compute-1.amazonaws.com")],
    ),
    Case(
        "k8s-secret-data-generated",
        "password-written-in-code",
        bad=[r.k8s_secret("app-db", {"password": "hunter2-hunter2"})],
        expect="Secret flux/app-db: stringData depends on no resource",
        good=[FLUX_KEY, r.k8s_secret("flux-git-deploy", {"identity": "<pem>"}, depends_on=[FLUX_KEY])],
    ),
    Case(
        "k8s-secret-data-generated",
        "secret-manifest-committed-to-git",
        bad=[
            r.repository_file(
                "kubernetes/secret.yml",
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app-db\nstringData:\n  password: hunter2\n",
            ),
            r.application_settings(False),
        ],
        expect="commits a Secret with data to Git",
        good=[
            r.repository_file(
                "kubernetes/service-account.yml",
                "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: shark-app\n",
            ),
            r.application_settings(False),
        ],
    ),
]


def test_the_service_account_token_secret_is_filled_by_kubernetes_not_by_code() -> None:
    """Certificate mode: the token Secret of gitlab-admin, its data filled in by the token controller."""
    token_secret = r.service_account_token("gitlab-admin")
    assert analyze([token_secret, r.project_cluster(), r.application_settings(False)]).violations == ()


def test_a_literal_secret_can_be_allowed_by_name() -> None:
    literal = r.k8s_secret("app-config", {"LOG_LEVEL": "info"})
    config = {"k8s-secret-data-generated": {"allowedLiteralSecrets": ["flux/app-config"]}}
    assert analyze([literal], config=config).violations == ()


def test_a_violation_names_the_resource_it_is_about() -> None:
    report = analyze([UNDECLARED_KEY])
    assert [v.resource for v in report.of("credential-outputs-secret")] == ["gitops-admin-client-key"]


def test_a_random_string_is_a_public_value() -> None:
    """A kubeadm token id is public (it names the token's Secret); credentials come from RandomPassword."""
    assert analyze([r.random_string("gitops-k8s-token-id", declared_secret=False)]).violations == ()


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (
            r.kubeconfig("-----BEGIN PRIVATE KEY-----\nMC4C\n-----END PRIVATE KEY-----\n"),
            "a kubeconfig with credentials",
        ),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n", "a private key"),
        ("glrt-t1_AbCdEfGhIjKlMnOpQrSt", "a GitLab token"),
        ("abcdef.0123456789abcdef", "a kubeadm bootstrap token"),
        ("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", None),
        ("ssh://git@gitlab.example.test:2222/operator/shark-application.git", None),
        ("[gitlab.example.test]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB", None),
    ],
)
def test_credential_material(text: str, kind: str | None) -> None:
    assert credential_material(text) == kind
