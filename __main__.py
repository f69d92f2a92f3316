"""Composition root: read the configuration, build the components, export what a user needs.

Reads like the architecture diagram in the README; each concept lives in components/.
"""

import pulumi

from components.app_project import AppProject, AppProjectArgs
from components.backup_layout import dlm_target_tag
from components.backups import Backups
from components.cluster import KubeadmCluster, KubeadmClusterArgs
from components.config import load_config
from components.flux import Flux, FluxArgs
from components.gitlab_agent import AGENT_NAME
from components.gitlab_host import GitLabHost, GitLabHostArgs
from components.gitlab_integration import GitLabIntegration, GitLabIntegrationArgs, HostAccess
from components.hosts import SshAccess
from components.network import Network, NetworkArgs
from components.remote import operator_ssh_key_step
from components.runners import Runners, RunnersArgs

config = load_config()

network = Network("gitops", NetworkArgs(config=config))
# The Pulumi-made admin SSH key every host accepts; remote steps use its private half.
ssh = SshAccess("gitops-ssh", config)
# The stack's backup bucket, registered whether backups are on or off: it is protected, so a stack
# that once had backups keeps it (and its retention) when `backups` turns false. With backups on,
# the GitLab host and the control plane plug their backups in below.
backups = Backups("backups", config)

gitlab_host = GitLabHost(
    "gitlab",
    GitLabHostArgs(
        config=config,
        subnet_id=network.subnet_ids[0],
        availability_zone=network.availability_zones[0],
        gitlab_security_group_id=network.gitlab_security_group_id,
        cluster_security_group_id=network.cluster_security_group_id,
        ssh=ssh,
        before_install=backups.gitlab_before_install if config.backups else None,
    ),
)
if config.backups:
    backups.gitlab_snapshots(dlm_target_tag(config.project, config.stack))

# operatorSshPublicKey follows the configuration on the GitLab host too (its user data is first-boot only).
operator_ssh_key_step(
    "gitlab-operator-ssh-key", config, ssh, host=gitlab_host.public_ip, instance_id=gitlab_host.instance_id
)

# The nodes trust GitLab's registry from the start: its CA and host:port are known before the
# GitLab instance is up, so the cluster never waits for GitLab.
cluster = KubeadmCluster(
    "gitops-k8s",
    KubeadmClusterArgs(
        config=config,
        vpc_id=network.vpc_id,
        subnet_ids=network.subnet_ids,
        cluster_security_group_id=network.cluster_security_group_id,
        gitlab_security_group_id=network.gitlab_security_group_id,
        registry_host=gitlab_host.registry_host,
        registry_ca_pem=gitlab_host.ca_pem,
        ssh=ssh,
        pre_upgrade=backups.etcd_pre_upgrade if config.backups else None,
        member_joined=backups.etcd_member_joined if config.backups else None,
    ),
)

# CI jobs run on their own VMs, never on the GitLab host: a runner manager scales an Auto Scaling
# group of job VMs between 0 and runnerMaxInstances.
runners = Runners(
    "runners",
    RunnersArgs(
        config=config,
        vpc_id=network.vpc_id,
        subnet_ids=network.subnet_ids,
        gitlab_security_group_id=network.gitlab_security_group_id,
        cluster_security_group_id=network.cluster_security_group_id,
        gitlab_hostname=gitlab_host.hostname,
        registry_host=gitlab_host.registry_host,
        gitlab_ca_pem=gitlab_host.ca_pem,
        gitlab_provider=gitlab_host.provider,
        ssh=ssh,
        api_security_group_id=cluster.api_security_group_id,
    ),
)

# The shark-app project (the tutorial's <user>/shark-application) and its files, then GitLab's view
# of the cluster (clusterIntegration: the agent, connected, or the legacy certificate-based cluster
# and its KUBE_* variables), then the pipeline: its commit starts the first pipeline, which needs that
# view. All of it through the daily admin's own token: the project's Owner makes every commit to its
# protected default branch.
app = AppProject(
    "shark-app",
    AppProjectArgs(
        config=config,
        gitlab_provider=gitlab_host.owner_provider,
        kubernetes_provider=cluster.provider,
        namespace_id=gitlab_host.admin_namespace_id,
        gitlab_hostname=gitlab_host.hostname,
        registry_host=gitlab_host.registry_host,
    ),
)
app.seed_files()
integration = GitLabIntegration(
    "gitlab-k8s",
    GitLabIntegrationArgs(
        config=config,
        project_id=app.project_id,
        project_path=app.path_with_namespace,
        namespace_id=gitlab_host.admin_namespace_id,
        api_url=cluster.private_api_url,
        ca_pem=cluster.ca_pem,
        kubernetes_provider=cluster.provider,
        gitlab_provider=gitlab_host.owner_provider,
        gitlab_hostname=gitlab_host.hostname,
        gitlab_ca_pem=gitlab_host.ca_pem,
        control_plane=HostAccess(cluster.control_plane_ssh_host, cluster.control_plane_instance_id, ssh),
        gitlab_host=HostAccess(gitlab_host.public_ip, gitlab_host.instance_id, ssh),
        commit_after=app.seed_commits,
        settings_effective=gitlab_host.settings_effective,
    ),
)
app.seed_pipeline(after=integration.ready)

# Pull delivery: Flux watches the project and commits new image tags back to it.
flux = None
if config.delivery == "pull":
    flux = Flux(
        "flux",
        FluxArgs(
            config=config,
            kubernetes_provider=cluster.provider,
            gitlab_provider=gitlab_host.owner_provider,
            project_id=app.project_id,
            ssh_url=app.ssh_url,
            image_repository=app.image_repository,
            known_hosts=gitlab_host.ssh_known_hosts,
            gitlab_ca_pem=gitlab_host.ca_pem,
            registry_dockerconfigjson=app.pull_secret_dockerconfigjson,
        ),
    )

pulumi.export("vpcId", network.vpc_id)
pulumi.export("subnetIds", network.subnet_ids)
pulumi.export("availabilityZones", network.availability_zones)

pulumi.export("gitlabUrl", gitlab_host.url)
pulumi.export("gitlabRegistryHost", gitlab_host.registry_host)
pulumi.export("gitlabCaPem", gitlab_host.ca_pem)
pulumi.export("gitlabSshKnownHosts", gitlab_host.ssh_known_hosts)
pulumi.export("gitlabRootPassword", gitlab_host.root_password)
pulumi.export("gitlabAdminUsername", gitlab_host.admin_username)
pulumi.export("gitlabAdminPassword", gitlab_host.admin_password)
# The daily admin's token: commits to the app project's protected default branch as its Owner.
pulumi.export("gitlabAdminUserToken", gitlab_host.admin_user_token)
pulumi.export("gitlabAdminToken", gitlab_host.admin_token)
pulumi.export("gitlabAdminTokenExpiresAt", gitlab_host.admin_token_expires_at)
pulumi.export("gitlabRunnerId", runners.runner_id)
pulumi.export("runnerManagerIp", runners.manager_public_ip)
pulumi.export("runnerAutoscalingGroup", runners.group_name)

pulumi.export("kubernetesApiUrl", cluster.public_api_url)
pulumi.export("kubernetesPrivateApiUrl", cluster.private_api_url)
pulumi.export("kubeconfig", cluster.kubeconfig)
pulumi.export("clusterCaPem", cluster.ca_pem)
pulumi.export("kubernetesVersion", cluster.kubernetes_version)
pulumi.export("clusterCertificatesExpireAt", cluster.certificates_expire_at)
pulumi.export("nodes", cluster.nodes)
pulumi.export("appUrls", cluster.app_urls)

pulumi.export("appProjectUrl", app.web_url)
pulumi.export("appProjectSshUrl", app.ssh_url)
pulumi.export("appImageRepository", app.image_repository)
pulumi.export("delivery", config.delivery)
pulumi.export("clusterIntegration", config.cluster_integration)
if integration.kube_context is not None:
    # The agent CI jobs deploy through: `kubectl config use-context <kubeContext>` in a job.
    pulumi.export(
        "gitlabAgent",
        {
            "name": AGENT_NAME,
            "id": integration.agent_id,
            "projectPath": app.path_with_namespace,
            "kubeContext": integration.kube_context,
            # The agentk the stack runs: `make doctor` compares what GitLab reports with it.
            "agentkVersion": integration.agentk_version,
        },
    )
if integration.dashboard_project_url is not None:
    # kubernetesDashboard: whose members use GitLab's dashboard for Kubernetes (README: security model).
    pulumi.export("kubernetesDashboardProjectUrl", integration.dashboard_project_url)
pulumi.export("backupBucket", backups.bucket_name)
pulumi.export("backupRegion", backups.region)
if config.backups:
    # Only with backups on: `make doctor` checks the backups' age when it finds this output.
    pulumi.export("etcdSnapshotIntervalMinutes", config.etcd_snapshot_interval_minutes)
if flux is not None:
    pulumi.export("fluxNamespace", flux.namespace)
    pulumi.export("fluxObjects", flux.object_names)
    pulumi.export("fluxWatchCommand", flux.watch_command)
