"""GitLab's view of the cluster: the tutorial's section 4, automated, in one of two integrations.

Both: the tutorial's ServiceAccount `gitlab-admin` (kube-system) bound to `cluster-admin`; it is the
identity GitLab acts as in the cluster.

``clusterIntegration: agent`` (default, GitLab's supported integration): the agent `k8s-cluster`
registered in the app project with its token (a secret end to end: GitLab -> Pulumi state -> the
Secret agentk reads), its configuration file on the default branch (CI access for the push
pipeline's deployment job; with kubernetesDashboard, GitLab's dashboard for the members of a private
operators project only), agentk from GitLab's chart running as `gitlab-admin`, a step on the control
plane that restarts agentk for a new token and names the pods that run now, and a step on the GitLab
host that ends only when GitLab's agent server reports one of them connected. No long-lived token
exists, GitLab needs no route to the API server, no KUBE_* variable, and no GitLab credential goes to
the cluster.

``clusterIntegration: certificate`` (legacy, GitLab < 20.0): a long-lived token Secret for
`gitlab-admin`, the project's certificate-based cluster "k8s cluster", and the CI/CD variables
KUBE_URL, KUBE_TOKEN and KUBE_CA_PEM_FILE the push pipeline's deployment job uses, set explicitly so
it works where GitLab no longer injects them from a cluster.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_gitlab as gitlab
import pulumi_kubernetes as k8s

from components import gitlab_agent as agent_spec
from components import versions
from components.config import OPERATORS_PROJECT, StackConfig
from components.hosts import SshAccess
from components.remote import remote_step

SERVICE_ACCOUNT = "gitlab-admin"
NAMESPACE = "kube-system"
TOKEN_SECRET = "gitlab-admin-token"
CLUSTER_NAME = "k8s cluster"  # the tutorial's name in GitLab
# agentk dials KAS within seconds of starting; GitLab answers for it once KAS has the connection.
AGENT_CONNECT_TIMEOUT_SECONDS = 600
# What `gitlab-rails runner` may take to start on the GitLab host, on top of that wait.
RAILS_RUNNER_BOOT_SECONDS = 300
# agentk's pods: rolled out (a restart for a new token included) within this; then their log is
# watched this long for errors no waiting fixes (userdata/agent/agentk-rollout.sh).
AGENTK_ROLLOUT_TIMEOUT_SECONDS = 300
AGENTK_LOG_GRACE_SECONDS = 15


@dataclass(frozen=True)
class HostAccess:
    """Where a step runs over SSH: the control plane (KubeadmCluster.control_plane_*, the admin
    kubeconfig) or the GitLab host (GitLabHost.public_ip/instance_id, the GitLab container)."""

    ssh_host: pulumi.Input[str]
    instance_id: pulumi.Input[str]
    ssh: SshAccess


@dataclass(frozen=True)
class GitLabIntegrationArgs:
    config: StackConfig
    project_id: pulumi.Input[str]
    project_path: pulumi.Input[str]  # <namespace>/<project>: what ci_access and CI contexts name
    namespace_id: pulumi.Input[int]  # the daily admin's namespace: the dashboard's operators project lands there
    api_url: pulumi.Input[str]  # the cluster's private API URL: GitLab reaches it inside the VPC
    ca_pem: pulumi.Input[str]  # the cluster's CA
    kubernetes_provider: pulumi.ProviderResource
    gitlab_provider: pulumi.ProviderResource  # the project Owner's (GitLabHost.owner_provider)
    gitlab_hostname: pulumi.Input[str]
    gitlab_ca_pem: pulumi.Input[str]
    control_plane: HostAccess
    gitlab_host: HostAccess
    # The app's seed commits: the agent's configuration file is committed after them, one commit at a time.
    commit_after: Sequence[pulumi.Resource] = ()
    # GitLabHost.settings_effective: the step that turned on local requests and the
    # certificate_based_clusters flag and waited until every GitLab worker sees them.
    settings_effective: list[pulumi.Resource] = field(default_factory=list)


class GitLabIntegration(pulumi.ComponentResource):
    integration: str
    # What the app's first pipeline waits for: GitLab can reach the cluster the way its jobs will.
    ready: list[pulumi.Resource]
    # agent mode
    agent_id: pulumi.Output[int] | None
    kube_context: pulumi.Output[str] | None
    agentk_version: str | None  # the agentk image tag the chart runs (v<GitLab version>)
    dashboard_project_url: pulumi.Output[str] | None  # kubernetesDashboard: the operators project
    # certificate mode
    token: pulumi.Output[str] | None
    cluster_id: pulumi.Output[str] | None

    def __init__(self, name: str, args: GitLabIntegrationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gitops:gitlab:GitLabIntegration", name, None, opts)
        self._name = name
        self._on_cluster = pulumi.ResourceOptions(parent=self, provider=args.kubernetes_provider)
        self._on_gitlab = pulumi.ResourceOptions(parent=self, provider=args.gitlab_provider)
        self.integration = args.config.cluster_integration
        self.agent_id = self.kube_context = self.token = self.cluster_id = None
        self.agentk_version = self.dashboard_project_url = None

        account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=SERVICE_ACCOUNT, namespace=NAMESPACE),
            opts=self._on_cluster,
        )
        # The tutorial's binding, now rbac.authorization.k8s.io/v1 (v1beta1 was removed in 1.22).
        # cluster-admin is what GitLab's certificate-based integration documents for RBAC clusters
        # and what GitLab's agent chart binds by default; the policy pack allows it for this one subject.
        binding = k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-crb",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=SERVICE_ACCOUNT),
            role_ref=k8s.rbac.v1.RoleRefArgs(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="cluster-admin"
            ),
            subjects=[k8s.rbac.v1.SubjectArgs(kind="ServiceAccount", name=SERVICE_ACCOUNT, namespace=NAMESPACE)],
            opts=self._on_cluster,
        )
        if self.integration == "agent":
            self.ready = self._agent(args, identity=[account, binding])
        else:
            self.ready = self._certificate(args, account)
        self.register_outputs({"integration": self.integration, "kube_context": self.kube_context})

    # ---- agent mode -------------------------------------------------------------------------------
    def _agent(self, args: GitLabIntegrationArgs, identity: list[pulumi.Resource]) -> list[pulumi.Resource]:
        name, config = self._name, args.config
        agent = gitlab.ClusterAgent(
            f"{name}-agent", project=args.project_id, name=agent_spec.AGENT_NAME, opts=self._on_gitlab
        )
        # At most two active tokens per agent (Clusters::AgentTokens::CreateService): a replacement
        # creates the new one before it revokes the old one, so one token at a time is the rule.
        token = gitlab.ClusterAgentToken(
            f"{name}-agent-token",
            project=args.project_id,
            agent_id=agent.agent_id,
            name=f"agentk-{config.project}-{config.stack}",
            description="agentk in the kubeadm cluster (kube-system/gitlab-agent-token; components/gitlab_integration.py)",
            opts=self._on_gitlab,
        )
        self.agent_id = agent.agent_id
        self.kube_context = pulumi.Output.from_input(args.project_path).apply(agent_spec.kube_context)

        # kubernetesDashboard: who may use the agent through GitLab (dashboard, Kubernetes API proxy) is
        # whoever is Developer+ in this private project, created by the daily admin (its Owner, its only
        # member), and GitLab's instance admins. Not the app project: its Developers would get
        # cluster-admin. Same top-level namespace as the agent's project, as user_access requires
        # (Authorizations::UserAccess::RefreshService: root_ancestor.all_projects).
        operators_path: pulumi.Input[str | None] = None
        if config.kubernetes_dashboard:
            operators = gitlab.Project(
                f"{name}-operators",
                name=OPERATORS_PROJECT,
                path=OPERATORS_PROJECT,
                namespace_id=args.namespace_id,
                description=(
                    "Its members (Developer or higher) and GitLab's administrators use the GitLab agent "
                    f"{agent_spec.AGENT_NAME} as cluster-admin: dashboard for Kubernetes, Kubernetes API proxy "
                    "(set by Pulumi, kubernetesDashboard)"
                ),
                visibility_level="private",
                # Nothing runs or is stored here: it only carries a membership.
                builds_access_level="disabled",
                container_registry_access_level="disabled",
                packages_enabled=False,
                auto_devops_enabled=False,
                shared_runners_enabled=False,
                opts=self._on_gitlab,
            )
            operators_path = operators.path_with_namespace
            self.dashboard_project_url = operators.web_url
        # Read by KAS from the default branch when agentk connects (and every poll period after):
        # committed before agentk starts, it authorizes CI from the first connection on.
        agent_config = gitlab.RepositoryFile(
            f"{name}-agent-config",
            project=args.project_id,
            branch=config.default_branch,
            file_path=agent_spec.AGENT_CONFIG_PATH,
            content=pulumi.Output.all(args.project_path, operators_path).apply(
                lambda paths: agent_spec.agent_config(paths[0], paths[1])
            ),
            encoding="text",
            overwrite_on_create=True,
            create_commit_message=f"[skip ci] Configure the GitLab agent {agent_spec.AGENT_NAME}",
            update_commit_message=f"[skip ci] Configure the GitLab agent {agent_spec.AGENT_NAME}",
            delete_commit_message=f"[skip ci] Remove the GitLab agent {agent_spec.AGENT_NAME}",
            author_name="Pulumi",
            author_email="pulumi@localhost",
            opts=pulumi.ResourceOptions.merge(self._on_gitlab, pulumi.ResourceOptions(depends_on=[*args.commit_after])),
        )
        # The token as agentk reads it (key `token`, in the chart's namespace), an Opaque Secret: not a
        # service-account token, and nothing the chart's release stores.
        token_secret = k8s.core.v1.Secret(
            f"{name}-agent-token-secret",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=agent_spec.TOKEN_SECRET, namespace=agent_spec.NAMESPACE),
            type="Opaque",
            string_data={agent_spec.TOKEN_SECRET_KEY: pulumi.Output.secret(token.token)},
            opts=self._on_cluster,
        )
        self.agentk_version = agentk_tag = versions.agentk_tag(config.gitlab_image_tag)
        # Nothing here depends on the token: a token replacement leaves every value known in preview.
        values = pulumi.Output.all(args.gitlab_hostname, args.gitlab_ca_pem).apply(
            lambda v: agent_spec.chart_values(hostname=v[0], ca_pem=v[1], agentk_tag=agentk_tag)
        )
        chart = k8s.helm.v4.Chart(
            f"{name}-agentk",
            chart=versions.GITLAB_AGENT_CHART,
            version=versions.GITLAB_AGENT_CHART_VERSION,
            repository_opts=k8s.helm.v4.RepositoryOptsArgs(repo=versions.GITLAB_AGENT_CHART_REPOSITORY),
            name=agent_spec.RELEASE,
            namespace=agent_spec.NAMESPACE,
            values=values,
            # A remote component: the provider's Construct registers the rendered objects as its
            # children, which take the providers map the component is registered with. `providers`
            # is the option meant "for this resource and child resources" (pulumi ResourceOptions);
            # `provider=` only reaches them because the Python SDK folds it into that map
            # (pulumi-kubernetes#3684: other SDKs have not).
            opts=pulumi.ResourceOptions(
                parent=self,
                providers=[args.kubernetes_provider],
                depends_on=[*identity, token_secret, agent_config],
            ),
        )
        # On the control plane, with admin.conf only: restart agentk when the token is new, wait for
        # the rollout, and name the pods that run now (the token's id re-runs it).
        rollout = remote_step(
            f"{name}-agentk-rollout",
            host=args.control_plane.ssh_host,
            private_key=args.control_plane.ssh.private_key_openssh,
            script="agent/agentk-rollout.sh",
            env={
                "AGENT_NAMESPACE": agent_spec.NAMESPACE,
                "POD_SELECTOR": agent_spec.POD_SELECTOR,
                "AGENTK_IMAGE": agent_spec.agentk_image(agentk_tag),
                "AGENT_TOKEN_ID": token.token_id.apply(str),
                "TOKEN_ANNOTATION": agent_spec.TOKEN_ID_ANNOTATION,
                "TIMEOUT_SECONDS": str(AGENTK_ROLLOUT_TIMEOUT_SECONDS),
                "LOG_GRACE_SECONDS": str(AGENTK_LOG_GRACE_SECONDS),
            },
            triggers=[args.control_plane.instance_id],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[chart, token_secret]),
        )
        # A Ready Deployment says nothing about the connection (agentk's readiness probe does not
        # check KAS): on the GitLab host, GitLab itself is asked, with no token, until its agent
        # server reports one of those pods connected. The old token is revoked only after this.
        program = pulumi.Output.all(agent.agent_id, token.token_id, args.project_path, rollout.stdout).apply(
            lambda v: agent_spec.connection_program(
                agent_id=int(v[0]),
                token_id=int(v[1]),
                project_path=v[2],
                agent_name=agent_spec.AGENT_NAME,
                agentk_tag=agentk_tag,
                pods=agent_spec.agentk_pods(v[3]),
                timeout_seconds=AGENT_CONNECT_TIMEOUT_SECONDS,
            )
        )
        connected = remote_step(
            f"{name}-agent-connected",
            host=args.gitlab_host.ssh_host,
            private_key=args.gitlab_host.ssh.private_key_openssh,
            script="agent/wait-connected.sh",
            env={
                "TIMEOUT_SECONDS": str(AGENT_CONNECT_TIMEOUT_SECONDS),
                "RUNNER_BOOT_SECONDS": str(RAILS_RUNNER_BOOT_SECONDS),
                "AGENT_NAMESPACE": agent_spec.NAMESPACE,
                "POD_SELECTOR": agent_spec.POD_SELECTOR,
            },
            stdin=program,
            triggers=[args.gitlab_host.instance_id],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[rollout, agent_config]),
        )
        # GitLab's Kubernetes API proxy serves GitLab's certificate; the KUBECONFIG it injects has no CA.
        ca_variable = gitlab.ProjectVariable(
            f"{name}-gitlab-ca",
            project=args.project_id,
            key=agent_spec.CA_VARIABLE,
            value=args.gitlab_ca_pem,
            variable_type="file",  # jobs get the path of a file holding the PEM
            protected=False,  # a public certificate
            description="CA of GitLab's certificate, for its Kubernetes API proxy (set by Pulumi)",
            opts=self._on_gitlab,
        )
        return [connected, ca_variable]

    # ---- certificate mode ------------------------------------------------------------------------
    def _certificate(self, args: GitLabIntegrationArgs, account: pulumi.Resource) -> list[pulumi.Resource]:
        name = self._name
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
                self._on_cluster,
                pulumi.ResourceOptions(
                    depends_on=[account],
                    custom_timeouts=pulumi.CustomTimeouts(create="5m"),
                    additional_secret_outputs=["data"],
                ),
            ),
        )
        self.token = token = pulumi.Output.secret(token_secret.data.apply(_decoded_token))

        cluster = gitlab.ProjectCluster(
            f"{name}-cluster",
            project=args.project_id,
            name=CLUSTER_NAME,
            kubernetes_api_url=args.api_url,
            kubernetes_token=token,
            kubernetes_ca_cert=args.ca_pem,
            kubernetes_authorization_type="rbac",  # "RBAC-enabled cluster: yes"
            managed=False,  # "GitLab-managed cluster: no"
            environment_scope="*",
            enabled=True,
            # GitLab validates the private API URL against its URL blocker and answers 404 without
            # the flag, each read from a per-worker cache: start only once both are effective.
            opts=pulumi.ResourceOptions.merge(
                self._on_gitlab, pulumi.ResourceOptions(depends_on=args.settings_effective)
            ),
        )
        self.cluster_id = cluster.id

        # GitLab protects the default branch of a new project, and pipelines on it see protected
        # variables: protecting them keeps the cluster token away from pipelines of other branches.
        return [
            gitlab.ProjectVariable(
                f"{name}-kube-url",
                project=args.project_id,
                key="KUBE_URL",
                value=args.api_url,
                protected=True,
                description="Private API URL of the kubeadm cluster (set by Pulumi)",
                opts=self._on_gitlab,
            ),
            gitlab.ProjectVariable(
                f"{name}-kube-token",
                project=args.project_id,
                key="KUBE_TOKEN",
                value=token,
                masked=True,
                protected=True,
                raw=True,
                description="Token of ServiceAccount kube-system/gitlab-admin (set by Pulumi)",
                opts=self._on_gitlab,
            ),
            gitlab.ProjectVariable(
                f"{name}-kube-ca",
                project=args.project_id,
                key="KUBE_CA_PEM_FILE",
                value=args.ca_pem,
                variable_type="file",  # jobs get a path to a file holding the PEM, as GitLab did
                protected=True,
                description="CA certificate of the kubeadm cluster (set by Pulumi)",
                opts=self._on_gitlab,
            ),
        ]


def _decoded_token(data: Mapping[str, str] | None) -> str:
    """data.token is base64 in the Secret; GitLab and kubectl want the JWT itself."""
    if not data or "token" not in data:
        raise ValueError(f"Secret {NAMESPACE}/{TOKEN_SECRET} has no data.token: the token controller did not fill it")
    return base64.b64decode(data["token"]).decode()
