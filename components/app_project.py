"""The shark-app project in GitLab: the project, its registry credentials, and its seeded files.

Built in three steps because GitLab's view of the cluster (GitLabIntegration) needs the project, and
the project's first pipeline needs that view (its CI/CD variables, or the connected agent):
``AppProject(...)`` creates the project, ``seed_files()`` commits the app and its manifests (the
integration commits its agent configuration after them), ``seed_pipeline(after=...)`` commits the
pipeline last, once the integration is ready.

Everything here is created through the daily admin's own provider (GitLabHost.owner_provider): the
project lands in that user's namespace, and Projects::CreateService makes the namespace owner the
project's Owner and writes its project_authorizations row in the same request. So every seed commit
to the default branch, which the first commit protects for Maintainers (ProtectDefaultBranchService),
is made by the Owner and allowed (ProtectedRefAccess#role_access_allowed? compares the committer's
project role; an instance admin who is not a member has none), and the pipeline the last commit
starts passes the protected-ref check (Gitlab::Ci::Pipeline::Chain::Validate::Abilities) too. The
dependency is in the graph: each resource uses that provider, which needs the admin's token.

After seeding, the repository belongs to its users: the seeded files ignore later content changes,
so a `pulumi up --refresh` never reverts a push (the tutorial edits "This app is working" in
GitLab) nor Flux's image updates. The pipeline is the exception: it follows the delivery mode.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gitlab as gitlab
import pulumi_kubernetes as k8s

from components.app_manifests import (
    APP_NAMESPACE,
    PIPELINE_PATH,
    PULL_SECRET_NAME,
    THROWAWAY_TAG_REGEX,
    AppSpec,
    SeedFile,
    seed_content,
    seed_plan,
)
from components.config import StackConfig
from components.flux import NAMESPACE as FLUX_NAMESPACE


@dataclass(frozen=True)
class AppProjectArgs:
    config: StackConfig
    gitlab_provider: pulumi.ProviderResource  # the daily admin's (GitLabHost.owner_provider), never root's
    kubernetes_provider: pulumi.ProviderResource
    namespace_id: pulumi.Input[int]  # the GitLab admin user's personal namespace (the tutorial's <user>)
    gitlab_hostname: pulumi.Input[str]
    registry_host: pulumi.Input[str]  # <host>:5050


class AppProject(pulumi.ComponentResource):
    project_id: pulumi.Output[str]
    path_with_namespace: pulumi.Output[str]
    web_url: pulumi.Output[str]
    ssh_url: pulumi.Output[str]
    image_repository: pulumi.Output[str]
    app_spec: pulumi.Output[AppSpec]
    pull_secret_dockerconfigjson: pulumi.Output[str] | None
    seed_commits: list[gitlab.RepositoryFile]

    def __init__(self, name: str, args: AppProjectArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gitops:app:AppProject", name, None, opts)
        config = args.config
        self._name = name
        self._config = config
        self._on_gitlab = pulumi.ResourceOptions(parent=self, provider=args.gitlab_provider)

        self.project = gitlab.Project(
            f"{name}-project",
            name=config.project_name,
            path=config.project_name,
            namespace_id=args.namespace_id,
            description="shark-app: the sample app of the GitOps delivery chain (seeded by Pulumi)",
            visibility_level=config.project_visibility,
            # A README commit creates the default branch with the configured name; it has no
            # pipeline file, so it starts no pipeline.
            initialize_with_readme=True,
            default_branch=config.default_branch,
            container_registry_access_level="enabled",
            # The project brings its own pipeline. Auto DevOps (on for every project by default)
            # would run GitLab's own build-and-deploy pipeline for commits made while no
            # .gitlab-ci.yml exists yet, such as the README commit at creation.
            auto_devops_enabled=False,
            # Every pipeline pushes a throwaway tmp-<pipeline id> image: remove those after a week
            # (the registry's cleanup policy; the regex is anchored by GitLab). Release tags stay.
            container_expiration_policy=gitlab.ProjectContainerExpirationPolicyArgs(
                enabled=True,
                cadence="1d",
                name_regex_delete=THROWAWAY_TAG_REGEX,
                older_than="7d",
            ),
            # The product's runner is an instance runner: projects use it through shared runners.
            shared_runners_enabled=True,
            opts=self._on_gitlab,
        )
        self.project_id = self.project.id
        self.path_with_namespace = self.project.path_with_namespace
        self.web_url = self.project.web_url
        # ssh:// form with the port: Flux's GitRepository does not accept the scp-like form.
        self.ssh_url = pulumi.Output.concat(
            "ssh://git@", args.gitlab_hostname, ":2222/", self.path_with_namespace, ".git"
        )
        self.image_repository = pulumi.Output.concat(args.registry_host, "/", self.path_with_namespace)
        self.app_spec = self.image_repository.apply(
            lambda repository: AppSpec(
                app_name=config.app_name,
                node_port=config.app_node_port,
                image_repository=repository,
                initial_tag=config.default_branch,
                image_policy=f"{FLUX_NAMESPACE}:{config.app_name}",
                pull_secret=config.project_visibility != "public",
            )
        )

        # A private project's registry needs credentials: a deploy token limited to reading it,
        # turned into the imagePullSecret the Deployment uses (and Flux's ImageRepository reuses).
        self.pull_secret_dockerconfigjson = None
        if config.project_visibility != "public":
            token = gitlab.ProjectDeployToken(
                f"{name}-registry-read",
                project=self.project_id,
                name="kubernetes-registry-read",
                scopes=["read_registry"],
                opts=self._on_gitlab,
            )
            self.pull_secret_dockerconfigjson = pulumi.Output.secret(
                pulumi.Output.all(args.registry_host, token.username, token.token).apply(
                    lambda values: _dockerconfigjson(*values)
                )
            )
            k8s.core.v1.Secret(
                f"{name}-pull-secret",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=PULL_SECRET_NAME, namespace=APP_NAMESPACE),
                type="kubernetes.io/dockerconfigjson",
                string_data={".dockerconfigjson": self.pull_secret_dockerconfigjson},
                opts=pulumi.ResourceOptions(parent=self, provider=args.kubernetes_provider),
            )
        self.seed_commits = []

    def seed_files(self) -> None:
        """Commit the app and its manifests, one commit at a time (``seed_commits``, in order)."""
        for seed in seed_plan(self._config.delivery):
            if seed.path != PIPELINE_PATH:
                self._commit(seed, after=self.seed_commits[-1:])

    def seed_pipeline(self, after: Sequence[pulumi.Resource]) -> None:
        """Commit the pipeline: the last commit, after the seeded files and ``after`` (the integration)."""
        (seed,) = (seed for seed in seed_plan(self._config.delivery) if seed.path == PIPELINE_PATH)
        self._commit(seed, after=[*self.seed_commits[-1:], *after])
        self.register_outputs(
            {
                "project_id": self.project_id,
                "web_url": self.web_url,
                "ssh_url": self.ssh_url,
                "image_repository": self.image_repository,
            }
        )

    def _commit(self, seed: SeedFile, after: Sequence[pulumi.Resource]) -> None:
        mode = self._config.delivery
        integration = self._config.cluster_integration
        is_pipeline = seed.path == PIPELINE_PATH
        commit = gitlab.RepositoryFile(
            f"{self._name}-file-{_resource_suffix(seed.path)}",
            project=self.project_id,
            branch=self._config.default_branch,
            file_path=seed.path,
            content=self.app_spec.apply(
                lambda spec, path=seed.path: seed_content(spec, mode, path, integration=integration)
            ),
            encoding="text",
            # GitLab created README.md with the project: take it over.
            overwrite_on_create=True,
            create_commit_message=seed.commit_message,
            update_commit_message=seed.commit_message,
            delete_commit_message=f"{'' if is_pipeline else '[skip ci] '}Remove {seed.path}",
            author_name="Pulumi",
            author_email="pulumi@localhost",
            opts=pulumi.ResourceOptions.merge(
                self._on_gitlab,
                pulumi.ResourceOptions(
                    # One commit at a time, in this order: the pipeline file is the last commit.
                    depends_on=list(after),
                    ignore_changes=[] if is_pipeline else ["content"],
                ),
            ),
        )
        self.seed_commits.append(commit)


def _resource_suffix(path: str) -> str:
    """A stable logical name per file path ("src/app.js" -> "src-app-js")."""
    return path.strip(".").replace("/", "-").replace(".", "-")


def _dockerconfigjson(registry_host: str, username: str, password: str) -> str:
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps({"auths": {registry_host: {"username": username, "password": password, "auth": auth}}})
