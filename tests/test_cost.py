"""The cost estimate: what the program registers, priced from the pinned table, and its change against a base."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pytest
import yaml

from tests.conftest import ADMIN
from tools import cost
from tools.harness import FIXTURE_STACKS, ROOT, run_fixture_stack, run_function, run_program

PRICES = yaml.safe_load(cost.PRICES_FILE.read_text())
US_EAST_1 = PRICES["regions"]["us-east-1"]
HOURS = PRICES["hours_per_month"]


def _hourly(instance_type: str) -> float:
    return US_EAST_1["instance_hour"]["prices"][instance_type]


def _item(key: str) -> float:
    return US_EAST_1["items"][key]["price"]


def _lines(report: dict) -> dict[str, dict]:
    return {line["key"]: line for line in report["lines"]}


# ---- the price table itself ------------------------------------------------------------------
def test_every_price_names_its_source_and_date() -> None:
    assert HOURS == 730
    block = US_EAST_1["instance_hour"]
    assert block["source"].startswith("https://") and block["as_of"]
    assert all(isinstance(value, float) and value > 0 for value in block["prices"].values())
    for key, entry in US_EAST_1["items"].items():
        assert entry["price"] > 0, key
        assert entry["source"] and entry["as_of"] and entry["unit"], key


# The backup bucket and the data volume's snapshots at the table's assumed sizes (backups on by default).
ASSUMED = PRICES["assumptions"]
BACKUPS = ASSUMED["s3_stored_gib"] * _item("s3_standard_gib_month")
BACKUPS += ASSUMED["snapshot_stored_gib"] * _item("ebs_snapshot_gib_month")


# ---- the repository's stacks -----------------------------------------------------------------
def test_dev_is_priced_by_instance_type_storage_and_public_addresses() -> None:
    report = cost.estimate(run_fixture_stack("dev", ADMIN))
    lines = _lines(report)
    assert lines["instance:t3.large"]["quantity"] == 1  # GitLab
    assert lines["instance:t3.small"]["quantity"] == 1  # the runner manager
    # Control plane + 2 workers; the CI job VMs are none when idle, runnerMaxInstances (2) when busy.
    assert (lines["instance:t3.medium"]["quantity"], lines["instance:t3.medium"]["maximum"]) == (3, 3 + 2)
    # Five roots (GitLab, control plane, workers, manager) and GitLab's data volume; each job VM's root.
    assert (lines["ebs:gp3"]["quantity"], lines["ebs:gp3"]["maximum"]) == (5 * 30 + 50, 5 * 30 + 50 + 2 * 30)
    # Two Elastic IPs, the workers' and the manager's auto-assigned addresses; one per job VM.
    assert (lines["ipv4"]["quantity"], lines["ipv4"]["maximum"]) == (2 + 2 + 1, 2 + 2 + 1 + 2)
    # The API's stable name: a private hosted zone, priced by the month; its queries by use.
    assert (lines["route53-zone"]["quantity"], lines["route53-zone"]["unit_price"]) == (1, 0.5)
    assert lines["route53-queries"]["in_total"] is False and lines["route53-queries"]["unit_price"] == 0.4
    assert "nlb" not in lines, "one control-plane node needs no load balancer"
    expected = (
        (_hourly("t3.large") + 3 * _hourly("t3.medium") + _hourly("t3.small")) * HOURS
        + 200 * _item("ebs_gp3_gib_month")
        + 5 * _item("public_ipv4_hour") * HOURS
        + _item("route53_hosted_zone_month")
        + BACKUPS
    )
    job_vm = _hourly("t3.medium") * HOURS + 30 * _item("ebs_gp3_gib_month") + _item("public_ipv4_hour") * HOURS
    assert report["total"] == pytest.approx(expected, abs=0.01)
    assert report["total_max"] == pytest.approx(expected + 2 * job_vm, abs=0.01)
    assert report["unpriced"] == 0
    # The flow logs are priced by use, listed with their unit prices outside the totals.
    assert lines["logs-ingest"]["in_total"] is False and lines["logs-ingest"]["unit_price"] == 0.5
    assert lines["logs-storage"]["in_total"] is False and lines["logs-storage"]["unit_price"] == 0.03
    text = cost.markdown(report)
    assert "CloudWatch Logs ingestion (gitops-flow-logs): depends on use: $0.5/GB ingested" in text


def test_prod_is_priced_from_its_own_stack_file() -> None:
    lines = _lines(cost.estimate(run_fixture_stack("prod", ADMIN)))
    assert lines["instance:m6i.xlarge"]["quantity"] == 1
    assert lines["instance:m6i.large"]["quantity"] == 3 + 3  # three control-plane nodes, three workers
    assert (lines["instance:t3.medium"]["quantity"], lines["instance:t3.medium"]["maximum"]) == (0, 2)  # job VMs
    assert lines["instance:t3.small"]["quantity"] == 1
    assert lines["ebs:gp3"]["quantity"] == 8 * 50 + 200
    # Two Elastic IPs; two further control-plane nodes, three workers and the manager auto-assigned.
    assert lines["ipv4"]["quantity"] == 2 + 2 + 3 + 1
    # Its highly available control plane's internal load balancer (no public address) and zone.
    assert (lines["nlb"]["quantity"], lines["nlb"]["unit_price"]) == (1, 0.0225 * HOURS)
    assert lines["nlb-lcu"]["quantity"] == 1 and lines["nlb-lcu"]["unit_price"] == pytest.approx(0.006 * HOURS)
    assert lines["route53-zone"]["quantity"] == 1
    assert "route53-queries" not in lines, "queries to an alias of a load balancer are not charged"


def test_a_users_edited_stack_is_priced_as_edited(tmp_path: Path) -> None:
    document = yaml.safe_load((FIXTURE_STACKS / "Pulumi.dev.yaml").read_text())
    document["config"].update(
        {
            "gitops:workerCount": 5,
            "gitops:workerInstanceType": "m7i.large",
            "gitops:rootVolumeSizeGb": 40,
            "gitops:gitlabDataVolumeSizeGb": 120,
        }
    )
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump(document))
    out = tmp_path / "cost.json"
    assert cost.main(["--stack", "dev", "--stack-dir", str(tmp_path), "--format", "json", "--out", str(out)]) == 0
    lines = _lines(json.loads(out.read_text()))
    assert lines["instance:m7i.large"]["quantity"] == 5
    assert lines["instance:t3.medium"]["quantity"] == 1  # the control plane keeps its type
    assert lines["ebs:gp3"]["quantity"] == 8 * 40 + 120  # GitLab, control plane, 5 workers, runner manager
    assert lines["ipv4"]["quantity"] == 2 + 5 + 1
    assert lines["instance:m7i.large"]["monthly"] == pytest.approx(5 * _hourly("m7i.large") * HOURS, abs=0.01)


def test_an_unknown_instance_type_is_reported_not_priced_as_zero() -> None:
    run = run_fixture_stack("dev", {**ADMIN, "workerInstanceType": "m7g.large"})
    report = cost.estimate(run)
    line = _lines(report)["instance:m7g.large"]
    assert line["unit_price"] is None and line["monthly"] is None and line["quantity"] == 2
    assert "not in tools/prices.yaml for us-east-1" in line["note"]
    assert report["unpriced"] == 1
    text = cost.markdown(report)
    assert "+ 1 unpriced" in text and "**Unpriced**" in text and "EC2 m7g.large: 2 instances" in text
    priced_only = (_hourly("t3.large") + _hourly("t3.medium") + _hourly("t3.small")) * HOURS
    assert report["total"] == pytest.approx(
        priced_only
        + 200 * _item("ebs_gp3_gib_month")
        + 5 * _item("public_ipv4_hour") * HOURS
        + _item("route53_hosted_zone_month")
        + BACKUPS,
        abs=0.01,
    )


def test_a_region_without_prices_is_listed_whole_as_unpriced() -> None:
    report = cost.estimate(run_fixture_stack("dev", {**ADMIN, "aws:region": "eu-west-3"}))
    assert report["region"] == "eu-west-3"
    assert all(line["unit_price"] is None for line in report["lines"])
    assert _lines(report)["instance:t3.medium"]["quantity"] == 3  # quantities still shown
    assert "**not priced**" in cost.markdown(report)


# ---- resources other issues add: fleets, load balancers, buckets, provisioned gp3 ------------------
def _fleet_program() -> None:
    template = aws.ec2.LaunchTemplate(
        "runner-template",
        instance_type="t3.large",
        block_device_mappings=[
            aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                device_name="/dev/xvda",
                ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(volume_size=40, volume_type="gp3"),
            )
        ],
        network_interfaces=[aws.ec2.LaunchTemplateNetworkInterfaceArgs(associate_public_ip_address="true")],
    )
    aws.autoscaling.Group(
        "runners",
        min_size=0,
        max_size=4,
        launch_template=aws.autoscaling.GroupLaunchTemplateArgs(id=template.id, version="$Latest"),
    )
    aws.lb.LoadBalancer("ingress", load_balancer_type="network", subnets=["subnet-a", "subnet-b"])
    aws.s3.Bucket("backups")
    aws.ebs.Volume("fast", availability_zone="us-east-1a", size=100, type="gp3", iops=6000, throughput=250)
    pulumi.export("done", True)


def test_fleets_load_balancers_buckets_and_provisioned_gp3_slot_in() -> None:
    report = cost.estimate(run_function(_fleet_program))
    lines = _lines(report)
    fleet = lines["instance:t3.large"]
    assert (fleet["quantity"], fleet["maximum"]) == (0, 4)  # idle at minSize, busy at maxSize
    assert fleet["monthly_max"] == pytest.approx(4 * _hourly("t3.large") * HOURS, abs=0.01)
    assert (lines["ebs:gp3"]["quantity"], lines["ebs:gp3"]["maximum"]) == (100, 100 + 4 * 40)
    assert lines["ebs:gp3-iops"]["quantity"] == 3000 and lines["ebs:gp3-throughput"]["quantity"] == 125
    assert lines["ebs:gp3-iops"]["monthly"] == pytest.approx(3000 * _item("ebs_gp3_iops_month"), abs=0.01)
    assert lines["nlb"]["monthly"] == pytest.approx(_item("nlb_hour") * HOURS, abs=0.01)
    assert lines["nlb-lcu"]["quantity"] == PRICES["assumptions"]["lb_capacity_units"]
    assert "assumes" in lines["nlb-lcu"]["note"]
    assert (lines["ipv4"]["quantity"], lines["ipv4"]["maximum"]) == (2, 2 + 4)  # NLB's two zones, then runners
    assert lines["s3"]["in_total"] is True and "assumes 93 GiB each" in lines["s3"]["note"]
    assert report["total_max"] > report["total"]
    text = cost.markdown(report)
    assert "at max |" in text and "(max 4 instances)" in text
    assert "| S3 Standard storage | 93 GiB |" in text


# ---- the difference against a base -------------------------------------------------------------
def test_the_difference_names_what_changed_and_by_how_much() -> None:
    base = cost.estimate(run_fixture_stack("dev", ADMIN))
    head = cost.estimate(run_fixture_stack("dev", {**ADMIN, "workerCount": 3}))
    text = cost.difference(base, head, "main (0123abcd)")
    added = _hourly("t3.medium") * HOURS + 30 * _item("ebs_gp3_gib_month") + _item("public_ipv4_hour") * HOURS
    assert f"**+${added:,.2f}**" in text
    assert "| EC2 t3.medium | 3 instances $91.10 | 4 instances $121.47 | +$30.37 |" in text
    assert "EC2 t3.large" not in text  # unchanged rows are left out
    assert "**Against the base:** no estimate (0123abcd has no tools/cost.py)." in cost.difference(
        None, head, "0123abcd has no tools/cost.py"
    )


def _project_copy(destination: Path) -> Path:
    ignore = shutil.ignore_patterns(".git", "venv", "build", "node_modules", "__pycache__", ".*_cache")
    shutil.copytree(ROOT, destination, ignore=ignore)
    return destination


def _git(repo: Path, *args: str) -> str:
    command = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.test", *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def test_base_ref_estimates_the_base_commit_with_its_own_stack_file(tmp_path: Path) -> None:
    repo = _project_copy(tmp_path / "repo")
    shutil.copy(FIXTURE_STACKS / "Pulumi.dev.yaml", repo / "Pulumi.dev.yaml")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "base")
    base_sha = _git(repo, "rev-parse", "HEAD")
    stack_file = repo / "Pulumi.dev.yaml"
    stack_file.write_text(stack_file.read_text() + "  gitops:workerCount: 3\n")  # the merge request's change

    base, name = cost.base_estimate(base_sha, "dev", repo=repo)
    assert base is not None, name
    assert name == base_sha[:8]
    assert _lines(base)["instance:t3.medium"]["quantity"] == 3  # the base's own 2 workers + control plane
    head = cost.estimate(run_program("dev", ADMIN, stack_dir=repo))
    assert _lines(head)["instance:t3.medium"]["quantity"] == 4
    assert "| EC2 t3.medium | 3 instances" in cost.difference(base, head, name)


def test_base_ref_says_why_there_is_no_base_estimate(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README.md").write_text("before the cost tool\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "old")
    assert cost.base_estimate("HEAD", "dev", repo=repo)[1].endswith("has no tools/cost.py")
    missing, reason = cost.base_estimate("0" * 40, "dev", repo=repo)
    assert missing is None and "is not in this clone" in reason


# ---- README ----------------------------------------------------------------------------------
def test_readme_cost_section_is_the_tools_output() -> None:
    readme = (ROOT / "README.md").read_text()
    assert cost.readme_section() in readme, "README's Cost section is stale: run venv/bin/python -m tools.cost --readme"


def _capped_fleet_program() -> None:
    template = aws.ec2.LaunchTemplate("job-vm", instance_type="t3.large")
    aws.autoscaling.Group(
        "job-vms",
        min_size=0,
        max_size=20,  # a ceiling that never moves (components/runners.py GROUP_MAX_SIZE)
        launch_template=aws.autoscaling.GroupLaunchTemplateArgs(id=template.id, version="$Latest"),
        tags=[aws.autoscaling.GroupTagArgs(key="MaxInstances", value="3", propagate_at_launch=False)],
    )


def test_a_fleet_whose_max_size_is_a_ceiling_is_costed_at_its_max_instances_tag() -> None:
    fleet = _lines(cost.estimate(run_function(_capped_fleet_program)))["instance:t3.large"]
    assert (fleet["quantity"], fleet["maximum"]) == (0, 3)
