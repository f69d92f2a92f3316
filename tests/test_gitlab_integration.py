"""GitLab's view of the cluster in both integrations: the agent (default) and the certificate-based cluster."""

from __future__ import annotations

import base64
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from components import gitlab_agent, versions
from components.app_manifests import pipeline
from components.config import parse_config
from tests.conftest import ADMIN
from tools.harness import ProgramRun, is_secret_value, plain, run_fixture_stack

FILE = "gitlab:index/repositoryFile:RepositoryFile"
VARIABLE = "gitlab:index/projectVariable:ProjectVariable"
CLUSTER = "gitlab:index/projectCluster:ProjectCluster"
AGENT = "gitlab:index/clusterAgent:ClusterAgent"
AGENT_TOKEN = "gitlab:index/clusterAgentToken:ClusterAgentToken"
SECRET = "kubernetes:core/v1:Secret"
CHART = "kubernetes:helm.sh/v4:Chart"
COMMAND = "command:remote:Command"
OWNER_PROVIDER = "gitlab-gitlab-owner"
AGENT_CONFIG = ".gitlab/agents/k8s-cluster/config.yaml"


@pytest.fixture(scope="module")
def certificate() -> ProgramRun:
    return run_fixture_stack("dev", {**ADMIN, "clusterIntegration": "certificate"})


@pytest.fixture(scope="module")
def agent_push() -> ProgramRun:
    return run_fixture_stack("dev", {**ADMIN, "delivery": "push"})


def _variables(run: ProgramRun) -> dict[str, dict]:
    return {r.inputs["key"]: r.inputs for r in run.all(VARIABLE)}


def _files(run: ProgramRun) -> dict[str, object]:
    return {plain(r.inputs["filePath"]): r for r in run.all(FILE)}


def _token_secrets(run: ProgramRun) -> list:
    return [r for r in run.all(SECRET) if r.inputs.get("type") == "kubernetes.io/service-account-token"]


def _step_env(run: ProgramRun, name: str) -> dict[str, str]:
    words = shlex.split(run.one(COMMAND, name).plain_inputs["create"])
    return dict(word.split("=", 1) for word in words[2 : words.index("bash")])


# --------------------------------------------------------------------------------------------
# Both integrations: the tutorial's identity
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("integration", ["agent", "certificate"])
def test_gitlab_admin_is_bound_to_cluster_admin_in_both_integrations(run_stack, integration: str) -> None:
    run = run_stack("dev", clusterIntegration=integration)
    account = run.one("kubernetes:core/v1:ServiceAccount")
    assert account.inputs["metadata"] == {"name": "gitlab-admin", "namespace": "kube-system"}
    binding = run.one("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding")
    assert binding.inputs["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "cluster-admin",
    }
    assert binding.inputs["subjects"] == [
        {"kind": "ServiceAccount", "name": "gitlab-admin", "namespace": "kube-system"}
    ]
    assert run.outputs["clusterIntegration"] == integration


# --------------------------------------------------------------------------------------------
# Agent mode (the default)
# --------------------------------------------------------------------------------------------
def test_the_agent_is_registered_in_the_app_project_by_its_owner(dev) -> None:
    agent = dev.one(AGENT)
    project = dev.one("gitlab:index/project:Project")
    assert agent.inputs["name"] == "k8s-cluster"
    assert agent.inputs["project"] == project.id
    owner = dev.one("pulumi:providers:gitlab", OWNER_PROVIDER).urn
    for registration in (agent, dev.one(AGENT_TOKEN), _files(dev)[AGENT_CONFIG]):
        assert registration.provider.startswith(owner), registration.name
    path = project.state["pathWithNamespace"]
    assert dev.outputs["gitlabAgent"] == {
        "name": "k8s-cluster",
        "id": agent.state["agentId"],
        "projectPath": path,
        "kubeContext": f"{path}:k8s-cluster",
        "agentkVersion": "v19.4.1",
    }


def test_agent_mode_keeps_no_long_lived_token_no_project_cluster_and_no_kube_variables(dev) -> None:
    assert dev.outputs["clusterIntegration"] == "agent"
    assert _token_secrets(dev) == [], "no kubernetes.io/service-account-token Secret in agent mode"
    assert dev.all(CLUSTER) == []
    assert set(_variables(dev)) == {"GITLAB_CA_PEM_FILE"}
    variable = _variables(dev)["GITLAB_CA_PEM_FILE"]
    assert variable["variableType"] == "file" and variable["value"] == dev.outputs["gitlabCaPem"]


def test_the_agent_token_travels_as_a_secret_into_the_secret_agentk_reads(dev) -> None:
    token = dev.one(AGENT_TOKEN)
    agent = dev.one(AGENT)
    assert token.inputs["agentId"] == agent.state["agentId"]
    assert token.inputs["project"] == agent.inputs["project"]
    secret = dev.one(SECRET, "gitlab-k8s-agent-token-secret")
    assert secret.inputs["metadata"] == {"name": "gitlab-agent-token", "namespace": "kube-system"}
    assert secret.inputs["type"] == "Opaque", "a plain Secret, not a service-account token"
    assert is_secret_value(secret.inputs["stringData"]), "the agent token reaches the cluster as a secret"
    assert plain(secret.inputs["stringData"]) == {"token": token.state["token"]}
    assert token.state["token"].startswith("glagent-")
    # The chart mounts that Secret (config.secretName); the token itself is never a chart value.
    chart = dev.one(CHART)
    assert chart.plain_inputs["values"]["config"]["secretName"] == "gitlab-agent-token"
    assert token.state["token"] not in repr(chart.plain_inputs)
    assert secret.urn in chart.depends_on


def test_the_agent_configuration_authorizes_only_the_deployment_job_by_default(dev) -> None:
    config_file = _files(dev)[AGENT_CONFIG]
    path = dev.one("gitlab:index/project:Project").state["pathWithNamespace"]
    document = yaml.safe_load(plain(config_file.inputs["content"]))
    assert document["ci_access"] == {
        "projects": [
            {
                "id": path,
                "access_as": {"agent": {}},
                "environments": ["test"],
                "protected_branches_only": True,
            }
        ]
    }
    # No user_access: GitLab's Kubernetes API proxy (dashboard, `glab`, k8s_proxy tokens) refuses every
    # user, instance admins included (AuthorizeProxyUserService: forbidden unless user_access is present).
    assert "user_access" not in document
    assert "kubernetesDashboardProjectUrl" not in dev.outputs
    assert [p.inputs["name"] for p in dev.all("gitlab:index/project:Project")] == ["shark-application"]
    assert config_file.inputs["branch"] == "main"
    assert "[skip ci]" in config_file.inputs["createCommitMessage"]
    assert "[skip ci]" in config_file.inputs["updateCommitMessage"]


@pytest.fixture(scope="module")
def dashboard() -> ProgramRun:
    return run_fixture_stack("dev", {**ADMIN, "kubernetesDashboard": True, "delivery": "push"})


def test_the_dashboard_is_for_a_private_operators_project_not_the_apps_members(dashboard) -> None:
    projects = {p.inputs["name"]: p for p in dashboard.all("gitlab:index/project:Project")}
    operators, app = projects["cluster-operators"], projects["shark-application"]
    assert operators.inputs["visibilityLevel"] == "private"
    assert operators.inputs["namespaceId"] == app.inputs["namespaceId"], "the agent's top-level namespace"
    owner = dashboard.one("pulumi:providers:gitlab", OWNER_PROVIDER).urn
    assert operators.provider.startswith(owner), "created by the daily admin: its Owner and only member"
    assert dashboard.all("gitlab:index/projectMembership:ProjectMembership") == []
    config_file = _files(dashboard)[AGENT_CONFIG]
    document = yaml.safe_load(plain(config_file.inputs["content"]))
    assert document["user_access"] == {
        "access_as": {"agent": {}},
        "projects": [{"id": operators.state["pathWithNamespace"]}],
    }, "only the operators project: the app's Developers get nothing"
    assert document["ci_access"]["projects"][0]["id"] == app.state["pathWithNamespace"]
    assert operators.urn in config_file.depends_on or operators.urn in {
        urn for urns in config_file.property_dependencies.values() for urn in urns
    }
    assert dashboard.outputs["kubernetesDashboardProjectUrl"] == operators.state["webUrl"]


def test_the_push_pipeline_is_not_tied_to_the_dashboard(dashboard) -> None:
    """GitLab links an environment to an agent from CI (environment:kubernetes:agent) only when the
    agent's user_access lists the job's own project (Deployments::UpdateEnvironmentService
    #matching_authorization): with the operators project alone it would be a silent no-op."""
    text = plain(_files(dashboard)[".gitlab-ci.yml"].inputs["content"])
    assert text == pipeline("push", "agent")
    assert "kubernetes" not in yaml.safe_load(text)["deployment"]["environment"]


def test_the_deployment_job_runs_in_the_environment_the_agent_authorizes() -> None:
    job = yaml.safe_load(pipeline("push", "agent"))["deployment"]
    assert job["environment"]["name"] == gitlab_agent.DEPLOY_ENVIRONMENT
    assert job["rules"] == [{"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"}], "a protected branch only"


def test_agentk_runs_as_gitlab_admin_without_rbac_of_its_own_and_trusts_gitlabs_ca(dev) -> None:
    chart = dev.one(CHART)
    inputs = chart.plain_inputs
    assert inputs["chart"] == "gitlab-agent" and inputs["version"] == versions.GITLAB_AGENT_CHART_VERSION
    assert inputs["repositoryOpts"] == {"repo": "https://charts.gitlab.io"}
    assert inputs["namespace"] == "kube-system" and inputs["name"] == "gitlab-agent"
    values = inputs["values"]
    assert values["serviceAccount"] == {"create": False, "name": "gitlab-admin"}
    assert values["rbac"] == {"create": False}
    assert values["config"]["operational_container_scanning"] == {"enabled": False}
    host = dev.outputs["gitlabUrl"].removeprefix("https://")
    assert values["config"]["kasAddress"] == f"wss://{host}/-/kubernetes-agent/"
    assert values["config"]["kasCaCert"] == dev.outputs["gitlabCaPem"]
    assert "caCert" not in values["config"], "config.caCert was removed in GitLab 17.0"
    assert "token" not in values["config"]
    assert values["image"] == {"repository": versions.AGENTK_IMAGE_REPOSITORY, "tag": "v19.4.1"}
    # The identity and the configuration exist before agentk starts.
    for name in ("gitlab-k8s-sa", "gitlab-k8s-crb", "gitlab-k8s-agent-config"):
        assert dev.named(name).urn in chart.depends_on, name


@pytest.mark.parametrize(("tag", "agentk"), [("18.11.11-ce.0", "v18.11.11"), ("19.2.4-ce.0", "v19.2.4")])
def test_agentk_follows_the_gitlab_version(run_stack, tag: str, agentk: str) -> None:
    run = run_stack("dev", gitlabImageTag=tag)
    assert run.one(CHART).plain_inputs["values"]["image"]["tag"] == agentk
    assert _step_env(run, "gitlab-k8s-agentk-rollout")["AGENTK_IMAGE"] == f"{versions.AGENTK_IMAGE_REPOSITORY}:{agentk}"
    program = plain(run.one(COMMAND, "gitlab-k8s-agent-connected").inputs["stdin"])
    assert f'"agentk_version": "{agentk[1:]}"' in program


def _hosts(run: ProgramRun) -> dict[str, str]:
    """Public address -> host name, for the GitLab host and every cluster node."""
    nodes = {node["publicIp"]: node["name"] for node in run.outputs["nodes"]}
    gitlab = run.one(COMMAND, "gitlab-seed-admin-token").plain_inputs["connection"]["host"]
    return {**nodes, gitlab: "gitlab"}


def test_the_rollout_step_restarts_agentk_for_its_token_on_the_control_plane(dev) -> None:
    step = dev.one(COMMAND, "gitlab-k8s-agentk-rollout")
    env = _step_env(dev, "gitlab-k8s-agentk-rollout")
    assert _hosts(dev)[step.plain_inputs["connection"]["host"]] == "master", "admin.conf is there"
    assert env["AGENT_TOKEN_ID"] == str(dev.one(AGENT_TOKEN).state["tokenId"]), "a new token runs it again"
    assert env["TOKEN_ANNOTATION"] == "gitops/agent-token-id"
    assert env["AGENT_NAMESPACE"] == "kube-system"
    assert env["POD_SELECTOR"] == "app.kubernetes.io/name=gitlab-agent,app.kubernetes.io/instance=gitlab-agent"
    assert int(env["TIMEOUT_SECONDS"]) <= 600 and int(env["LOG_GRACE_SECONDS"]) <= 60, "bounded"
    assert "stdin" not in step.plain_inputs, "it needs no secret"
    for dependency in (dev.one(CHART).urn, dev.one(SECRET, "gitlab-k8s-agent-token-secret").urn):
        assert dependency in step.depends_on


def test_up_ends_only_when_gitlab_reports_the_pods_that_run_now_connected(dev) -> None:
    step = dev.one(COMMAND, "gitlab-k8s-agent-connected")
    env = _step_env(dev, "gitlab-k8s-agent-connected")
    assert _hosts(dev)[step.plain_inputs["connection"]["host"]] == "gitlab", "asked inside GitLab"
    assert int(env["TIMEOUT_SECONDS"]) <= 900 and int(env["RUNNER_BOOT_SECONDS"]) <= 600, "bounded"
    program = plain(step.inputs["stdin"])
    rollout = dev.one(COMMAND, "gitlab-k8s-agentk-rollout")
    pods = rollout.state["stdout"].strip().split(",")
    assert f'"pods": {json.dumps(pods)}' in program, "only the pods the rollout step found"
    assert f'"agent_id": {dev.outputs["gitlabAgent"]["id"]}' in program
    assert f'"token_id": {dev.one(AGENT_TOKEN).state["tokenId"]}' in program
    assert '"project_path": "operator/shark-application", "agent_name": "k8s-cluster"' in program
    assert "get_connected_agentks_by_agent_ids" in program
    assert rollout.urn in step.depends_on
    assert dev.named("gitlab-k8s-agent-config").urn in step.depends_on
    assert step.urn in [
        dependency for r in dev.all(FILE) if r.name.endswith("gitlab-ci-yml") for dependency in r.depends_on
    ]


@pytest.mark.parametrize("delivery", ["pull", "push"])
def test_no_gitlab_credential_reaches_a_cluster_node(run_stack, delivery: str) -> None:
    """A cluster-admin can read what a step on a node receives: no GitLab token, password or key may
    be among it (the daily admin's token would make cluster-admin a GitLab instance admin)."""
    run = run_stack("dev", delivery=delivery)
    credentials = {
        name: str(run.outputs[name])
        for name in ("gitlabAdminUserToken", "gitlabAdminToken", "gitlabRootPassword", "gitlabAdminPassword")
    }
    credentials["runner token"] = run.one("gitlab:index/userRunner:UserRunner").state["token"]
    hosts = _hosts(run)
    node_steps = [
        step for step in run.all(COMMAND) if hosts.get(step.plain_inputs["connection"]["host"], "gitlab") != "gitlab"
    ]
    for step in node_steps:
        sent = json.dumps({key: value for key, value in step.plain_inputs.items() if key != "connection"})
        for name, value in credentials.items():
            assert value not in sent, f"{name} reaches {step.name}"
    assert "gitlab-k8s-agentk-rollout" in {step.name for step in node_steps}


def test_the_push_pipeline_deploys_through_the_agents_context(agent_push) -> None:
    text = plain(_files(agent_push)[".gitlab-ci.yml"].inputs["content"])
    assert text == pipeline("push", "agent")
    job = yaml.safe_load(text)["deployment"]
    script = "\n".join(job["script"])
    assert job["variables"]["KUBE_CONTEXT"] == "$CI_PROJECT_PATH:k8s-cluster"
    assert 'kubectl config use-context "$KUBE_CONTEXT"' in script
    assert (
        'kubectl config set-cluster gitlab --certificate-authority="$GITLAB_CA_PEM_FILE" --embed-certs=true' in script
    )
    jobs = yaml.safe_load(text)
    scripts = "\n".join(line for job in jobs.values() if isinstance(job, dict) for line in job.get("script", []))
    assert "--insecure-skip-tls-verify" not in scripts
    assert "KUBE_TOKEN" not in scripts and "KUBE_URL" not in scripts
    # $CI_PROJECT_PATH in the job is the agent's project: the context the program exports.
    path = agent_push.outputs["gitlabAgent"]["projectPath"]
    assert (
        job["variables"]["KUBE_CONTEXT"].replace("$CI_PROJECT_PATH", path)
        == agent_push.outputs["gitlabAgent"]["kubeContext"]
    )


def test_agent_mode_asks_gitlab_for_nothing_the_certificate_cluster_needed(dev, certificate) -> None:
    """Local requests and the certificate_based_clusters flag: not turned on in agent mode, never off."""
    settings = dev.one("gitlab:index/applicationSettings:ApplicationSettings").plain_inputs
    assert "allowLocalRequestsFromWebHooksAndServices" not in settings
    seed = plain(dev.one(COMMAND, "gitlab-seed-admin-token").inputs["stdin"])
    assert "Feature.enable" not in seed and "update_columns" not in seed
    assert "Feature.disable" not in seed and "settings_changed = false" in seed
    cert_seed = plain(certificate.one(COMMAND, "gitlab-seed-admin-token").inputs["stdin"])
    assert "Feature.enable(:certificate_based_clusters)" in cert_seed


# --------------------------------------------------------------------------------------------
# Certificate mode (legacy)
# --------------------------------------------------------------------------------------------
def _token(run: ProgramRun) -> str:
    (secret,) = _token_secrets(run)
    return base64.b64decode(plain(secret.state["data"])["token"]).decode()


def test_certificate_mode_has_no_agent(certificate) -> None:
    for kind in (AGENT, AGENT_TOKEN, CHART):
        assert certificate.all(kind) == [], kind
    assert AGENT_CONFIG not in _files(certificate)
    assert "gitlabAgent" not in certificate.outputs


def test_certificate_mode_makes_a_long_lived_token_for_gitlab_admin(certificate) -> None:
    (token,) = _token_secrets(certificate)
    assert token.inputs["metadata"]["annotations"] == {"kubernetes.io/service-account.name": "gitlab-admin"}
    assert certificate.one("kubernetes:core/v1:ServiceAccount").urn in token.depends_on


def test_project_cluster_gets_the_private_api_url_the_ca_and_the_token(certificate) -> None:
    cluster = certificate.one(CLUSTER).inputs
    assert cluster["name"] == "k8s cluster"
    assert cluster["kubernetesApiUrl"] == certificate.outputs["kubernetesPrivateApiUrl"]
    # The cluster's stable name inside the VPC, never a control-plane node's address.
    assert cluster["kubernetesApiUrl"] == "https://api.gitops-k8s.internal:6443"
    assert cluster["kubernetesCaCert"] == certificate.outputs["clusterCaPem"]
    assert is_secret_value(cluster["kubernetesToken"]), "the token is sent as a secret"
    assert plain(cluster["kubernetesToken"]) == _token(certificate)
    assert cluster["kubernetesAuthorizationType"] == "rbac"
    assert cluster["managed"] is False
    assert cluster["environmentScope"] == "*"


@pytest.mark.parametrize("delivery", ["pull", "push"])
def test_project_cluster_starts_only_once_the_settings_are_effective(run_stack, delivery: str) -> None:
    run = run_stack("dev", delivery=delivery, clusterIntegration="certificate")
    cluster = run.one(CLUSTER)
    settings = run.one("gitlab:index/applicationSettings:ApplicationSettings")
    seeding = run.one(COMMAND, "gitlab-seed-admin-token")
    # The seeding step turns on local requests and the flag with the cache bypassed and returns
    # only once every worker's cache has expired (userdata/gitlab/seed-admin-token.sh).
    assert seeding.urn in cluster.depends_on, "the cluster waits for the seeding step"
    assert "settings_changed" in plain(seeding.inputs["stdin"]) and "current_without_cache" in plain(
        seeding.inputs["stdin"]
    )
    # The settings resource declares the same value, after the step: it never flips it back.
    assert settings.inputs["allowLocalRequestsFromWebHooksAndServices"] is True
    assert seeding.urn in settings.depends_on
    assert settings.urn in cluster.depends_on


def test_ci_variables_let_the_push_pipeline_reach_the_cluster(certificate) -> None:
    variables = _variables(certificate)
    assert set(variables) == {"KUBE_URL", "KUBE_TOKEN", "KUBE_CA_PEM_FILE"}
    assert variables["KUBE_URL"]["value"] == certificate.outputs["kubernetesPrivateApiUrl"]
    token = variables["KUBE_TOKEN"]
    assert token["masked"] is True and token["protected"] is True
    assert is_secret_value(token["value"]) and plain(token["value"]) == _token(certificate)
    assert variables["KUBE_CA_PEM_FILE"]["variableType"] == "file"
    assert variables["KUBE_CA_PEM_FILE"]["value"] == certificate.outputs["clusterCaPem"]


def test_certificate_mode_push_pipeline_uses_the_kube_variables(run_stack) -> None:
    run = run_stack("dev", delivery="push", clusterIntegration="certificate")
    text = plain(_files(run)[".gitlab-ci.yml"].inputs["content"])
    assert text == pipeline("push", "certificate")
    script = "\n".join(yaml.safe_load(text)["deployment"]["script"])
    for variable in ("$KUBE_URL", "$KUBE_CA_PEM_FILE", "$KUBE_TOKEN"):
        assert variable in script
    assert "KUBECONFIG" not in script and "GITLAB_CA_PEM_FILE" not in script


# --------------------------------------------------------------------------------------------
# The pure parts
# --------------------------------------------------------------------------------------------
def test_kas_address_keeps_its_trailing_slash() -> None:
    assert gitlab_agent.kas_address("gitlab.example.com") == "wss://gitlab.example.com/-/kubernetes-agent/"
    for bad in ("", "https://gitlab.example.com", "gitlab.example.com:443"):
        with pytest.raises(ValueError, match="is not a host name"):
            gitlab_agent.kas_address(bad)


def test_chart_values_refuse_a_ca_that_is_not_a_certificate() -> None:
    with pytest.raises(ValueError, match="kasCaCert must be a PEM certificate"):
        gitlab_agent.chart_values(hostname="gitlab.example.com", ca_pem="", agentk_tag="v19.4.1")


def test_agent_configuration_is_a_yaml_document_with_a_header() -> None:
    text = gitlab_agent.agent_config("operator/shark-application")
    assert text.startswith("# GitLab agent for Kubernetes")
    assert yaml.safe_load(text)["ci_access"]["projects"][0]["id"] == "operator/shark-application"


@pytest.mark.parametrize(
    ("kind", "name"), [(CHART, "gitlab-k8s-agentk"), ("kubernetes:yaml/v2:ConfigFile", "flux-install")]
)
def test_remote_components_hand_the_clusters_provider_to_the_objects_they_render(dev, kind: str, name: str) -> None:
    """helm.v4.Chart and yaml.v2.ConfigFile register their objects in the provider's Construct, as children
    of the component: they get the providers map the component was registered with (`providers`, "for
    this resource and child resources", pulumi ResourceOptions), never the default provider."""
    cluster_provider = dev.one("pulumi:providers:kubernetes", "gitops-k8s-provider")
    component = dev.one(kind, name)
    assert set(component.providers) == {"kubernetes"}
    assert component.providers["kubernetes"].startswith(cluster_provider.urn)
    assert component.provider.startswith(cluster_provider.urn)


# --------------------------------------------------------------------------------------------
# What the README tells an operator about this integration
# --------------------------------------------------------------------------------------------
README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
REFERENCE = (Path(__file__).resolve().parent.parent / "REFERENCE.md").read_text()


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end >= 0 else None]


def test_the_readme_tells_an_existing_stack_how_to_keep_the_certificate_integration() -> None:
    """A stack deployed before the agent became the default does not set clusterIntegration: its next
    `up` switches. The note comes before the integrations are described, with a command that works."""
    section = _section(README, "## GitLab and the cluster: two integrations")
    note = section[: section.index("**`agent` (default)")]
    command = "pulumi config set clusterIntegration certificate --stack <stack>"
    assert "Upgrading a stack created before the agent became the default" in note
    assert command in note
    config = parse_config({"adminCidrs": '["203.0.113.7/32"]', "clusterIntegration": "certificate"}, "gitops", "dev")
    assert config.cluster_integration == "certificate", "the default GitLab still accepts it"


def test_the_docs_say_the_pinned_chart_is_untested_with_the_oldest_agentk_they_allow() -> None:
    oldest = "v{}.{}".format(*versions.GITLAB_OLDEST_SUPPORTED)
    chart = versions.GITLAB_AGENT_CHART_VERSION
    agent_steps = _section(README, "## GitLab and the cluster: two integrations")
    assert f"One chart version is pinned ({chart}" in agent_steps
    assert f"it runs agentk\n   {oldest}.x, a combination nobody has tested here" in agent_steps
    assert f"The pinned chart {chart} (appVersion v19.4.0) with agentk {oldest}.x is **untested**" in REFERENCE


def test_troubleshooting_recovers_a_revoked_agent_token_by_the_resource_the_program_registers(dev) -> None:
    troubleshooting = _section(README, "## Troubleshooting")
    entry = troubleshooting[troubleshooting.index("- **A revoked agent token**") :]
    pattern = re.search(r"grep -o '([^']+)'", entry)
    assert pattern is not None and "pulumi refresh --yes --stack dev --target" in entry
    urns = [r.urn for r in dev.registrations if re.fullmatch(pattern.group(1), r.urn)]
    assert urns == [dev.one(AGENT_TOKEN).urn], "exactly the agent token, not its Secret"
    # The two-token limit, in GitLab's words, and the name Pulumi's token carries.
    limit = troubleshooting[troubleshooting.index("An agent can have only two active tokens at a time") :]
    assert dev.one(AGENT_TOKEN).inputs["name"] == "agentk-gitops-dev"
    assert "`agentk-gitops-<stack>`" in limit.split("\n- **", 1)[0]
