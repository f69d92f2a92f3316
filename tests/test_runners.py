"""The CI runner fleet under mocks: a hardened manager, job VMs an Auto Scaling group starts from 0, and their wiring."""

from __future__ import annotations

import base64
import json
import shlex
import tomllib

import pytest
import yaml

from components import runner_config, runners, versions
from components.config import MAX_RUNNER_INSTANCES
from components.gitlab_config import secret_bundle
from tools.harness import ProgramError, ProgramRun, Registration, is_secret_value, plain

INSTANCE = "aws:ec2/instance:Instance"
TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
GROUP = "aws:autoscaling/group:Group"
STEP = "command:remote:Command"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"


def step_parts(registration: Registration) -> tuple[dict[str, str], str]:
    words = shlex.split(registration.plain_inputs["create"])
    bash = words.index("bash")
    return dict(word.split("=", 1) for word in words[2:bash]), words[bash + 2]


def configured(run: ProgramRun) -> dict:
    env, _ = step_parts(run.one(STEP, "runners-manager-configure"))
    return tomllib.loads(env["RUNNER_CONFIG_TOML"])


def group_id(run: ProgramRun, name: str) -> str:
    return run.one(SECURITY_GROUP, name).id or ""


# ---- job VMs --------------------------------------------------------------------------------------
def test_job_vms_are_hardened_and_hold_no_permission(dev) -> None:
    template = dev.one(TEMPLATE, "runners-job-vm").plain_inputs
    assert template["metadataOptions"] == {
        "httpEndpoint": "enabled",
        "httpTokens": "required",
        "httpPutResponseHopLimit": 1,
    }
    [root] = template["blockDeviceMappings"]
    assert root["deviceName"] == "/dev/xvda"  # the AMI's root device: this sizes and encrypts the root disk
    assert root["ebs"] == {"volumeSize": 30, "volumeType": "gp3", "encrypted": "true", "deleteOnTermination": "true"}
    assert template["ebsOptimized"] == "true"
    assert "iamInstanceProfile" not in template, "a job VM has no AWS permission at all"
    assert "keyName" not in template, "the admin key opens no job VM"
    [interface] = template["networkInterfaces"]
    assert interface["securityGroups"] == [group_id(dev, "runners-job-vm-group")]
    assert interface["associatePublicIpAddress"] == "true"  # public subnets, no NAT: images come from the internet
    kinds = {spec["resourceType"]: spec["tags"] for spec in template["tagSpecifications"]}
    assert set(kinds) == {"instance", "volume", "network-interface"}
    assert all(tags["Project"] == "gitops" and tags["Stack"] == "dev" for tags in kinds.values())
    assert template["instanceType"] == "t3.medium"


def test_job_vm_user_data_trusts_gitlab_and_the_managers_key_only(dev) -> None:
    template = dev.one(TEMPLATE, "runners-job-vm").plain_inputs
    document = yaml.safe_load(base64.b64decode(template["userData"]).decode())
    key = dev.one("tls:index/privateKey:PrivateKey", "runners-fleeting-key").state["publicKeyOpenssh"]
    assert document["ssh_authorized_keys"] == [key.strip()]
    files = {entry["path"]: entry["content"] for entry in document["write_files"]}
    registry = dev.outputs["gitlabRegistryHost"]
    assert files[f"/etc/docker/certs.d/{registry}/ca.crt"].strip() == dev.outputs["gitlabCaPem"].strip()
    assert files["/etc/gitlab-runner/certs/ca.crt"].strip() == dev.outputs["gitlabCaPem"].strip()


def test_the_group_starts_empty_and_only_the_runner_scales_it(dev) -> None:
    registration = dev.one(GROUP, "runners-job-vms")
    group = registration.plain_inputs
    # A ceiling that never moves; the runner's max_instances (2 here) is the limit that works.
    assert (group["minSize"], group["maxSize"]) == (0, runners.GROUP_MAX_SIZE)
    assert {"key": "MaxInstances", "value": "2", "propagateAtLaunch": False} in group["tags"]
    assert "desiredCapacity" not in group and registration.ignore_changes == ["desiredCapacity"]
    assert group["protectFromScaleIn"] is True
    assert group["suspendedProcesses"] == ["AZRebalance"]
    assert group["capacityRebalance"] is False
    assert "instanceRefresh" not in group, "an instance refresh would terminate VMs running jobs"
    assert sorted(group["vpcZoneIdentifiers"]) == sorted(dev.outputs["subnetIds"])
    template = dev.one(TEMPLATE, "runners-job-vm")
    assert group["launchTemplate"] == {"id": template.id, "version": str(template.state["latestVersion"])}
    assert dev.outputs["runnerAutoscalingGroup"] == registration.state["name"]
    assert not dev.all("aws:autoscaling/policy:Policy"), "no scaling policy: the runner alone scales the group"


def test_the_groups_ceiling_admits_every_max_instances_the_config_accepts(run_stack) -> None:
    """The plugin needs the group's MaxSize at or above max_instances (fleeting-plugin-aws README)."""
    assert runners.GROUP_MAX_SIZE >= MAX_RUNNER_INSTANCES
    run = run_stack("dev", runnerMaxInstances=MAX_RUNNER_INSTANCES)
    assert run.one(GROUP, "runners-job-vms").plain_inputs["maxSize"] >= MAX_RUNNER_INSTANCES
    assert configured(run)["runners"][0]["autoscaler"]["max_instances"] == MAX_RUNNER_INSTANCES


def test_a_job_vm_type_that_cannot_boot_the_amd64_image_stops_the_program(run_stack) -> None:
    """config.py refuses the Graviton names; an arm64 type it cannot tell by name (Apple silicon Macs)
    is refused from DescribeInstanceTypes before the runners create anything."""
    with pytest.raises(ProgramError) as caught:
        run_stack("dev", runnerInstanceType="mac2.metal")
    assert type(caught.value.error).__name__ == "RunError"
    assert "runnerInstanceType: got 'mac2.metal' (arm64); expected an x86_64 instance type" in str(caught.value)
    assert not [
        r for r in caught.value.registrations if r.name.startswith("runners-") and r.type != "gitops:runners:Runners"
    ]


def test_max_instances_is_config_and_reaches_the_group_and_the_runner(run_stack) -> None:
    run = run_stack("dev", runnerMaxInstances=5, runnerCapacityPerInstance=2, runnerIdleCount=1, runnerIdleTime="30m")
    group = run.one(GROUP, "runners-job-vms").plain_inputs
    assert group["maxSize"] == runners.GROUP_MAX_SIZE
    assert {"key": "MaxInstances", "value": "5", "propagateAtLaunch": False} in group["tags"]
    config = configured(run)
    autoscaler = config["runners"][0]["autoscaler"]
    assert (config["concurrent"], autoscaler["max_instances"], autoscaler["capacity_per_instance"]) == (10, 5, 2)
    assert autoscaler["policy"][0] | {} == {"periods": ["* * * * *"], "idle_count": 1, "idle_time": "30m"}
    assert run.one(TEMPLATE, "runners-job-vm").plain_inputs["instanceType"] == "t3.medium"
    other = run_stack("dev", runnerInstanceType="c6i.large")
    assert other.one(TEMPLATE, "runners-job-vm").plain_inputs["instanceType"] == "c6i.large"


# ---- network ------------------------------------------------------------------------------------------
def rules_on(run: ProgramRun, group: str) -> set[tuple[int, str]]:
    names = {g.id: g.name for g in run.all(SECURITY_GROUP)}
    target = group_id(run, group)
    seen = set()
    for rule in run.all(INGRESS):
        inputs = rule.plain_inputs
        if inputs["securityGroupId"] == target and inputs["ipProtocol"] == "tcp":
            assert inputs["fromPort"] == inputs["toPort"], rule.name
            seen.add((inputs["fromPort"], inputs.get("cidrIpv4") or names[inputs["referencedSecurityGroupId"]]))
    return seen


def test_only_the_manager_reaches_job_vms_and_only_admins_reach_the_manager(run_stack) -> None:
    run = run_stack("dev", adminCidrs=["203.0.113.7/32", "198.51.100.0/24"])
    assert rules_on(run, "runners-job-vm-group") == {(22, "runners-manager-group")}
    assert rules_on(run, "runners-manager-group") == {(22, "203.0.113.7/32"), (22, "198.51.100.0/24")}
    gitlab = rules_on(run, "gitops-gitlab")
    assert {(443, "runners-manager-group"), (443, "runners-job-vm-group"), (5050, "runners-job-vm-group")} <= gitlab
    assert (2222, "runners-job-vm-group") not in gitlab and (22, "runners-job-vm-group") not in gitlab


def test_certificate_push_deploy_jobs_reach_the_cluster_api_from_job_vms(run_stack, dev) -> None:
    push = run_stack("dev", delivery="push", clusterIntegration="certificate")
    assert (6443, "runners-job-vm-group") in rules_on(push, "gitops-cluster")
    # Pull mode deploys through Flux, inside the cluster: job VMs get no way to the API.
    assert (6443, "runners-job-vm-group") not in rules_on(dev, "gitops-cluster")
    # With the agent, the deploy job goes through GitLab's k8s proxy (443): no way to the API either.
    agent_push = run_stack("dev", delivery="push", clusterIntegration="agent")
    assert (6443, "runners-job-vm-group") not in rules_on(agent_push, "gitops-cluster")


# ---- the manager -----------------------------------------------------------------------------------
def test_the_manager_is_a_hardened_host_of_its_own(dev) -> None:
    manager = dev.one(INSTANCE, "runners-manager")
    inputs = manager.plain_inputs
    assert inputs["instanceType"] == "t3.small"
    assert inputs["metadataOptions"]["httpTokens"] == "required"
    assert inputs["rootBlockDevice"]["encrypted"] is True
    assert inputs["ebsOptimized"] is True
    assert inputs["vpcSecurityGroupIds"] == [group_id(dev, "runners-manager-group")]
    assert inputs["associatePublicIpAddress"] is True
    assert inputs["subnetId"] == dev.outputs["subnetIds"][0]
    assert {"ami", "userData", "ebsOptimized"} <= set(manager.ignore_changes)
    assert manager.delete_before_replace, "never two managers on one group"
    assert (
        inputs["iamInstanceProfile"] == dev.one("aws:iam/instanceProfile:InstanceProfile", "runners-manager-profile").id
    )
    assert "gitlab-runner" not in inputs["userData"], "the runner arrives by the steps, not by user data"
    assert dev.outputs["runnerManagerIp"] == manager.state["publicIp"]


def test_the_managers_role_may_scale_exactly_its_group(dev) -> None:
    policy = dev.one("aws:iam/rolePolicy:RolePolicy", "runners-manager-fleeting")
    role = dev.one("aws:iam/role:Role", "runners-manager-role")
    assert policy.plain_inputs["role"] == role.id
    group = dev.one(GROUP, "runners-job-vms")
    assert json.loads(policy.plain_inputs["policy"]) == runner_config.fleeting_policy(group.state["arn"])
    assert group.state["arn"].endswith(f":autoScalingGroupName/{group.state['name']}")
    trust = json.loads(role.plain_inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    # No other policy reaches the role; the job VMs' template has no profile (above).
    assert [p.name for p in dev.all("aws:iam/rolePolicy:RolePolicy") if p.plain_inputs["role"] == role.id] == [
        "runners-manager-fleeting"
    ]
    # The only managed-policy attachment of the stack is the DLM service role's (backups), not the runner's.
    attachments = dev.all("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    assert all(attachment.plain_inputs["role"] != role.id for attachment in attachments)


def test_the_runner_is_an_untagged_instance_runner_created_by_root(dev) -> None:
    runner = dev.one("gitlab:index/userRunner:UserRunner", "runners-runner")
    assert runner.plain_inputs["runnerType"] == "instance_type"
    assert runner.plain_inputs["untagged"] is True
    assert runner.provider.startswith(dev.one("pulumi:providers:gitlab", "gitlab-gitlab").urn)
    assert dev.outputs["gitlabRunnerId"] == runner.id
    assert "gitlabRunnerId" not in dev.secret_outputs


def test_the_manager_installs_the_pinned_runner_then_configures_it(dev, run_stack) -> None:
    install = dev.one(STEP, "runners-manager-install")
    configure = dev.one(STEP, "runners-manager-configure")
    manager = dev.one(INSTANCE, "runners-manager")
    assert step_parts(install)[0] == {"STEP_NAME": "runners/install-runner.sh", "GITLAB_RUNNER_VERSION": "19.4.1"}
    assert versions.GITLAB_RUNNER_VERSION == "19.4.1"
    assert install.urn in configure.depends_on
    assert dev.one("aws:iam/rolePolicy:RolePolicy", "runners-manager-fleeting").urn in configure.depends_on
    for step in (install, configure, dev.one(STEP, "runners-manager-operator-ssh-key")):
        assert step.plain_inputs["connection"]["host"] == manager.state["publicIp"]
        assert manager.id in step.plain_inputs["triggers"]
    other = run_stack("dev", gitlabRunnerVersion="19.3.0")
    assert step_parts(other.one(STEP, "runners-manager-install"))[0]["GITLAB_RUNNER_VERSION"] == "19.3.0"


def test_the_token_and_the_key_reach_the_manager_on_stdin_only(dev) -> None:
    configure = dev.one(STEP, "runners-manager-configure")
    runner = dev.one("gitlab:index/userRunner:UserRunner", "runners-runner")
    key = dev.one("tls:index/privateKey:PrivateKey", "runners-fleeting-key")
    assert is_secret_value(configure.inputs["stdin"])
    token = runner.state["token"]
    assert token.startswith("glrt-")
    assert plain(configure.inputs["stdin"]) == secret_bundle(
        {"runner_token": token, "fleeting_key": key.state["privateKeyOpenssh"]}
    )
    assert runner.urn in configure.property_dependencies["stdin"]
    text = configure.plain_inputs["create"]
    assert token not in text and "PRIVATE KEY" not in text


def test_the_configuration_names_the_group_gitlab_and_the_files_the_step_writes(dev) -> None:
    env, script = step_parts(dev.one(STEP, "runners-manager-configure"))
    config = configured(dev)
    [runner] = config["runners"]
    assert runner["url"] == dev.outputs["gitlabUrl"]
    assert runner["autoscaler"]["plugin_config"]["name"] == dev.outputs["runnerAutoscalingGroup"]
    assert env["GITLAB_CA_PEM"] == dev.outputs["gitlabCaPem"]
    assert env["AWS_SHARED_CONFIG"] == "[default]\nregion = us-east-1\n"
    assert env["RUNNER_CONFIG_FILE"] == runner_config.CONFIG_FILE
    assert env["RUNNER_CA_FILE"] == runner["tls-ca-file"]
    assert env["FLEETING_KEY_FILE"] == runner["autoscaler"]["connector_config"]["key_path"]
    assert env["AWS_CONFIG_FILE"] == runner["autoscaler"]["plugin_config"]["config_file"]
    assert env["FLEETING_PLUGIN_PATH"] == "/var/lib/gitlab-runner/fleeting/plugins"
    assert "gitlab-runner fleeting --config" in script


def test_every_new_resource_is_tagged_and_parented(dev) -> None:
    component = dev.one("gitops:runners:Runners", "runners")
    for registration in dev:
        if registration.name.startswith("runners-") and registration.custom:
            assert registration.parent in {component.urn, *(r.urn for r in dev.all(SECURITY_GROUP))}, registration.name
            if "tags" in registration.plain_inputs and registration.type != GROUP:
                assert registration.plain_inputs["tags"]["Name"] == registration.name
    tags = {tag["key"]: tag["value"] for tag in dev.one(GROUP, "runners-job-vms").plain_inputs["tags"]}
    assert tags == {
        "Project": "gitops",
        "Stack": "dev",
        "ManagedBy": "pulumi",
        "Name": "runners-job-vms",
        "MaxInstances": "2",
    }
