"""Flux v2: pull-based delivery of the shark-app, with image automation (tutorial sections 7-8).

The controllers come from Flux's own release manifest (pinned by ``fluxVersion``, never vendored);
this component adds our objects in the tutorial's namespace ``flux``: the ``flux-git-deploy``
Secret (a Pulumi-made deploy key and GitLab's SSH host keys, so no keyscan), the GitRepository and
Kustomization that apply ``./kubernetes``, and the image automation that commits new image tags
back to GitLab with ``[ci skip]`` (Flux v1's ``--git-ci-skip``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_gitlab as gitlab
import pulumi_kubernetes as k8s
import pulumi_tls as tls

from components.app_manifests import APP_NAMESPACE
from components.config import StackConfig

NAMESPACE = "flux"  # the tutorial's namespace; the controllers stay in Flux's own flux-system
GIT_SECRET = "flux-git-deploy"  # the tutorial's Secret name
CA_SECRET = "gitlab-ca"
REGISTRY_SECRET = "gitlab-registry"
INTERVAL = "1m"
# API versions of Flux v2 (source and kustomize GA since 2.0; image automation v1 since 2.7,
# v1beta2 removed in 2.9: fluxcd/image-reflector-controller CHANGELOG).
SOURCE_API = "source.toolkit.fluxcd.io/v1"
KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"
IMAGE_API = "image.toolkit.fluxcd.io/v1"
# "[ci skip]" keeps Flux's own commits from running a pipeline. `.Changed` is the template data of
# image-automation-controller v1 (`.Updated` was removed: templates using it stall the object).
MESSAGE_TEMPLATE = (
    "[ci skip] Update {{ .AutomationObject.Name }} image\n\n"
    "{{ range .Changed.Changes }}{{ .OldValue }} -> {{ .NewValue }}\n{{ end }}"
)
WATCH_COMMAND = (
    f"kubectl -n {NAMESPACE} get gitrepositories,kustomizations,imagerepositories,imagepolicies,imageupdateautomations"
)


def install_manifest_url(version: str) -> str:
    """Flux's release asset: every controller, image-reflector and image-automation included."""
    return f"https://github.com/fluxcd/flux2/releases/download/{version}/install.yaml"


def ref_slug(branch: str) -> str:
    """GitLab's CI_COMMIT_REF_SLUG: lower-cased, [^0-9a-z] -> '-', at most 63 bytes, no edge '-'."""
    return re.sub(r"[^0-9a-z]", "-", branch.lower())[:63].strip("-")


def tag_pattern(branch: str) -> str:
    """The sortable tags the pipeline pushes, `<ref slug>-<short sha>-<pipeline iid>`.

    `tmp` (the tutorial's build tag), the full-SHA tag and the branch tag never match, so Flux
    never deploys them; the pipeline IID is extracted and ordered numerically.
    """
    return rf"^{re.escape(ref_slug(branch))}-[0-9a-f]{{8,40}}-(?P<iid>[0-9]+)$"


def git_repository(name: str, ssh_url: str, branch: str) -> dict[str, Any]:
    return {
        "interval": INTERVAL,
        "url": ssh_url,
        "ref": {"branch": branch},
        "secretRef": {"name": GIT_SECRET},
    }


def kustomization(name: str) -> dict[str, Any]:
    return {
        "interval": INTERVAL,
        "path": "./kubernetes",
        "prune": True,
        "sourceRef": {"kind": "GitRepository", "name": name},
        "targetNamespace": APP_NAMESPACE,
    }


def image_repository(image: str, private: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"image": image, "interval": INTERVAL, "certSecretRef": {"name": CA_SECRET}}
    if private:
        spec["secretRef"] = {"name": REGISTRY_SECRET}
    return spec


def image_policy(name: str, branch: str) -> dict[str, Any]:
    return {
        "imageRepositoryRef": {"name": name},
        "filterTags": {"pattern": tag_pattern(branch), "extract": "$iid"},
        "policy": {"numerical": {"order": "asc"}},
    }


def image_update_automation(name: str, branch: str) -> dict[str, Any]:
    return {
        "interval": INTERVAL,
        "sourceRef": {"kind": "GitRepository", "name": name},
        "git": {
            "checkout": {"ref": {"branch": branch}},
            "commit": {"author": {"name": "Flux", "email": "flux@localhost"}, "messageTemplate": MESSAGE_TEMPLATE},
            "push": {"branch": branch},
        },
        "update": {"path": "./kubernetes", "strategy": "Setters"},
    }


@dataclass(frozen=True)
class FluxArgs:
    config: StackConfig
    kubernetes_provider: pulumi.ProviderResource
    gitlab_provider: pulumi.ProviderResource  # the project Owner's (GitLabHost.owner_provider)
    project_id: pulumi.Input[str]
    ssh_url: pulumi.Input[str]  # ssh://git@<host>:2222/<path>.git (AppProject)
    image_repository: pulumi.Input[str]  # <host>:5050/<path> (AppProject)
    known_hosts: pulumi.Input[str]  # [<host>]:2222 ssh-ed25519 ... (GitLabHost)
    gitlab_ca_pem: pulumi.Input[str]
    registry_dockerconfigjson: pulumi.Input[str] | None  # set when the project is not public


class Flux(pulumi.ComponentResource):
    namespace: str
    object_names: dict[str, str]
    deploy_key_public: pulumi.Output[str]
    watch_command: str

    def __init__(self, name: str, args: FluxArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gitops:flux:Flux", name, None, opts)
        config = args.config
        app = config.app_name
        on_cluster = pulumi.ResourceOptions(parent=self, provider=args.kubernetes_provider)

        # The controllers and their CRDs, straight from the pinned release (a remote component:
        # it waits for the controllers' Deployments to be ready).
        install = k8s.yaml.v2.ConfigFile(
            f"{name}-install",
            file=install_manifest_url(config.flux_version),
            # Its objects are children registered by the provider's Construct: they take the providers
            # map given here (components/gitlab_integration.py, the agent's chart, says why).
            opts=pulumi.ResourceOptions(parent=self, providers=[args.kubernetes_provider]),
        )
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace", metadata=k8s.meta.v1.ObjectMetaArgs(name=NAMESPACE), opts=on_cluster
        )
        in_namespace = pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=[namespace]))

        # The deploy key: Flux clones and pushes (image updates) over SSH on 2222 with it.
        deploy_key = tls.PrivateKey(f"{name}-deploy-key", algorithm="ED25519", opts=pulumi.ResourceOptions(parent=self))
        self.deploy_key_public = deploy_key.public_key_openssh
        # A deploy key pushes to a protected branch (the default branch is protected for Maintainers)
        # with its owner's role in the project (Gitlab::DeployKeyAccess checks the key's user against
        # ProtectedRefAccess; being an instance admin is not a project role, gitlab-org/gitlab#30769).
        # The key is registered through the project Owner's provider, and POST /projects/:id/
        # deploy_keys records the calling user as its owner (lib/api/deploy_keys.rb): Flux's commits
        # pass without any extra membership. The owner is named in the title; a key registered by
        # another user (earlier versions used root's token) is deleted and registered again by the
        # Owner: re-adding the same public key would otherwise return the old key unchanged.
        on_gitlab = pulumi.ResourceOptions(parent=self, provider=args.gitlab_provider)
        registered_key = gitlab.DeployKey(
            f"{name}-deploy-key",
            project=args.project_id,
            title=f"Flux image automation ({NAMESPACE}/{GIT_SECRET}, owner {config.gitlab_admin_username}): "
            "clones and pushes image updates",
            key=deploy_key.public_key_openssh.apply(str.strip),
            can_push=True,  # Flux commits new image tags back to the default branch
            opts=pulumi.ResourceOptions.merge(
                on_gitlab, pulumi.ResourceOptions(replace_on_changes=["title"], delete_before_replace=True)
            ),
        )
        git_secret = k8s.core.v1.Secret(
            f"{name}-git-secret",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=GIT_SECRET, namespace=NAMESPACE),
            string_data={
                "identity": pulumi.Output.secret(deploy_key.private_key_openssh),
                "identity.pub": deploy_key.public_key_openssh,
                "known_hosts": args.known_hosts,  # GitLab's pre-seeded host keys: no keyscan
            },
            opts=in_namespace,
        )
        ca_secret = k8s.core.v1.Secret(
            f"{name}-ca-secret",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=CA_SECRET, namespace=NAMESPACE),
            string_data={"ca.crt": args.gitlab_ca_pem},  # ImageRepository certSecretRef expects ca.crt
            opts=in_namespace,
        )
        image_secrets: list[pulumi.Resource] = [ca_secret]
        if args.registry_dockerconfigjson is not None:
            image_secrets.append(
                k8s.core.v1.Secret(
                    f"{name}-registry-secret",
                    metadata=k8s.meta.v1.ObjectMetaArgs(name=REGISTRY_SECRET, namespace=NAMESPACE),
                    type="kubernetes.io/dockerconfigjson",
                    string_data={".dockerconfigjson": pulumi.Output.secret(args.registry_dockerconfigjson)},
                    opts=in_namespace,
                )
            )

        def custom(kind: str, api_version: str, spec: pulumi.Input[Any], depends_on: list[pulumi.Resource]) -> None:
            k8s.apiextensions.CustomResource(
                f"{name}-{kind.lower()}",
                api_version=api_version,
                kind=kind,
                metadata=k8s.meta.v1.ObjectMetaArgs(name=app, namespace=NAMESPACE),
                spec=spec,
                # The CRDs come with the install manifest: it must be applied first.
                opts=pulumi.ResourceOptions.merge(
                    on_cluster, pulumi.ResourceOptions(depends_on=[install, namespace, *depends_on])
                ),
            )

        branch = config.default_branch
        custom(
            "GitRepository",
            SOURCE_API,
            pulumi.Output.from_input(args.ssh_url).apply(lambda url: git_repository(app, url, branch)),
            [git_secret, registered_key],
        )
        custom("Kustomization", KUSTOMIZE_API, kustomization(app), [])
        custom(
            "ImageRepository",
            IMAGE_API,
            pulumi.Output.from_input(args.image_repository).apply(
                lambda image: image_repository(image, args.registry_dockerconfigjson is not None)
            ),
            image_secrets,
        )
        custom("ImagePolicy", IMAGE_API, image_policy(app, branch), [])
        custom("ImageUpdateAutomation", IMAGE_API, image_update_automation(app, branch), [git_secret, registered_key])

        self.namespace = NAMESPACE
        self.object_names = {
            "gitRepository": app,
            "kustomization": app,
            "imageRepository": app,
            "imagePolicy": app,
            "imageUpdateAutomation": app,
            "gitSecret": GIT_SECRET,
        }
        self.watch_command = WATCH_COMMAND
        self.register_outputs({"namespace": self.namespace, "object_names": self.object_names})
