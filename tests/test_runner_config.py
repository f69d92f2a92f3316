"""The runner fleet as data: config.toml, the job VMs' boot document and the manager's IAM policy, without Pulumi."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from components import runner_config, versions
from components.cloudinit import render
from components.gitlab_config import RUNNER_JOB_IMAGE
from policy.gitops_policies.aws import policy_document_findings, user_data_findings
from tests.conftest import system_tool

CA = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUYk0b\n-----END CERTIFICATE-----\n"
MANAGER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHJ1bm5lci1tYW5hZ2VyLWtleS1mb3ItdGVzdHM\n"
GROUP_ARN = (
    "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:468aa16e-6596-ce52-359a-3552017b4996:"
    "autoScalingGroupName/runners-job-vms-9af746b"
)


def fleet(**overrides: object) -> runner_config.Fleet:
    values: dict = {
        "name": "gitops-dev",
        "gitlab_url": "https://gitlab.example.com",
        "group_name": "runners-job-vms-9af746b",
        "job_image": RUNNER_JOB_IMAGE,
        "max_instances": 2,
        "capacity_per_instance": 1,
        "idle_count": 0,
        "idle_time": "10m",
    }
    return runner_config.Fleet(**{**values, **overrides})


def parsed(**overrides: object) -> dict:
    """config.toml as GitLab Runner reads it (a real TOML parser, not the writer's own view)."""
    return tomllib.loads(runner_config.to_toml(runner_config.manager_config(fleet(**overrides))))


# ---- config.toml ------------------------------------------------------------------------------------
def test_the_rendered_toml_parses_back_to_the_document() -> None:
    document = runner_config.manager_config(fleet())
    assert tomllib.loads(runner_config.to_toml(document)) == document


@pytest.mark.parametrize(
    "value",
    ['quote " and backslash \\', "tab\tnewline\n", "ünïcödé", "a = b # not a comment", "[not a table]"],
)
def test_strings_survive_toml_escaping(value: str) -> None:
    document = {"runners": [{"name": value, "docker": {"volumes": [value]}}], "key with space": value}
    assert tomllib.loads(runner_config.to_toml(document)) == document


def test_the_manager_runs_the_docker_autoscaler_executor_with_the_pinned_aws_plugin() -> None:
    [runner] = parsed()["runners"]
    assert runner["executor"] == "docker-autoscaler"
    assert runner["url"] == "https://gitlab.example.com"
    assert runner["tls-ca-file"] == "/etc/gitlab-runner/certs/ca.crt"
    assert runner["token"] == runner_config.TOKEN_PLACEHOLDER == "@@RUNNER_TOKEN@@"
    assert runner["feature_flags"] == {"FF_NETWORK_PER_BUILD": True}
    autoscaler = runner["autoscaler"]
    assert autoscaler["plugin"] == f"aws:{versions.FLEETING_PLUGIN_AWS_VERSION}" == "aws:1.1.0"
    assert autoscaler["plugin_config"] == {
        "name": "runners-job-vms-9af746b",
        "config_file": "/etc/gitlab-runner/fleeting/aws-config",
    }
    assert autoscaler["delete_instances_on_shutdown"] is True
    assert autoscaler["instance_ready_command"] == "sudo -n cloud-init status --wait >/dev/null || test $? -eq 2"


def test_the_manager_logs_in_to_job_vms_with_its_static_key_over_the_private_network() -> None:
    connector = parsed()["runners"][0]["autoscaler"]["connector_config"]
    assert connector["use_static_credentials"] is True  # Debian has no EC2 Instance Connect
    assert connector["protocol"] == "ssh" and connector["protocol_port"] == 22
    assert connector["username"] == "admin"
    assert connector["key_path"] == "/etc/gitlab-runner/fleeting/id_ed25519"
    assert connector["use_external_addr"] is False
    assert (connector["os"], connector["arch"]) == ("linux", "amd64")


@pytest.mark.parametrize(("instances", "capacity"), [(1, 1), (2, 1), (5, 3), (20, 8)])
def test_capacity_is_consistent_everywhere(instances: int, capacity: int) -> None:
    config = parsed(max_instances=instances, capacity_per_instance=capacity)
    [runner] = config["runners"]
    autoscaler = runner["autoscaler"]
    assert config["concurrent"] == runner["limit"] == instances * capacity  # every slot of every VM
    assert autoscaler["max_instances"] == instances
    assert autoscaler["capacity_per_instance"] == capacity
    # A VM runs as many jobs in its life as it has slots, then goes: never a second round of jobs.
    assert autoscaler["max_use_count"] == capacity


def test_idle_policy_scales_to_zero_by_default() -> None:
    [policy] = parsed()["runners"][0]["autoscaler"]["policy"]
    assert policy == {"periods": ["* * * * *"], "idle_count": 0, "idle_time": "10m"}
    [warm] = parsed(idle_count=2, idle_time="1h30m")["runners"][0]["autoscaler"]["policy"]
    assert (warm["idle_count"], warm["idle_time"]) == (2, "1h30m")


def test_jobs_are_unprivileged_and_only_docker_in_docker_services_are_privileged() -> None:
    docker = parsed()["runners"][0]["docker"]
    assert docker["privileged"] is False
    assert docker["services_privileged"] is True
    assert docker["allowed_privileged_services"] == [
        "docker:dind",
        "docker:*-dind",
        "docker.io/library/docker:dind",
        "docker.io/library/docker:*-dind",
    ]
    assert docker["image"] == RUNNER_JOB_IMAGE == versions.DOCKER_CLI_IMAGE


def test_the_app_pipelines_dind_service_is_on_the_privileged_allow_list() -> None:
    """GitLab Runner matches the service name as the job writes it, with doublestar globs
    (executors/docker/docker.go isInAllowedPrivilegedImages); `*` stays within one path segment."""
    from fnmatch import fnmatchcase

    allowed = runner_config.PRIVILEGED_SERVICES
    assert any(fnmatchcase(versions.DOCKER_DIND_IMAGE, pattern) for pattern in allowed)
    pipelines = sorted((Path(__file__).resolve().parents[1] / "apps/shark-app/ci").glob("*.gitlab-ci.yml"))
    assert {"pull.gitlab-ci.yml", "push.gitlab-ci.yml"} <= {pipeline.name for pipeline in pipelines}
    for pipeline in pipelines:
        # Every service any job (or template) of every pipeline part starts: only the pinned dind.
        jobs = yaml.safe_load(pipeline.read_text())
        for job_name, job in jobs.items():
            if isinstance(job, dict) and "services" in job:
                assert job["services"] == ["@@DOCKER_DIND_IMAGE@@"], f"{pipeline.name}: {job_name}"
    assert yaml.safe_load((pipelines[0].parent / "pull.gitlab-ci.yml").read_text())[".docker"]["services"]
    for other in ("docker:29.7.2-cli", "alpine:3.22", "evil/docker:29-dind", "registry.example.com/docker:29-dind"):
        assert not any(fnmatchcase(other, pattern) for pattern in allowed), other


def test_job_volumes_give_dind_its_certificates_and_both_cas() -> None:
    volumes = parsed()["runners"][0]["docker"]["volumes"]
    assert volumes == [
        "/certs/client",
        "/cache",
        "/etc/gitlab-runner/certs/ca.crt:/etc/gitlab-runner/certs/ca.crt:ro",
        "/etc/docker/certs.d:/etc/docker/certs.d:ro",
    ]


def test_the_plugins_region_comes_from_its_config_file() -> None:
    assert runner_config.aws_shared_config("eu-west-3") == "[default]\nregion = eu-west-3\n"
    with pytest.raises(ValueError, match="not an AWS region"):
        runner_config.aws_shared_config("eu-west-3\nregion = us-east-1")


# ---- the job VM's boot document --------------------------------------------------------------------------
def job_vm_user_data() -> str:
    return render(
        runner_config.job_vm_cloud_config(
            registry_host="gitlab.example.com:5050", gitlab_ca_pem=CA, manager_public_key=MANAGER_KEY
        )
    )


def test_job_vms_trust_gitlab_where_the_helper_and_dind_read_it() -> None:
    document = yaml.safe_load(job_vm_user_data())
    files = {entry["path"]: entry for entry in document["write_files"]}
    assert files["/etc/gitlab-runner/certs/ca.crt"]["content"] == CA
    assert files["/etc/docker/certs.d/gitlab.example.com:5050/ca.crt"]["content"] == CA
    assert json.loads(files["/etc/docker/daemon.json"]["content"]) == {"log-driver": "local"}
    # Every path a job mounts is a path on the job VM (the executor's Docker daemon is the VM's).
    for volume in runner_config.JOB_VOLUMES:
        source = volume.split(":", 1)[0]
        if source.startswith("/etc/"):
            assert any(path.startswith(source) for path in files), source


def test_job_vms_install_docker_and_let_the_manager_in_only() -> None:
    document = yaml.safe_load(job_vm_user_data())
    assert document["runcmd"] == [
        ["/usr/local/lib/gitops/gitlab/install-docker.sh"],
        ["usermod", "--append", "--groups", "docker", "admin"],
    ]
    assert document["ssh_authorized_keys"] == [MANAGER_KEY.strip()]
    assert document["package_upgrade"] is False  # boot fast: no upgrade of the image at every start


def test_job_vm_user_data_holds_no_secret_and_fits_ec2s_limit() -> None:
    text = job_vm_user_data()
    assert user_data_findings(text) == []
    # "User data is limited to 16 KB, in raw form, before it is base64-encoded" (EC2 user guide).
    assert len(text.encode()) < 16 * 1024


def test_job_vm_and_manager_user_data_pass_the_cloud_init_schema(tmp_path: Path) -> None:
    cloud_init = system_tool("cloud-init", "apt-get install --no-install-recommends cloud-init")
    documents = {
        "job-vm": job_vm_user_data(),
        "manager": render(runner_config.manager_cloud_config(operator_ssh_public_key=MANAGER_KEY.strip())),
    }
    for name, text in documents.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        result = subprocess.run([cloud_init, "schema", "--config-file", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"


def test_a_manager_key_that_is_not_a_public_key_is_refused() -> None:
    with pytest.raises(ValueError, match="one OpenSSH public key line"):
        runner_config.job_vm_cloud_config(
            registry_host="gitlab.example.com:5050",
            gitlab_ca_pem=CA,
            manager_public_key="-----BEGIN OPENSSH PRIVATE KEY-----",
        )


# ---- IAM --------------------------------------------------------------------------------------------
def test_the_manager_may_scale_and_shrink_its_one_group_and_read_the_fleet() -> None:
    document = runner_config.fleeting_policy(GROUP_ARN)
    scale, read = document["Statement"]
    assert scale["Action"] == ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"]
    assert scale["Resource"] == GROUP_ARN
    assert read["Action"] == [
        "autoscaling:DescribeAutoScalingGroups",
        "ec2:DescribeInstances",
        "ec2:DescribeSpotInstanceRequests",
    ]
    assert read["Resource"] == "*"
    assert all(statement["Effect"] == "Allow" for statement in document["Statement"])
    actions = [action for statement in document["Statement"] for action in statement["Action"]]
    assert not any("*" in action for action in actions)
    # Nothing that launches, tags or passes a role, nor EC2 Instance Connect: the plugin needs none.
    assert not any(verb in action for action in actions for verb in ("RunInstances", "PassRole", "SendSSHPublicKey"))
    assert policy_document_findings(document, set()) == []
