"""Bad configuration stops the program before anything is created, with a message a user can act on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from components import versions
from components.config import KEYS, ConfigError, duration_seconds, gitlab_version, parse_config
from tests.conftest import ADMIN
from tools.harness import ProgramError, run_fixture_stack

ROOT = Path(__file__).resolve().parent.parent

# Each row: overrides on top of a valid dev stack, then fragments the message must contain.
BAD_INPUTS = [
    pytest.param(
        {"adminCidrs": None},
        ["adminCidrs: missing", "pulumi config set --path 'adminCidrs[0]'"],
        id="admin-cidrs-missing",
    ),
    pytest.param(
        {"adminCidrs": ["203.0.113.7"]}, ["adminCidrs: got '203.0.113.7'", "network/prefix"], id="cidr-no-prefix"
    ),
    pytest.param(
        {"adminCidrs": ["10.0.0.1/8"]}, ["adminCidrs: got '10.0.0.1/8'", "host bits zero"], id="cidr-host-bits"
    ),
    pytest.param({"adminCidrs": ["300.1.2.0/24"]}, ["adminCidrs: got '300.1.2.0/24'"], id="cidr-bad-octet"),
    pytest.param({"adminCidrs": ["2001:db8::/32"]}, ["adminCidrs: got '2001:db8::/32'", "IPv6"], id="cidr-ipv6"),
    pytest.param({"adminCidrs": []}, ["adminCidrs: got []", "at least one entry"], id="cidr-empty-list"),
    pytest.param(
        {"adminCidrs": "203.0.113.7/32"},
        ["adminCidrs: got '203.0.113.7/32'", "a list of strings", "--path 'adminCidrs[0]'"],
        id="admin-cidrs-not-a-list",
    ),
    pytest.param({"appCidrs": ["0.0.0.0"]}, ["appCidrs: got '0.0.0.0'"], id="app-cidr-malformed"),
    pytest.param(
        {"controlPlaneCount": 2},
        ["controlPlaneCount: got 2", "1 or 3", "etcd needs a majority of its members to accept a write (2 of 2)"],
        id="control-planes-two",
    ),
    pytest.param(
        {"controlPlaneCount": 4},
        ["controlPlaneCount: got 4", "1 or 3", "(3 of 4)", "no more than 1 of them, like 3"],
        id="control-planes-even",
    ),
    pytest.param(
        {"controlPlaneCount": 0},
        ["controlPlaneCount: got 0", "1 or 3", "at least one control-plane node"],
        id="control-planes-zero",
    ),
    pytest.param(
        {"controlPlaneCount": 5}, ["controlPlaneCount: got 5", "1 or 3", "availability zones"], id="control-planes-five"
    ),
    pytest.param(
        {"controlPlaneCount": "three"}, ["controlPlaneCount: got 'three'", "1 or 3"], id="control-planes-word"
    ),
    pytest.param({"workerCount": 0}, ["workerCount: got 0", "an integer from 1 to 20"], id="workers-zero"),
    pytest.param({"workerCount": 21}, ["workerCount: got 21", "an integer from 1 to 20"], id="workers-above-max"),
    pytest.param({"workerCount": "two"}, ["workerCount: got 'two'", "an integer from 1 to 20"], id="workers-not-int"),
    pytest.param({"workerCount": "2.5"}, ["workerCount: got '2.5'"], id="workers-fraction"),
    pytest.param({"kubernetesVersion": "latest"}, ["kubernetesVersion: got 'latest'", "1.36"], id="k8s-latest"),
    pytest.param(
        {"kubernetesVersion": "1.18"}, ["kubernetesVersion: got '1.18'", "supported Kubernetes minor"], id="k8s-old"
    ),
    pytest.param({"kubernetesVersion": "1.36.1"}, ["kubernetesVersion: got '1.36.1'", "without patch"], id="k8s-patch"),
    pytest.param(
        {"kubernetesPatch": "1.37.2"},
        ["kubernetesPatch: got '1.37.2'", "an exact patch of kubernetesVersion 1.36 such as 1.36.7"],
        id="k8s-patch-of-another-minor",
    ),
    pytest.param({"kubernetesPatch": "latest"}, ["kubernetesPatch: got 'latest'", "or empty"], id="k8s-patch-latest"),
    pytest.param({"kubernetesPatch": "1.36"}, ["kubernetesPatch: got '1.36'", "an exact patch"], id="k8s-patch-minor"),
    pytest.param({"gitlabImageTag": "latest"}, ["gitlabImageTag: got 'latest'", "not latest"], id="gitlab-latest"),
    pytest.param(
        {"gitlabImageTag": "18.11.12"}, ["gitlabImageTag: got '18.11.12'", "-ce.<n>"], id="gitlab-no-ce-suffix"
    ),
    pytest.param(
        {"gitlabImageTag": "19.4.1-ee.0"}, ["gitlabImageTag: got '19.4.1-ee.0'", "not an EE tag"], id="gitlab-ee"
    ),
    pytest.param(
        {"gitlabImageTag": "18.10.7-ce.0"},
        ["gitlabImageTag: got '18.10.7-ce.0'", "18.11.x or 19.x", "no security fixes", "required upgrade stop"],
        id="gitlab-before-18-11",
    ),
    pytest.param(
        {"gitlabImageTag": "17.11.7-ce.0"}, ["gitlabImageTag: got '17.11.7-ce.0'", "18.11.x or 19.x"], id="gitlab-17"
    ),
    pytest.param(
        {"gitlabImageTag": "20.0.0-ce.0", "clusterIntegration": "certificate"},
        [
            "gitlabImageTag: got '20.0.0-ce.0'",
            "GitLab 20.0 removes the certificate-based cluster integration (clusterIntegration certificate)",
            "set clusterIntegration to agent first",
        ],
        id="gitlab-20-certificate",
    ),
    pytest.param(
        {"gitlabImageTag": "20.1.0-ce.0"},
        ["gitlabImageTag: got '20.1.0-ce.0'", "GitLab 20 is not supported by this program yet"],
        id="gitlab-20-agent",
    ),
    pytest.param(
        {"clusterIntegration": "kubeconfig"},
        ["clusterIntegration: got 'kubeconfig'", "one of agent, certificate"],
        id="cluster-integration-unknown",
    ),
    pytest.param(
        {"clusterIntegration": "Agent"},
        ["clusterIntegration: got 'Agent'", "one of agent, certificate"],
        id="cluster-integration-case",
    ),
    pytest.param(
        {"clusterIntegration": ""},
        ["clusterIntegration: got ''", "one of agent, certificate"],
        id="cluster-integration-empty",
    ),
    pytest.param(
        {"gitlabRunnerVersion": "latest"}, ["gitlabRunnerVersion: got 'latest'", "such as 19.4.1"], id="runner-latest"
    ),
    pytest.param(
        {"gitlabRunnerVersion": "alpine-v19.4.1"},
        ["gitlabRunnerVersion: got 'alpine-v19.4.1'", "(X.Y.Z, not latest)"],
        id="runner-image-tag-as-version",
    ),
    pytest.param(
        {"gitlabRunnerImageTag": "alpine-v19.4.1"},
        ["gitlabRunnerImageTag: replaced by gitlabRunnerVersion", "pulumi config rm gitlabRunnerImageTag"],
        id="runner-image-tag-retired",
    ),
    pytest.param(
        {"runnerMaxInstances": 0}, ["runnerMaxInstances: got 0", "an integer from 1 to 20"], id="runner-max-zero"
    ),
    pytest.param(
        {"runnerMaxInstances": 50}, ["runnerMaxInstances: got 50", "an integer from 1 to 20"], id="runner-max-high"
    ),
    pytest.param({"runnerMaxInstances": "two"}, ["runnerMaxInstances: got 'two'"], id="runner-max-not-int"),
    pytest.param(
        {"runnerCapacityPerInstance": 0},
        ["runnerCapacityPerInstance: got 0", "an integer from 1 to 8"],
        id="runner-capacity-zero",
    ),
    pytest.param(
        {"runnerIdleCount": 5},
        ["runnerIdleCount: got 5", "at most runnerMaxInstances x runnerCapacityPerInstance = 2"],
        id="runner-idle-above-fleet",
    ),
    pytest.param({"runnerIdleCount": -1}, ["runnerIdleCount: got -1"], id="runner-idle-negative"),
    pytest.param(
        {"runnerIdleTime": "10 minutes"},
        ["runnerIdleTime: got '10 minutes'", "such as 10m or 1h30m"],
        id="runner-idle-time-words",
    ),
    pytest.param(
        {"runnerIdleTime": "48h"}, ["runnerIdleTime: got '48h'", "from 0s to 24h"], id="runner-idle-time-long"
    ),
    pytest.param({"runnerIdleTime": ""}, ["runnerIdleTime: got ''"], id="runner-idle-time-empty"),
    pytest.param(
        {"runnerInstanceType": "medium"}, ["runnerInstanceType: got 'medium'", "t3.large"], id="runner-instance-type"
    ),
    pytest.param(
        {"runnerInstanceType": "t4g.medium"},
        ["runnerInstanceType: got 't4g.medium'", "an x86_64 instance type such as t3.medium", "arm64"],
        id="runner-instance-type-graviton",
    ),
    pytest.param(
        {"runnerInstanceType": "c7gn.large"},
        ["runnerInstanceType: got 'c7gn.large'", "an x86_64 instance type"],
        id="runner-instance-type-graviton-network",
    ),
    pytest.param(
        {"runnerManagerInstanceType": "T3.small"},
        ["runnerManagerInstanceType: got 'T3.small'"],
        id="runner-manager-instance-type",
    ),
    pytest.param(
        {"flowLogRetentionDays": 100},
        ["flowLogRetentionDays: got 100", "retention periods CloudWatch Logs accepts", "90, 120"],
        id="flow-log-retention",
    ),
    pytest.param({"flowLogRetentionDays": "forever"}, ["flowLogRetentionDays: got 'forever'"], id="flow-log-words"),
    pytest.param(
        {"kubernetesDashboard": "yes"}, ["kubernetesDashboard: got 'yes'", "true or false"], id="dashboard-not-bool"
    ),
    pytest.param(
        {"kubernetesDashboard": True, "clusterIntegration": "certificate"},
        ["kubernetesDashboard: got True", "false with clusterIntegration certificate", "needs GitLab's agent"],
        id="dashboard-without-agent",
    ),
    pytest.param(
        {"kubernetesDashboard": True, "projectName": "cluster-operators"},
        ["projectName: got 'cluster-operators'", "the dashboard's operators project"],
        id="dashboard-project-name-taken",
    ),
    pytest.param({"fluxVersion": "latest"}, ["fluxVersion: got 'latest'"], id="flux-latest"),
    pytest.param({"fluxVersion": "v1.25.4"}, ["fluxVersion: got 'v1.25.4'", "Flux v1 is end of life"], id="flux-v1"),
    pytest.param({"flannelVersion": "latest"}, ["flannelVersion: got 'latest'"], id="flannel-latest"),
    pytest.param({"delivery": "gitops"}, ["delivery: got 'gitops'", "one of pull, push"], id="delivery-unknown"),
    pytest.param({"appNodePort": 80}, ["appNodePort: got 80", "from 30000 to 32767"], id="nodeport-low"),
    pytest.param({"appNodePort": 32768}, ["appNodePort: got 32768", "from 30000 to 32767"], id="nodeport-high"),
    pytest.param({"gitlabInstanceType": "large"}, ["gitlabInstanceType: got 'large'", "t3.large"], id="instance-type"),
    pytest.param({"workerInstanceType": "T3.Medium"}, ["workerInstanceType: got 'T3.Medium'"], id="instance-upper"),
    pytest.param({"vpcCidr": "10.42.0.0"}, ["vpcCidr: got '10.42.0.0'", "/16 to /24"], id="vpc-no-prefix"),
    pytest.param({"vpcCidr": "8.8.0.0/16"}, ["vpcCidr: got '8.8.0.0/16'", "private"], id="vpc-public-range"),
    pytest.param({"vpcCidr": "10.0.0.0/8"}, ["vpcCidr: got '10.0.0.0/8'"], id="vpc-too-large"),
    pytest.param({"vpcCidr": "10.244.0.0/16"}, ["vpcCidr: got '10.244.0.0/16'", "pod network"], id="vpc-pod-overlap"),
    pytest.param(
        {"vpcCidr": "10.100.0.0/16"}, ["vpcCidr: got '10.100.0.0/16'", "service network"], id="vpc-svc-overlap"
    ),
    pytest.param({"projectName": "shark application"}, ["projectName: got 'shark application'"], id="project-space"),
    pytest.param({"projectName": "-shark"}, ["projectName: got '-shark'"], id="project-leading-dash"),
    pytest.param({"projectName": "shark.git."}, ["projectName: got 'shark.git.'"], id="project-trailing-dot"),
    pytest.param({"projectVisibility": "secret"}, ["projectVisibility: got 'secret'"], id="visibility"),
    pytest.param({"appName": "Shark_App"}, ["appName: got 'Shark_App'", "Kubernetes name"], id="app-name"),
    pytest.param({"defaultBranch": "feature..x"}, ["defaultBranch: got 'feature..x'"], id="branch"),
    pytest.param({"availabilityZoneCount": 4}, ["availabilityZoneCount: got 4"], id="az-count"),
    pytest.param({"rootVolumeSizeGb": 8}, ["rootVolumeSizeGb: got 8"], id="root-volume-small"),
    pytest.param(
        {"gitlabDataVolumeProtect": "yes"}, ["gitlabDataVolumeProtect: got 'yes'", "true or false"], id="bool"
    ),
    pytest.param({"extraTags": ["Owner"]}, ["extraTags: got 'Owner'", "Key=Value"], id="tag-no-value"),
    pytest.param({"extraTags": ["Name=x"]}, ["extraTags: got 'Name=x'", "set by the program"], id="tag-reserved"),
    pytest.param({"extraTags": ["aws:x=y"]}, ["extraTags: got 'aws:x=y'"], id="tag-aws-prefix"),
    pytest.param({"amiId": "ami-123"}, ["amiId: got 'ami-123'"], id="ami-id"),
    pytest.param({"gitlabHostname": "GitLab_Host"}, ["gitlabHostname: got 'GitLab_Host'"], id="hostname"),
    pytest.param({"operatorSshPublicKey": "not a key"}, ["operatorSshPublicKey: got 'not a key'"], id="ssh-key"),
    pytest.param({"gitlabAdminEmail": "ops"}, ["gitlabAdminEmail: got 'ops'"], id="email"),
    pytest.param({"adminCidr": ["203.0.113.7/32"]}, ["adminCidr: unknown key"], id="typo-key"),
    pytest.param({"backups": "off"}, ["backups: got 'off'", "true or false"], id="backups-not-bool"),
    pytest.param({"backupHourUtc": 24}, ["backupHourUtc: got 24", "an integer from 0 to 23"], id="backup-hour"),
    pytest.param({"backupHourUtc": "3am"}, ["backupHourUtc: got '3am'"], id="backup-hour-text"),
    pytest.param(
        {"gitlabBackupRetentionDays": 0}, ["gitlabBackupRetentionDays: got 0", "from 1 to 3650"], id="gitlab-keep-0"
    ),
    pytest.param(
        {"gitlabSnapshotRetentionDays": 366},
        ["gitlabSnapshotRetentionDays: got 366", "from 1 to 365"],
        id="snapshot-keep-above-max",
    ),
    pytest.param(
        {"etcdSnapshotIntervalMinutes": 5},
        ["etcdSnapshotIntervalMinutes: got 5", "an integer from 15 to 1440"],
        id="etcd-interval-too-often",
    ),
    pytest.param(
        {"etcdSnapshotIntervalMinutes": 2880}, ["etcdSnapshotIntervalMinutes: got 2880"], id="etcd-interval-rare"
    ),
    pytest.param({"etcdSnapshotRetentionDays": -1}, ["etcdSnapshotRetentionDays: got -1"], id="etcd-keep-negative"),
    pytest.param({"etcdDailyRetentionDays": 3651}, ["etcdDailyRetentionDays: got 3651"], id="etcd-daily-keep-max"),
    pytest.param(
        {"preUpgradeBackupRetentionDays": "90d"}, ["preUpgradeBackupRetentionDays: got '90d'"], id="pre-upgrade-keep"
    ),
    pytest.param(
        {"backupNoncurrentRetentionDays": 0},
        ["backupNoncurrentRetentionDays: got 0", "from 1 to 365"],
        id="noncurrent-keep-0",
    ),
]


@pytest.mark.parametrize(("overrides", "fragments"), BAD_INPUTS)
def test_bad_input_stops_before_any_resource(overrides: dict, fragments: list[str]) -> None:
    with pytest.raises(ProgramError) as caught:
        run_fixture_stack("dev", {**ADMIN, **overrides})
    message = str(caught.value)
    assert type(caught.value.error).__name__ == "RunError", "a clean RunError, not a traceback"
    for fragment in fragments:
        assert fragment in message
    assert caught.value.registrations == [], "nothing may be registered when the configuration is bad"


@pytest.mark.parametrize("tag", ["18.11.0-ce.0", "18.11.12-ce.0", "19.0.0-ce.0", "19.2.4-ce.0", "19.11.9-ce.1"])
def test_supported_gitlab_releases_are_accepted(tag: str) -> None:
    config = parse_config({"adminCidrs": '["203.0.113.7/32"]', "gitlabImageTag": tag}, "gitops", "dev")
    assert config.gitlab_image_tag == tag


def test_default_gitlab_is_a_19_release_with_the_matching_runner() -> None:
    config = parse_config({"adminCidrs": '["203.0.113.7/32"]'}, "gitops", "dev")
    assert config.gitlab_image_tag == versions.GITLAB_CE_TAG
    major, minor, patch = gitlab_version(config.gitlab_image_tag)
    assert major == 19
    assert config.gitlab_runner_version == versions.GITLAB_RUNNER_VERSION == f"{major}.{minor}.{patch}"


def test_runner_fleet_defaults_scale_to_zero_and_stay_small() -> None:
    config = parse_config({"adminCidrs": '["203.0.113.7/32"]'}, "gitops", "dev")
    assert (config.runner_max_instances, config.runner_capacity_per_instance) == (2, 1)
    assert config.runner_idle_count == 0, "no job VM when no job runs"
    assert config.runner_idle_time == "10m"
    assert (config.runner_instance_type, config.runner_manager_instance_type) == ("t3.medium", "t3.small")
    assert config.flow_log_retention_days == 365


@pytest.mark.parametrize(
    ("text", "seconds"), [("0s", 0), ("10m", 600), ("1h30m", 5400), ("24h", 86400), ("90s", 90), ("1h2m3s", 3723)]
)
def test_idle_times_are_go_durations(text: str, seconds: int) -> None:
    assert duration_seconds(text) == seconds
    raw = {"adminCidrs": '["203.0.113.7/32"]', "runnerIdleTime": text}
    assert parse_config(raw, "gitops", "dev").runner_idle_time == text


@pytest.mark.parametrize("text", ["", "10", "m10", "1d", "10 m", "1.5h", "-5m"])
def test_malformed_durations_are_refused(text: str) -> None:
    assert duration_seconds(text) is None


def test_idle_count_may_fill_a_bigger_fleet() -> None:
    raw = {
        "adminCidrs": '["203.0.113.7/32"]',
        "runnerMaxInstances": "3",
        "runnerCapacityPerInstance": "2",
        "runnerIdleCount": "6",
    }
    assert parse_config(raw, "gitops", "dev").runner_idle_count == 6


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ProgramError) as caught:
        run_fixture_stack("dev", {"adminCidrs": None, "workerCount": 0, "delivery": "both", "appNodePort": 80})
    lines = [line for line in str(caught.value).splitlines() if line.startswith("  - ")]
    assert [line.split(":")[0].strip("- ") for line in lines] == [
        "adminCidrs",
        "workerCount",
        "delivery",
        "appNodePort",
    ]


def test_valid_values_are_normalised_and_typed() -> None:
    raw = {"adminCidrs": '["203.0.113.7/32", "198.51.100.0/24"]', "kubernetesVersion": "v1.36", "workerCount": " 5 "}
    config = parse_config(raw, "gitops", "dev")
    assert config.admin_cidrs == ("203.0.113.7/32", "198.51.100.0/24")
    assert config.kubernetes_version == "1.36"
    assert config.worker_count == 5
    assert config.app_cidrs == ("0.0.0.0/0",)
    assert config.delivery == "pull"
    assert config.cluster_integration == "agent", "GitLab's agent is the default integration"
    assert config.gitlab_hostname is None


@pytest.mark.parametrize("integration", ["agent", "certificate"])
def test_both_integrations_run_every_supported_gitlab(integration: str) -> None:
    for tag in ("18.11.11-ce.0", versions.GITLAB_CE_TAG, "19.11.9-ce.1"):
        raw = {"adminCidrs": '["203.0.113.7/32"]', "gitlabImageTag": tag, "clusterIntegration": integration}
        assert parse_config(raw, "gitops", "dev").cluster_integration == integration


def test_parse_config_needs_no_engine_and_names_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"adminCidrs": '["203.0.113.7/32"]', "workerCount": "99"}, "gitops", "dev")
    assert caught.value.problems == ["workerCount: got 99; expected an integer from 1 to 20"]


def test_tags_always_carry_project_stack_managed_by_and_name() -> None:
    config = parse_config({"adminCidrs": '["203.0.113.7/32"]', "extraTags": '["CostCenter=42"]'}, "gitops", "prod")
    assert config.tags("gitops-vpc") == {
        "CostCenter": "42",
        "Project": "gitops",
        "Stack": "prod",
        "ManagedBy": "pulumi",
        "Name": "gitops-vpc",
    }


def test_pulumi_yaml_declares_every_key_with_its_default_and_type() -> None:
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    assert list(declared) == [key.name for key in KEYS]
    for key in KEYS:
        schema = declared[key.name]
        assert schema["type"] == key.type, key.name
        assert schema.get("default") == key.default, key.name
        assert schema["description"] == key.description, key.name
        if key.type == "array":
            assert schema["items"] == {"type": "string"}
    assert "default" not in declared["adminCidrs"], "admin CIDRs have no safe default"


def test_readme_configuration_table_matches_the_keys() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([A-Za-z]+)` \| [a-z]+ \| (.*?) \|", readme, flags=re.MULTILINE))
    assert set(rows) == {key.name for key in KEYS}
    for key in KEYS:
        default = "(required)" if key.default is None else f"`{key.default!r}`".replace("'", '"')
        if isinstance(key.default, bool):
            default = f"`{str(key.default).lower()}`"
        elif isinstance(key.default, int):
            default = f"`{key.default}`"
        assert rows[key.name] == default, key.name


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_stack_files_only_use_declared_keys(stack: str) -> None:
    values = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    known = {f"gitops:{key.name}" for key in KEYS}
    assert {key for key in values if key.startswith("gitops:")} <= known


def test_prod_is_the_hardened_environment(dev, prod) -> None:
    assert prod.config["gitops:workerCount"] == "3"
    assert prod.config["gitops:projectVisibility"] == "private"
    assert dev.config["gitops:projectVisibility"] == "public", "the tutorial's public project"


def test_the_operator_key_goes_where_its_description_says() -> None:
    """Every host's login user and GitLab's daily admin; never the EC2 key pair (Pulumi's own key)."""
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHJ0ZXN0a2V5Zm9ydGhldXNlcmRhdGFzaXpldGVzdA operator@laptop"
    run = run_fixture_stack("dev", {**ADMIN, "operatorSshPublicKey": key})
    assert run.one("aws:ec2/keyPair:KeyPair").plain_inputs["publicKey"] != key
    assert run.one("gitlab:index/userSshKey:UserSshKey").plain_inputs["key"] == key
    description = next(item.description for item in KEYS if item.name == "operatorSshPublicKey")
    assert "authorized_keys on every host" in description and "GitLab's daily admin user" in description
    assert "The EC2 key pair stays Pulumi's own" in description
