"""The shark-app project in GitLab and GitLab's view of the cluster, as the whole program wires them."""

from __future__ import annotations

import base64
import re

import kubernetes_validate
import pytest
import yaml

from tools.harness import ProgramRun, is_secret_value, plain

PROJECT = "gitlab:index/project:Project"
FILE = "gitlab:index/repositoryFile:RepositoryFile"
VARIABLE = "gitlab:index/projectVariable:ProjectVariable"
CLUSTER = "gitlab:index/projectCluster:ProjectCluster"
AGENT = "gitlab:index/clusterAgent:ClusterAgent"
AGENT_TOKEN = "gitlab:index/clusterAgentToken:ClusterAgentToken"
SECRET = "kubernetes:core/v1:Secret"


def _files(run: ProgramRun) -> dict[str, dict]:
    return {plain(r.inputs["filePath"]): r for r in run.all(FILE)}


def _variables(run: ProgramRun) -> dict[str, dict]:
    return {r.inputs["key"]: r.inputs for r in run.all(VARIABLE)}


def _token_secret(run: ProgramRun):
    return next(r for r in run.all(SECRET) if r.inputs.get("type") == "kubernetes.io/service-account-token")


def _token(run: ProgramRun) -> str:
    return base64.b64decode(plain(_token_secret(run).state["data"])["token"]).decode()


PROVIDER = "pulumi:providers:gitlab"
OWNER_PROVIDER = "gitlab-gitlab-owner"


def test_project_is_the_tutorials_public_project_with_a_registry(dev) -> None:
    project = dev.one(PROJECT)
    gitlab_user = dev.one("gitlab:index/user:User")
    assert project.inputs["name"] == project.inputs["path"] == "shark-application"
    assert project.inputs["visibilityLevel"] == "public"
    assert project.inputs["containerRegistryAccessLevel"] == "enabled"
    assert project.inputs["defaultBranch"] == "main"
    assert project.inputs["initializeWithReadme"] is True
    # Under the daily admin user, as the tutorial's <user>/shark-application.
    assert project.inputs["namespaceId"] == gitlab_user.state["namespaceId"]
    assert project.provider.startswith(dev.one(PROVIDER, OWNER_PROVIDER).urn)


def test_auto_devops_is_off_and_throwaway_images_are_cleaned_up(dev) -> None:
    project = dev.one(PROJECT).plain_inputs
    assert project["autoDevopsEnabled"] is False
    policy = project["containerExpirationPolicy"]
    assert policy["enabled"] is True
    assert policy["nameRegexDelete"] == "tmp-[0-9]+" and policy["olderThan"] == "7d"
    # GitLab anchors the regex: it deletes tmp-<pipeline id> and never a release tag.
    assert re.fullmatch(policy["nameRegexDelete"], "tmp-4711")
    for kept in ("main-1a2b3c4d-42", "main", "0123456789abcdef0123456789abcdef01234567", "tmp"):
        assert not re.fullmatch(policy["nameRegexDelete"], kept), kept


def _owner_chain(run: ProgramRun) -> str:
    """The URN of the provider the project's Owner acts through, after checking what makes it so."""
    owner = run.one(PROVIDER, OWNER_PROVIDER)
    admin = run.one("gitlab:index/user:User", "gitlab-admin")
    token = run.one("gitlab:index/personalAccessToken:PersonalAccessToken", "gitlab-owner-token")
    # The owner's provider signs in with the daily admin's own token, minted by root.
    assert plain(owner.inputs["token"]) == plain(token.state["token"])
    assert is_secret_value(owner.inputs["token"]), "the owner's token reaches its provider as a secret"
    assert token.inputs["userId"] == int(admin.id)
    assert token.provider.startswith(run.one(PROVIDER, "gitlab-gitlab").urn)
    assert {token.urn, admin.urn} <= set(owner.depends_on)
    # ...and the project is created in that user's namespace: Projects::CreateService makes the
    # namespace owner its Owner, so the user behind the token is an Owner by construction.
    assert run.one(PROJECT).inputs["namespaceId"] == admin.state["namespaceId"]
    return owner.urn


@pytest.mark.parametrize("integration", ["agent", "certificate"])
@pytest.mark.parametrize("delivery", ["pull", "push"])
def test_every_seed_commit_is_made_by_the_projects_owner(run_stack, delivery: str, integration: str) -> None:
    run = run_stack("dev", delivery=delivery, clusterIntegration=integration)
    owner = _owner_chain(run)
    commits = run.all(FILE)
    assert len(commits) >= 8
    integration_objects = [run.one(AGENT), run.one(AGENT_TOKEN)] if integration == "agent" else [run.one(CLUSTER)]
    for registration in [*commits, run.one(PROJECT), *run.all(VARIABLE), *integration_objects]:
        assert registration.provider.startswith(owner), f"{registration.name} is not made by the project's Owner"
    for key in run.all("gitlab:index/deployKey:DeployKey"):
        assert key.provider.startswith(owner), "Flux's deploy key must belong to a project member"
    # Nobody is added to the project: the Owner needs no membership, root gets none.
    assert run.all("gitlab:index/projectMembership:ProjectMembership") == []


def test_private_projects_registry_token_is_made_by_the_owner(prod) -> None:
    token = prod.one("gitlab:index/projectDeployToken:ProjectDeployToken")
    assert token.provider.startswith(_owner_chain(prod))


def test_prod_project_is_private_and_pulls_with_a_read_registry_token(prod) -> None:
    assert prod.one(PROJECT).inputs["visibilityLevel"] == "private"
    token = prod.one("gitlab:index/projectDeployToken:ProjectDeployToken")
    assert token.inputs["scopes"] == ["read_registry"]
    pull = next(
        r
        for r in prod.all(SECRET)
        if r.inputs["metadata"]["name"] == "gitlab-registry" and r.inputs["metadata"]["namespace"] == "default"
    )
    assert pull.inputs["type"] == "kubernetes.io/dockerconfigjson"
    assert is_secret_value(pull.inputs["stringData"]), "registry credentials travel as a secret"
    config = yaml.safe_load(plain(pull.inputs["stringData"])[".dockerconfigjson"])
    registry = prod.outputs["gitlabRegistryHost"]
    assert config["auths"][registry]["password"] == token.state["token"]
    deployment = yaml.safe_load(plain(_files(prod)["kubernetes/deployment.yml"].inputs["content"]))
    assert deployment["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "gitlab-registry"}]


def test_public_project_needs_no_pull_credentials(dev) -> None:
    assert dev.all("gitlab:index/projectDeployToken:ProjectDeployToken") == []
    deployment = yaml.safe_load(plain(_files(dev)["kubernetes/deployment.yml"].inputs["content"]))
    assert "imagePullSecrets" not in deployment["spec"]["template"]["spec"]


def test_outputs_name_the_project_its_ssh_url_and_image(dev) -> None:
    host = dev.outputs["gitlabRegistryHost"].removesuffix(":5050")
    path = dev.one(PROJECT).state["pathWithNamespace"]
    assert dev.outputs["appProjectSshUrl"] == f"ssh://git@{host}:2222/{path}.git"
    assert dev.outputs["appImageRepository"] == f"{host}:5050/{path}"
    assert dev.outputs["appProjectUrl"] == dev.one(PROJECT).state["webUrl"]


def _commit_chain(run: ProgramRun) -> list:
    """The commits, from the pipeline back to the first, following each commit's dependency on the one before."""
    commits = run.all(FILE)
    by_urn = {c.urn: c for c in commits}
    (pipeline,) = [c for c in commits if plain(c.inputs["filePath"]) == ".gitlab-ci.yml"]
    chain, current = [pipeline], pipeline
    while earlier := {urn for urn in _commit_dependencies(run, current) if urn in by_urn}:
        # The commit right before: the one every other earlier commit comes before.
        previous = [urn for urn in earlier if not any(urn in _commit_dependencies(run, by_urn[o]) for o in earlier)]
        assert len(previous) == 1, "commits are serialised"
        current = by_urn[previous[0]]
        chain.append(current)
    assert len(chain) == len(commits), "every commit is in the one chain"
    return chain


def _commit_dependencies(run: ProgramRun, commit) -> set[str]:
    """Commits ``commit`` waits for, directly or through the integration's steps in between."""
    found, todo = set(), list(commit.depends_on)
    while todo:
        urn = todo.pop()
        if urn in found:
            continue
        found.add(urn)
        registration = next((r for r in run.registrations if r.urn == urn), None)
        if registration is not None:
            todo += registration.depends_on
    return found


@pytest.mark.parametrize("integration", ["agent", "certificate"])
def test_seeding_commits_the_pipeline_last_and_alone_without_skip_ci(run_stack, integration: str) -> None:
    run = run_stack("dev", clusterIntegration=integration)
    chain = _commit_chain(run)
    without_skip = [c for c in chain if "[skip ci]" not in c.inputs["createCommitMessage"]]
    assert [plain(c.inputs["filePath"]) for c in without_skip] == [".gitlab-ci.yml"]
    assert chain[0] is without_skip[0], "the pipeline is the last commit"
    pipeline = chain[0]
    if integration == "agent":
        # The agent's configuration is committed after the app's files, before agentk starts; the
        # first pipeline runs once GitLab reports the agent connected.
        assert plain(chain[1].inputs["filePath"]) == ".gitlab/agents/k8s-cluster/config.yaml"
        ready = {run.named("gitlab-k8s-agent-connected").urn, run.named("gitlab-k8s-gitlab-ca").urn}
        assert ready <= set(pipeline.depends_on)
    else:
        # The first pipeline runs after GitLab can reach the cluster (KUBE_* variables exist).
        assert {v.urn for v in run.all(VARIABLE)} <= set(pipeline.depends_on)


def test_seeded_files_belong_to_their_users_after_seeding(dev) -> None:
    for path, commit in _files(dev).items():
        if path in (".gitlab-ci.yml", ".gitlab/agents/k8s-cluster/config.yaml"):
            # The pipeline follows the delivery mode; the agent's authorizations follow the program.
            assert commit.ignore_changes == [], path
        else:
            assert commit.ignore_changes == ["content"], f"{path}: a push or a Flux commit must not be reverted"
        assert commit.inputs["branch"] == "main"


def test_pull_mode_seeds_the_flux_manifest_and_three_stage_pipeline(dev) -> None:
    files = _files(dev)
    assert "kubernetes/deployment.yml" in files and "kubernetes/deployment.tpl" not in files
    pipeline = yaml.safe_load(plain(files[".gitlab-ci.yml"].inputs["content"]))
    assert pipeline["stages"] == ["build", "test", "push"]
    deployment = plain(files["kubernetes/deployment.yml"].inputs["content"])
    image = f"{dev.outputs['appImageRepository']}:main"
    assert f'image: {image} # {{"$imagepolicy": "flux:shark-app"}}' in deployment


def test_push_mode_seeds_the_template_and_four_stage_pipeline_without_flux(run_stack) -> None:
    run = run_stack("dev", delivery="push")
    files = _files(run)
    assert "kubernetes/deployment.tpl" in files and "kubernetes/deployment.yml" not in files
    pipeline = yaml.safe_load(plain(files[".gitlab-ci.yml"].inputs["content"]))
    assert pipeline["stages"] == ["build", "test", "push", "deployment"]
    assert f"{run.outputs['appImageRepository']}:GIT_COMMIT" in plain(
        files["kubernetes/deployment.tpl"].inputs["content"]
    )
    assert not [r for r in run if "fluxcd.io" in r.type or r.type == "gitops:flux:Flux"]
    assert "fluxNamespace" not in run.outputs


def test_service_and_deployment_as_committed(dev) -> None:
    files = _files(dev)
    service = yaml.safe_load(plain(files["kubernetes/service.yml"].inputs["content"]))
    assert service["spec"]["type"] == "NodePort"
    assert [(p["nodePort"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(30000, 80, 8080)]
    deployment = yaml.safe_load(plain(files["kubernetes/deployment.yml"].inputs["content"]))
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith(dev.outputs["gitlabRegistryHost"] + "/operator/shark-application:")


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_kubernetes_object_passes_the_schema_for_the_configured_minor(stack: str, request) -> None:
    run: ProgramRun = request.getfixturevalue(stack)
    minor = run.config["gitops:kubernetesVersion"]
    checked = 0
    for registration in run:
        if (
            registration.type.startswith("kubernetes:")
            and "fluxcd.io" not in registration.type
            and "apiVersion" in registration.inputs
        ):
            document = {k: v for k, v in plain(registration.inputs).items() if not k.startswith("__")}
            kubernetes_validate.validate(document, f"{minor}.0", strict=True)
            checked += 1
    for path, commit in _files(run).items():
        if path.startswith("kubernetes/"):
            kubernetes_validate.validate(yaml.safe_load(plain(commit.inputs["content"])), f"{minor}.0", strict=True)
            checked += 1
    assert checked >= 6
