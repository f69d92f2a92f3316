"""The CI runner fleet as data: the manager's config.toml, the job VMs' boot document, the IAM policy.

Pure functions over plain values, tested without Pulumi; ``components/runners.py`` feeds them
Outputs. GitLab Runner's ``docker-autoscaler`` executor runs on the manager and asks the AWS
fleeting plugin for job VMs from one EC2 Auto Scaling group; it reaches each VM's Docker daemon
over SSH (``docker system dial-stdio``), so every host path a job mounts is a path on the job VM
(gitlab-runner docs/executors/docker_autoscaler.md, docs/configuration/advanced-configuration.md).

Nothing returned here holds a secret: config.toml carries ``TOKEN_PLACEHOLDER`` where the runner
token goes, and the configure step (userdata/runners/configure-runner.sh) puts the token, read
from stdin, in its place on the manager.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from components import versions
from components.cloudinit import INSTALL_DIR, cloud_config, script_file
from components.gitlab_config import RUNNER_FEATURE_FLAGS, docker_daemon_config

# ---- paths on the manager ----------------------------------------------------------------------
CONFIG_DIR = "/etc/gitlab-runner"  # where the apt package's service reads config.toml
CONFIG_FILE = f"{CONFIG_DIR}/config.toml"
CA_FILE = f"{CONFIG_DIR}/certs/ca.crt"  # GitLab's CA: tls-ca-file on the manager, the same path on job VMs
FLEETING_DIR = f"{CONFIG_DIR}/fleeting"
# The private key the manager logs in to job VMs with (connector_config key_path: the runner reads the
# file and hands the key to the connector, gitlab-runner executors/internal/autoscaler/provider.go).
FLEETING_KEY_FILE = f"{FLEETING_DIR}/id_ed25519"
# The AWS SDK's shared config file the plugin reads (plugin_config config_file): it names the region;
# credentials come from the instance profile (IMDSv2).
AWS_CONFIG_FILE = f"{FLEETING_DIR}/aws-config"
# Where `gitlab-runner fleeting install` puts plugins and where the service looks for them: set
# explicitly (FLEETING_PLUGIN_PATH, docs/fleet_scaling/fleeting.md) so nothing depends on the
# service's $HOME.
FLEETING_PLUGIN_PATH = "/var/lib/gitlab-runner/fleeting/plugins"
# Stands for the runner authentication token in the rendered config.toml; the step replaces it.
TOKEN_PLACEHOLDER = "@@RUNNER_TOKEN@@"

# ---- the job VMs --------------------------------------------------------------------------------
JOB_VM_USER = "admin"  # Debian cloud images' login user (components/hosts.py SSH_USER), in group docker
REGISTRY_CERTS_DIR = "/etc/docker/certs.d"  # dockerd reads <host:port>/ca.crt at each pull, no restart
# Docker-in-Docker over TLS (/certs/client, doc/ci/docker/using_docker_build.md), the runner's cache,
# GitLab's CA for the helper (it installs /etc/gitlab-runner/certs/ca.crt at start,
# docs/configuration/tls-self-signed.md) and the registry's CA for the dind daemon (bind-mounted into
# job and service containers alike: REFERENCE.md section 2, "dind to registry"). Host paths are on the job VM.
JOB_VOLUMES = (
    "/certs/client",
    "/cache",
    f"{CA_FILE}:{CA_FILE}:ro",
    f"{REGISTRY_CERTS_DIR}:{REGISTRY_CERTS_DIR}:ro",
)
# The only images that may run privileged, and only as services: the Docker-in-Docker daemon the app's
# pipeline builds with. `privileged = false` keeps every job container unprivileged; services take
# `services_privileged` and must match this allow-list (doublestar patterns on the service name as the
# job writes it: gitlab-runner executors/docker/docker.go isInAllowedPrivilegedImages).
PRIVILEGED_SERVICES = (
    "docker:dind",
    "docker:*-dind",
    "docker.io/library/docker:dind",
    "docker.io/library/docker:*-dind",
)
# Run on every new job VM before it takes a job; a failure removes the VM (advanced-configuration.md
# instance_ready_command). cloud-init's own status: 0 done, 2 done with recoverable errors (23.4+,
# REFERENCE.md section 3); the boot script fails cloud-init if Docker is not running.
READY_COMMAND = "sudo -n cloud-init status --wait >/dev/null || test $? -eq 2"
# "Use the version constraint to find the latest matching version"; an exact X.Y.Z pins it
# (docs/fleet_scaling/fleeting.md). Default registry and repository: registry.gitlab.com/gitlab-org/fleeting/plugins.
FLEETING_PLUGIN = f"aws:{versions.FLEETING_PLUGIN_AWS_VERSION}"

# What the AWS fleeting plugin calls, from its README's "Recommended IAM Policy" (fleeting-plugin-aws
# 0.4 README; 1.1.0 adds ec2:DescribeSpotInstanceRequests: cattle-ops/terraform-aws-gitlab-runner#1319,
# quoting the 1.1.0 README). The two write actions take the group's ARN; AWS grants the Describe
# actions on "*" only (they support no resource-level permission). No SendSSHPublicKey: job VMs take
# the manager's static key (Debian has no EC2 Instance Connect), and no GetPasswordData (Linux).
FLEETING_WRITE_ACTIONS = ("autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup")
FLEETING_DESCRIBE_ACTIONS = (
    "autoscaling:DescribeAutoScalingGroups",
    "ec2:DescribeInstances",
    "ec2:DescribeSpotInstanceRequests",
)


@dataclass(frozen=True)
class Fleet:
    """One runner manager's fleet: what config.toml says, all of it public."""

    name: str  # the runner's name in GitLab's list (config.toml [[runners]] name)
    gitlab_url: str  # https://<GitLab hostname>
    group_name: str  # the job VMs' Auto Scaling group (plugin_config name)
    job_image: str  # default image of jobs that name none
    max_instances: int
    capacity_per_instance: int
    idle_count: int
    idle_time: str

    @property
    def concurrent(self) -> int:
        """Jobs the manager runs at once: every slot of every VM ("max instances * capacity per
        instance", docker_autoscaler.md). `concurrent` defaults to 1 and 0 is forbidden."""
        return self.max_instances * self.capacity_per_instance


def manager_config(fleet: Fleet) -> dict[str, Any]:
    """The manager's config.toml as a document (``to_toml`` renders it).

    Each job VM runs ``capacity_per_instance`` jobs in its life, then is deleted (``max_use_count``):
    with the default 1, every job starts on a fresh VM no other job touched. ``idle_count`` slots stay
    booted; any other VM is removed once idle for ``idle_time``, so with no job and idle_count 0 the
    group is at 0. Autoscaler settings other than the policy are read at start only
    (advanced-configuration.md), which is why the configure step restarts the runner on a change.
    """
    return {
        "concurrent": fleet.concurrent,
        "runners": [
            {
                "name": fleet.name,
                "url": fleet.gitlab_url,
                "token": TOKEN_PLACEHOLDER,
                # Read by the manager for every call to GitLab (docs/configuration/tls-self-signed.md).
                "tls-ca-file": CA_FILE,
                "executor": "docker-autoscaler",
                "shell": "sh",
                "limit": fleet.concurrent,
                # In config.toml, where no job can turn them off (docs/configuration/feature-flags.md).
                "feature_flags": {flag: True for flag in RUNNER_FEATURE_FLAGS},
                "docker": {
                    "image": fleet.job_image,
                    "privileged": False,
                    "services_privileged": True,
                    "allowed_privileged_services": list(PRIVILEGED_SERVICES),
                    "volumes": list(JOB_VOLUMES),
                },
                "autoscaler": {
                    "plugin": FLEETING_PLUGIN,
                    "capacity_per_instance": fleet.capacity_per_instance,
                    "max_use_count": fleet.capacity_per_instance,
                    "max_instances": fleet.max_instances,
                    # A stopped manager leaves no job VM running (and billed) behind.
                    "delete_instances_on_shutdown": True,
                    "instance_ready_command": READY_COMMAND,
                    "plugin_config": {"name": fleet.group_name, "config_file": AWS_CONFIG_FILE},
                    # Static credentials: the fleeting plugin would otherwise push a key with EC2
                    # Instance Connect, which Debian images lack. With static credentials the plugin
                    # returns before filling the protocol in (fleeting-plugin-aws provider.go
                    # ConnectInfo), so it is set here. The VM's private address: the manager and the
                    # job VMs share the VPC, and only the manager's group may reach port 22.
                    "connector_config": {
                        "os": "linux",
                        "arch": "amd64",
                        "protocol": "ssh",
                        "protocol_port": 22,
                        "username": JOB_VM_USER,
                        "use_static_credentials": True,
                        "key_path": FLEETING_KEY_FILE,
                        "use_external_addr": False,
                        "keepalive": "30s",
                        "timeout": "10m",
                    },
                    # One policy, always in force (periods: every minute of every day).
                    "policy": [
                        {"periods": ["* * * * *"], "idle_count": fleet.idle_count, "idle_time": fleet.idle_time}
                    ],
                },
            }
        ],
    }


def aws_shared_config(region: str) -> str:
    """The plugin's AWS config file: the region only (the SDK reads credentials from IMDSv2)."""
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", region):
        raise ValueError(f"{region!r} is not an AWS region name such as us-east-1")
    return f"[default]\nregion = {region}\n"


# ---- TOML -------------------------------------------------------------------------------------------
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string: the same quotes and escapes (\" \\ \n \uXXXX).
        return json.dumps(value)
    if isinstance(value, list) and all(not isinstance(item, (dict, list)) for item in value):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _table(document: Mapping[str, Any], path: Sequence[str], out: list[str]) -> None:
    """Scalars first, then sub-tables, then arrays of tables: the order TOML needs."""
    for name, value in document.items():
        if not isinstance(value, dict) and not _is_table_array(value):
            out.append(f"{_key(name)} = {_value(value)}")
    for name, value in document.items():
        if isinstance(value, dict):
            out.append("")
            out.append("[" + ".".join(_key(part) for part in (*path, name)) + "]")
            _table(value, (*path, name), out)
    for name, value in document.items():
        if _is_table_array(value):
            for item in value:
                out.append("")
                out.append("[[" + ".".join(_key(part) for part in (*path, name)) + "]]")
                _table(item, (*path, name), out)


def to_toml(document: Mapping[str, Any]) -> str:
    """``document`` as TOML text (strings, integers, booleans, lists, tables, arrays of tables)."""
    out: list[str] = ["# Rendered by Pulumi (components/runner_config.py); the configure step rewrites it."]
    _table(document, (), out)
    return "\n".join(out) + "\n"


# ---- boot documents --------------------------------------------------------------------------------
def job_vm_cloud_config(*, registry_host: str, gitlab_ca_pem: str, manager_public_key: str) -> dict[str, Any]:
    """A job VM's user data: Docker from Docker's repository, GitLab's CA where jobs read it, the manager's key.

    Public material only: the VM never holds a secret of its own (no instance profile, no token).
    """
    if not manager_public_key.startswith("ssh-"):
        raise ValueError("the manager's public key must be one OpenSSH public key line")
    ca = gitlab_ca_pem if gitlab_ca_pem.endswith("\n") else gitlab_ca_pem + "\n"
    document = cloud_config(
        hostname="ci-job",
        write_files=[
            script_file("gitlab/install-docker.sh"),
            {
                "path": "/etc/docker/daemon.json",
                "permissions": "0644",
                "owner": "root:root",
                "content": docker_daemon_config(),
            },
            # The helper container and git trust GitLab; dind and the VM's dockerd trust the registry.
            {"path": CA_FILE, "permissions": "0644", "owner": "root:root", "content": ca},
            {
                "path": f"{REGISTRY_CERTS_DIR}/{registry_host}/ca.crt",
                "permissions": "0644",
                "owner": "root:root",
                "content": ca,
            },
        ],
        runcmd=[
            [f"{INSTALL_DIR}/gitlab/install-docker.sh"],
            # The executor reaches the Docker socket as this user (docker_autoscaler.md prerequisites).
            ["usermod", "--append", "--groups", "docker", JOB_VM_USER],
        ],
    )
    # The manager's key is the only way in; the operator's key is not added (nothing to do on a VM
    # that lives for one job, and port 22 admits the manager's security group only).
    document["ssh_authorized_keys"] = [manager_public_key.strip()]
    return document


def manager_cloud_config(*, operator_ssh_public_key: str | None) -> dict[str, Any]:
    """The manager's user data: nothing but the host's basics. The runner arrives by the steps over
    SSH, which re-run when it changes; user data runs at first boot only."""
    document = cloud_config(
        hostname="runner-manager", write_files=[], runcmd=[], operator_ssh_public_key=operator_ssh_public_key
    )
    del document["runcmd"]  # nothing to run at boot (the schema refuses an empty runcmd)
    return document


# ---- IAM ---------------------------------------------------------------------------------------------
def fleeting_policy(group_arn: str) -> dict[str, Any]:
    """The manager's permissions: scale and shrink its one group, and read what the plugin reads."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ScaleTheJobVmGroup",
                "Effect": "Allow",
                "Action": list(FLEETING_WRITE_ACTIONS),
                "Resource": group_arn,
            },
            {
                "Sid": "ReadTheFleet",
                "Effect": "Allow",
                "Action": list(FLEETING_DESCRIBE_ACTIONS),
                "Resource": "*",
            },
        ],
    }
