"""Flux as the program installs it: pinned controllers first, then our objects in namespace flux."""

from __future__ import annotations

import re

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from components import flux
from tools.harness import ProgramRun, is_secret_value, plain

CR_TYPES = {
    "GitRepository": "kubernetes:source.toolkit.fluxcd.io/v1:GitRepository",
    "Kustomization": "kubernetes:kustomize.toolkit.fluxcd.io/v1:Kustomization",
    "ImageRepository": "kubernetes:image.toolkit.fluxcd.io/v1:ImageRepository",
    "ImagePolicy": "kubernetes:image.toolkit.fluxcd.io/v1:ImagePolicy",
    "ImageUpdateAutomation": "kubernetes:image.toolkit.fluxcd.io/v1:ImageUpdateAutomation",
}


def _secret(run: ProgramRun, name: str):
    return next(
        r
        for r in run.all("kubernetes:core/v1:Secret")
        if r.inputs["metadata"]["name"] == name and r.inputs["metadata"]["namespace"] == "flux"
    )


def test_install_is_the_pinned_release_manifest(dev) -> None:
    install = dev.one("kubernetes:yaml/v2:ConfigFile")
    assert install.inputs["file"] == "https://github.com/fluxcd/flux2/releases/download/v2.10.0/install.yaml"
    assert install.provider.startswith(dev.one("pulumi:providers:kubernetes").urn)


def test_custom_resources_use_flux_v2_apis_after_the_install(dev) -> None:
    install = dev.one("kubernetes:yaml/v2:ConfigFile")
    for kind, type_ in CR_TYPES.items():
        resource = dev.one(type_)
        assert resource.inputs["kind"] == kind
        assert resource.inputs["apiVersion"] == type_.split(":")[1]
        assert resource.inputs["metadata"] == {"name": "shark-app", "namespace": "flux"}
        assert install.urn in resource.depends_on, f"{kind} needs the CRDs from the install manifest"


def test_git_repository_follows_the_projects_ssh_url_with_the_deploy_key(dev) -> None:
    repository = dev.one(CR_TYPES["GitRepository"])
    spec = repository.inputs["spec"]
    assert spec["url"] == dev.outputs["appProjectSshUrl"]
    assert spec["ref"] == {"branch": "main"}
    assert spec["secretRef"] == {"name": "flux-git-deploy"}
    assert dev.one("gitlab:index/deployKey:DeployKey").urn in repository.depends_on


def test_git_secret_carries_the_deploy_key_and_gitlabs_host_keys(dev) -> None:
    secret = _secret(dev, "flux-git-deploy")
    data = secret.inputs["stringData"]
    assert is_secret_value(data), "the private key only travels as a secret"
    values = plain(data)
    assert values["known_hosts"] == dev.outputs["gitlabSshKnownHosts"]
    assert values["known_hosts"].startswith("[") and "]:2222 ssh-ed25519 " in values["known_hosts"]
    private = serialization.load_ssh_private_key(values["identity"].encode(), password=None)
    public = (
        private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    )
    assert values["identity.pub"].strip() == public


def test_deploy_key_is_the_public_half_and_can_push(dev) -> None:
    values = plain(_secret(dev, "flux-git-deploy").inputs["stringData"])
    key = dev.one("gitlab:index/deployKey:DeployKey").inputs
    assert key["key"] == values["identity.pub"].strip()
    assert key["canPush"] is True
    assert key["title"].startswith("Flux")
    assert key["project"] == dev.one("gitlab:index/project:Project").id


def test_private_key_appears_nowhere_in_clear(dev) -> None:
    identity = plain(_secret(dev, "flux-git-deploy").inputs["stringData"])["identity"]
    # The first base64 line is the same for every OpenSSH key ("openssh-key-v1..."): look for the rest.
    body = "\n".join(identity.strip().splitlines()[2:-1])
    for registration in dev:
        if registration.type in ("tls:index/privateKey:PrivateKey", "kubernetes:core/v1:Secret"):
            continue
        assert body not in str(plain(registration.inputs)).replace("\\n", "\n"), registration.name
    assert body not in str(dev.outputs)


def test_image_repository_scans_the_registry_trusting_gitlabs_ca(dev, prod) -> None:
    spec = dev.one(CR_TYPES["ImageRepository"]).inputs["spec"]
    assert spec["image"] == dev.outputs["appImageRepository"]
    assert spec["certSecretRef"] == {"name": "gitlab-ca"}
    assert "secretRef" not in spec, "a public project needs no registry credentials"
    assert plain(_secret(dev, "gitlab-ca").inputs["stringData"]) == {"ca.crt": dev.outputs["gitlabCaPem"]}
    private = prod.one(CR_TYPES["ImageRepository"]).inputs["spec"]
    assert private["secretRef"] == {"name": "gitlab-registry"}
    assert _secret(prod, "gitlab-registry").inputs["type"] == "kubernetes.io/dockerconfigjson"


def test_image_policy_named_by_the_deployment_marker(dev) -> None:
    policy = dev.one(CR_TYPES["ImagePolicy"])
    seeded = next(
        r
        for r in dev.all("gitlab:index/repositoryFile:RepositoryFile")
        if plain(r.inputs["filePath"]) == "kubernetes/deployment.yml"
    )
    marker = re.search(r'"\$imagepolicy": "([^"]+)"', plain(seeded.inputs["content"])).group(1)
    assert marker == f"{policy.inputs['metadata']['namespace']}:{policy.inputs['metadata']['name']}"
    assert policy.inputs["spec"]["filterTags"] == {"pattern": flux.tag_pattern("main"), "extract": "$iid"}


def test_automation_commits_to_the_default_branch_without_a_pipeline(dev) -> None:
    spec = dev.one(CR_TYPES["ImageUpdateAutomation"]).inputs["spec"]
    assert spec["git"]["checkout"]["ref"] == {"branch": "main"} and spec["git"]["push"] == {"branch": "main"}
    assert "[ci skip]" in spec["git"]["commit"]["messageTemplate"]
    assert ".Updated" not in spec["git"]["commit"]["messageTemplate"]
    assert spec["update"] == {"path": "./kubernetes", "strategy": "Setters"}


def test_kustomization_applies_the_projects_kubernetes_directory(dev) -> None:
    spec = dev.one(CR_TYPES["Kustomization"]).inputs["spec"]
    assert spec["path"] == "./kubernetes" and spec["prune"] is True
    assert spec["sourceRef"] == {"kind": "GitRepository", "name": "shark-app"}


def test_outputs_tell_the_user_how_to_watch_it(dev) -> None:
    assert dev.outputs["fluxNamespace"] == "flux"
    assert dev.outputs["fluxObjects"]["imagePolicy"] == "shark-app"
    assert dev.outputs["fluxWatchCommand"] == (
        "kubectl -n flux get gitrepositories,kustomizations,imagerepositories,imagepolicies,imageupdateautomations"
    )


def test_custom_branch_flows_to_flux_and_the_policy(run_stack) -> None:
    run = run_stack("dev", defaultBranch="release/2026")
    assert run.one(CR_TYPES["GitRepository"]).inputs["spec"]["ref"] == {"branch": "release/2026"}
    pattern = run.one(CR_TYPES["ImagePolicy"]).inputs["spec"]["filterTags"]["pattern"]
    assert re.match(pattern, "release-2026-3f2c9a1b-7")
    assert yaml.safe_load(plain(run.one("gitlab:index/project:Project").inputs["defaultBranch"])) == "release/2026"


def test_deploy_key_belongs_to_the_projects_owner_who_may_push_to_the_default_branch(dev) -> None:
    key = dev.one("gitlab:index/deployKey:DeployKey")
    owner = dev.one("pulumi:providers:gitlab", "gitlab-gitlab-owner")
    # Registered through the project Owner's token: the key's user is the Owner, whose role lets
    # Flux's commits through the protected default branch. No membership is added for anyone.
    assert key.provider.startswith(owner.urn)
    assert dev.all("gitlab:index/projectMembership:ProjectMembership") == []
    assert "owner operator" in key.inputs["title"]
    # A key registered by another user (root, before) is deleted, then registered by the Owner.
    assert key.replace_on_changes == ["title"]
    assert key.delete_before_replace is True


@pytest.mark.parametrize("branch", ["main", "master", "tmp", "release/2026", "TMP"])
def test_flux_never_picks_a_throwaway_or_branch_tag(branch: str) -> None:
    pattern = re.compile(flux.tag_pattern(branch))
    slug = flux.ref_slug(branch)
    for tag in ("tmp", "tmp-4711", "tmp-1", f"{slug}", "0123456789abcdef0123456789abcdef01234567"):
        assert not pattern.match(tag), f"{tag} would be deployed on {branch}"
    assert pattern.match(f"{slug}-1a2b3c4d-42"), "the sortable tag the push job makes is deployed"
