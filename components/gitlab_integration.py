"""GitLab's view of the cluster: the tutorial's section 4, automated.

ServiceAccount `gitlab-admin` (kube-system) bound to `cluster-admin`, a long-lived token Secret for
it, the project's certificate-based cluster "k8s cluster", and the CI/CD variables KUBE_URL,
KUBE_TOKEN and KUBE_CA_PEM_FILE that the push pipeline's deployment job uses. The variables are
set explicitly so the push pipeline also works where GitLab no longer injects them from a cluster.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_gitlab as gitlab
import pulumi_kubernetes as k8s

SERVICE_ACCOUNT = "gitlab-admin"
NAMESPACE = "kube-system"
TOKEN_SECRET = "gitlab-admin-token"
CLUSTER_NAME = "k8s cluster"  # the tutorial's name in GitLab


@dataclass(frozen=True)
class GitLabIntegrationArgs:
    project_id: pulumi.Input[str]
    api_url: pulumi.Input[str]  # the cluster's private API URL: GitLab reaches it inside the VPC
    ca_pem: pulumi.Input[str]
    kubernetes_provider: pulumi.ProviderResource
    gitlab_provider: pulumi.ProviderResource  # the project Owner's (GitLabHost.owner_provider)
    # GitLabHost.settings_effective: the step that turned on local requests and the
    # certificate_based_clusters flag and waited until every GitLab worker sees them.
    settings_effective: list[pulumi.Resource] = field(default_factory=list)


class GitLabIntegration(pulumi.ComponentResource):
    token: pulumi.Output[str]
    cluster_id: pulumi.Output[str]
    variables: list[gitlab.ProjectVariable]

    def __init__(self, name: str, args: GitLabIntegrationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gitops:gitlab:GitLabIntegration", name, None, opts)
        on_cluster = pulumi.ResourceOptions(parent=self, provider=args.kubernetes_provider)
        on_gitlab = pulumi.ResourceOptions(parent=self, provider=args.gitlab_provider)

        account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=SERVICE_ACCOUNT, namespace=NAMESPACE),
            opts=on_cluster,
        )
        # The tutorial's binding, now rbac.authorization.k8s.io/v1 (v1beta1 was removed in 1.22).
        # cluster-admin is what GitLab's certificate-based integration documents for RBAC clusters;
        # the policy pack allows it for this one subject only.
        k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-crb",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=SERVICE_ACCOUNT),
            role_ref=k8s.rbac.v1.RoleRefArgs(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="cluster-admin"
            ),
            subjects=[k8s.rbac.v1.SubjectArgs(kind="ServiceAccount", name=SERVICE_ACCOUNT, namespace=NAMESPACE)],
            opts=on_cluster,
        )
        # Since Kubernetes 1.24 no token Secret is made for a ServiceAccount: create one explicitly
        # (kubernetes.io "Manually create a long-lived API token for a ServiceAccount"). The
        # provider waits until the token controller has filled in data.token (pulumi-kubernetes
        # #2048) and fails the update after the create timeout otherwise.
        token_secret = k8s.core.v1.Secret(
            f"{name}-token",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=TOKEN_SECRET,
                namespace=NAMESPACE,
                annotations={"kubernetes.io/service-account.name": SERVICE_ACCOUNT},
            ),
            type="kubernetes.io/service-account-token",
            opts=pulumi.ResourceOptions.merge(
                on_cluster,
                pulumi.ResourceOptions(
                    depends_on=[account],
                    custom_timeouts=pulumi.CustomTimeouts(create="5m"),
                    additional_secret_outputs=["data"],
                ),
            ),
        )
        self.token = pulumi.Output.secret(token_secret.data.apply(_decoded_token))

        cluster = gitlab.ProjectCluster(
            f"{name}-cluster",
            project=args.project_id,
            name=CLUSTER_NAME,
            kubernetes_api_url=args.api_url,
            kubernetes_token=self.token,
            kubernetes_ca_cert=args.ca_pem,
            kubernetes_authorization_type="rbac",  # "RBAC-enabled cluster: yes"
            managed=False,  # "GitLab-managed cluster: no"
            environment_scope="*",
            enabled=True,
            # GitLab validates the private API URL against its URL blocker and answers 404 without
            # the flag, each read from a per-worker cache: start only once both are effective.
            opts=pulumi.ResourceOptions.merge(on_gitlab, pulumi.ResourceOptions(depends_on=args.settings_effective)),
        )
        self.cluster_id = cluster.id

        # GitLab protects the default branch of a new project, and pipelines on it see protected
        # variables: protecting them keeps the cluster token away from pipelines of other branches.
        self.variables = [
            gitlab.ProjectVariable(
                f"{name}-kube-url",
                project=args.project_id,
                key="KUBE_URL",
                value=args.api_url,
                protected=True,
                description="Private API URL of the kubeadm cluster (set by Pulumi)",
                opts=on_gitlab,
            ),
            gitlab.ProjectVariable(
                f"{name}-kube-token",
                project=args.project_id,
                key="KUBE_TOKEN",
                value=self.token,
                masked=True,
                protected=True,
                raw=True,
                description="Token of ServiceAccount kube-system/gitlab-admin (set by Pulumi)",
                opts=on_gitlab,
            ),
            gitlab.ProjectVariable(
                f"{name}-kube-ca",
                project=args.project_id,
                key="KUBE_CA_PEM_FILE",
                value=args.ca_pem,
                variable_type="file",  # jobs get a path to a file holding the PEM, as GitLab did
                protected=True,
                description="CA certificate of the kubeadm cluster (set by Pulumi)",
                opts=on_gitlab,
            ),
        ]
        self.register_outputs({"cluster_id": self.cluster_id})


def _decoded_token(data: Mapping[str, str] | None) -> str:
    """data.token is base64 in the Secret; GitLab and kubectl want the JWT itself."""
    if not data or "token" not in data:
        raise ValueError(f"Secret {NAMESPACE}/{TOKEN_SECRET} has no data.token: the token controller did not fill it")
    return base64.b64decode(data["token"]).decode()
