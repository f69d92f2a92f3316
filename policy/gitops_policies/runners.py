"""CI policies: no job runs next to GitLab.

A runner on the GitLab host (the docker executor on GitLab's own Docker daemon, privileged for
Docker-in-Docker) lets anyone who can run a pipeline take the host, and with it GitLab's database,
secrets and admin token. The product runs jobs on their own autoscaled VMs (components/runners.py);
this pack keeps it that way.

What a stack policy can see of "a runner on the GitLab host" (pulumi_policy 1.21 AnalyzeStack): the
GitLab instance (by name), the addresses that reach it (its own and the Elastic IPs associated with
it, by value and by property dependency), every remote step with the host it connects to, its
command text and what its commands, environment and stdin are made from (a ``gitlab.UserRunner``'s
token), and the instance's user data. A runner started by hand over SSH is out of its sight.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from pulumi_policy import PolicyResource, Severity, StackValidationArgs
from pulumi_policy.proxy import UnknownValueError

from .common import decode_user_data, get, stack_policy

INSTANCE = "aws:ec2/instance:Instance"
EIP = "aws:ec2/eip:Eip"
EIP_ASSOCIATION = "aws:ec2/eipAssociation:EipAssociation"
REMOTE_COMMAND = "command:remote:Command"
USER_RUNNER = "gitlab:index/userRunner:UserRunner"
RUNNER_REGISTRATION_TOKEN = "gitlab:index/runner:Runner"

# Commands that register or start a runner: `gitlab-runner register|run|run-single|start|install`, a
# `docker run` of the runner's image or container, a systemd unit whose ExecStart runs it, the package
# installed (its post-install runs `gitlab-runner install` and `gitlab-runner start`:
# gitlab-runner packaging/root/usr/share/gitlab-runner/post-install), or its service enabled or
# (re)started. Removing one (`docker rm --force gitlab-runner`, `systemctl disable --now
# gitlab-runner.service`, `apt-get purge gitlab-runner`) is none of these. A script that installs
# through a wrapper and a package array, as the product's own userdata/runners/install-runner.sh does
# (`PACKAGES=(gitlab-runner ...)`, `apt_get install ... "${PACKAGES[@]}"`), is found by the array.
RUNNER_START = re.compile(
    r"\bgitlab-runner\s+(?:register|run|run-single|start|install)\b"
    r"|\bdocker\s+(?:container\s+)?run\b[^\n]*\bgitlab[-/]runner\b"
    r"|^\s*ExecStart=[^\n]*\bgitlab-runner\b"
    r"|\b(?:apt-get|apt_get|apt|aptitude)\s+(?:-\S+\s+)*install\b[^\n]*\bgitlab-runner\b"
    r"|^\s*(?:declare\s+-a\s+|local\s+|readonly\s+)?\w+=\([^)\n]*(?<![-\w.])gitlab-runner(?![-\w.])"
    r"|\bdpkg\s+(?:-\S+\s+)*(?:-i|--install)\b[^\n]*\bgitlab-runner"
    r"|\bsystemctl\s+(?:-\S+\s+)*(?:enable|start|restart|try-restart|reload-or-restart)\b[^\n]*\bgitlab-runner\b",
    re.MULTILINE,
)
# Properties of a remote step that reach the host: its commands (components/remote.py writes a step's
# env into them), pulumi-command's `environment` (SSH Setenv: provider/pkg/provider/remote/
# commandOutputs.go) and stdin. A token any of them is made from is sent there; `connection` and
# `triggers` are not.
SENT_TO_HOST = ("create", "update", "delete", "stdin", "environment")


def _known(mapping: Any, *path: str) -> Any:
    try:
        return get(mapping, *path)
    except UnknownValueError:
        return None


def _urns(resource: PolicyResource, prop: str) -> set[str]:
    return {dependency.urn for dependency in resource.property_dependencies.get(prop, [])}


def _name_tag(resource: PolicyResource) -> str:
    value = _known(resource.props, "tags", "Name")
    return value if isinstance(value, str) else ""


def runner_start_in(text: str) -> str | None:
    """The first command of ``text`` that registers or starts a runner, or None (pure function)."""
    match = RUNNER_START.search(text)
    return match.group(0).strip() if match else None


@stack_policy(
    name="gitlab-host-runs-no-runner",
    description="No CI runner runs on the GitLab host: no step on it receives a runner token or registers or "
    "starts gitlab-runner, and its user data starts none (a job there could take GitLab over).",
    remediation="run CI on the runner manager and its autoscaled job VMs (components/runners.py); send a runner "
    "token only to a host of its own, and keep gitlab-runner out of the GitLab host's steps and user data.",
    config={
        "gitlabHostNamePattern": {
            "type": "string",
            "default": "gitlab-host",
            "description": "Regular expression matched against an instance's logical name and Name tag.",
        }
    },
    severity=Severity.CRITICAL,
)
def gitlab_host_runs_no_runner(
    args: StackValidationArgs, config: Mapping[str, Any]
) -> Iterator[tuple[str, str | None]]:
    pattern = re.compile(config["gitlabHostNamePattern"])
    resources = list(args.resources)
    hosts = [
        r for r in resources if r.resource_type == INSTANCE and (pattern.search(r.name) or pattern.search(_name_tag(r)))
    ]
    if not hosts:
        return
    targets = {host.urn for host in hosts}
    addresses: set[str] = set()
    for host in hosts:
        for key in ("publicIp", "privateIp", "publicDns", "privateDns"):
            value = _known(host.props, key)
            if isinstance(value, str) and value:
                addresses.add(value)
        user_data = _known(host.props, "userData")
        if isinstance(user_data, str) and (found := runner_start_in(decode_user_data(user_data, False))):
            yield f"the user data of GitLab host {host.name} starts a runner ({found!r}).", host.urn
    # Elastic IPs associated with a GitLab host reach it too.
    eips = {
        urn
        for association in resources
        if association.resource_type == EIP_ASSOCIATION and _urns(association, "instanceId") & targets
        for urn in _urns(association, "allocationId")
    }
    for eip in (r for r in resources if r.resource_type == EIP and r.urn in eips):
        targets.add(eip.urn)
        for key in ("publicIp", "publicDns"):
            value = _known(eip.props, key)
            if isinstance(value, str) and value:
                addresses.add(value)
    tokens = {r.urn for r in resources if r.resource_type in (USER_RUNNER, RUNNER_REGISTRATION_TOKEN)}
    for step in (r for r in resources if r.resource_type == REMOTE_COMMAND):
        host = _known(step.props, "connection", "host")
        if not (_urns(step, "connection") & targets or (isinstance(host, str) and host in addresses)):
            continue
        if any(_urns(step, prop) & tokens for prop in SENT_TO_HOST):
            yield (
                f"step {step.name} sends a runner authentication token to the GitLab host: a runner registered "
                "there runs CI jobs next to GitLab.",
                step.urn,
            )
        for prop in ("create", "update"):
            text = _known(step.props, prop)
            if isinstance(text, str) and (found := runner_start_in(text)):
                yield f"step {step.name} registers or starts a runner on the GitLab host ({found!r}).", step.urn
                break


STACK_POLICIES = [gitlab_host_runs_no_runner]
