"""Cloud-init documents built as data, and the shell files they carry.

User data holds public material only (packages, configuration, scripts, CA certificates): anything
secret reaches a host over SSH on stdin (components/remote.py).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

USERDATA = Path(__file__).resolve().parent.parent / "userdata"
INSTALL_DIR = "/usr/local/lib/gitops"  # where boot scripts land on the host
ENV_DIR = "/etc/gitops"  # their parameters, one env file per role


def read_script(relative_path: str) -> str:
    """The text of a file under userdata/ (tests run shellcheck on the same files)."""
    return (USERDATA / relative_path).read_text()


def script_file(relative_path: str) -> dict[str, str]:
    """A write_files entry installing userdata/<relative_path> as an executable under INSTALL_DIR."""
    return {
        "path": f"{INSTALL_DIR}/{relative_path}",
        "permissions": "0755",
        "owner": "root:root",
        "content": read_script(relative_path),
    }


def env_file(name: str, values: Mapping[str, str]) -> dict[str, str]:
    """A write_files entry with shell-quoted KEY=value lines, sourced by the boot scripts."""
    lines = [f"{key}={shlex.quote(str(value))}" for key, value in sorted(values.items())]
    return {
        "path": f"{ENV_DIR}/{name}.env",
        "permissions": "0644",
        "owner": "root:root",
        "content": "\n".join(lines) + "\n",
    }


def cloud_config(
    *,
    hostname: str,
    write_files: list[dict[str, str]],
    runcmd: list[list[str]],
    operator_ssh_public_key: str | None = None,
) -> dict[str, Any]:
    """The cloud-config every host starts from: hostname, files, then the boot script.

    No package work in cloud-init itself: every host boots without a public address (its Elastic IP
    is associated moments after it starts, or the route appears late), so cloud-init's own
    package_update could fail; the boot scripts install packages once the network is up, with
    retries (userdata/*/node-bootstrap.sh, install-docker.sh).
    """
    document: dict[str, Any] = {
        "hostname": hostname,
        "preserve_hostname": False,
        # "127.0.1.1 <hostname>" in /etc/hosts: sudo and kubeadm's preflight resolve the host name.
        "manage_etc_hosts": True,
        "package_update": False,
        "package_upgrade": False,  # reproducible boots; upgrades are an operator decision
        "write_files": [script_file("lib/common.sh"), *write_files],
        "runcmd": runcmd,
    }
    if operator_ssh_public_key:
        # Added to the default user (admin) next to the EC2 key pair's key.
        document["ssh_authorized_keys"] = [operator_ssh_public_key]
    return document


def render(document: Mapping[str, Any]) -> str:
    """User data text: the #cloud-config header then the document as YAML."""
    return "#cloud-config\n" + yaml.safe_dump(dict(document), sort_keys=False, width=1000)
