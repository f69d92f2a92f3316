"""Day 2: what a later `pulumi up` does to a running stack, for every routine change.

Each test runs the real program twice (tools/plan.py: the fixture dev stack as deployed, then the
change) and states what the second `up` would execute, with each provider's update semantics.
"""

from __future__ import annotations

import datetime
import shlex
from collections.abc import Iterator

import pulumi
import pytest

from components import clock
from components.cluster import KubeadmCluster, KubeadmClusterArgs
from components.config import load_config
from components.hosts import SshAccess
from components.network import Network, NetworkArgs
from tests.conftest import ADMIN
from tools.harness import FIXTURE_STACKS, StackMocks, run_fixture_stack, run_function
from tools.plan import INSTANCE, Plan, plan, run_twice

K8S = "gitops-k8s"
COMMAND = "command:remote:Command"
NEWER_DEBIAN = "ami-0fedcba9876543210"
OPERATOR_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHJ0ZXN0a2V5Zm9ydGhldXNlcmRhdGFzaXpldGVzdA operator@laptop"
NODES = ("master", "worker1", "worker2")


def second_up(after: dict | None = None, *, before: dict | None = None, **kwargs: object) -> Plan:
    return run_twice(before={**ADMIN, **(before or {})}, after=after, **kwargs).plan  # type: ignore[arg-type]


def step_env(plan_run: object, name: str) -> dict[str, str]:
    registration = plan_run.one(COMMAND, name)  # type: ignore[attr-defined]
    words = shlex.split(registration.plain_inputs["create"])
    return dict(word.split("=", 1) for word in words[2 : words.index("bash")])


def test_a_newer_debian_image_changes_no_running_node() -> None:
    plan = second_up(mocks_after=StackMocks(newest_ami=NEWER_DEBIAN))
    assert plan.touched() == {}
    assert plan.errors == []


def test_a_new_registry_hostname_touches_no_instance_and_reapplies_the_trust_on_every_node() -> None:
    plan = second_up({"gitlabHostname": "gitlab.example.com"})
    assert plan.touched(INSTANCE) == {}
    cluster_steps = {name: action for name, action in plan.touched(COMMAND).items() if name.startswith(K8S)}
    assert cluster_steps == {f"{K8S}-{node}-config": "update" for node in NODES}


def cluster_with_a_new_registry_ca() -> Iterator[None]:
    """The cluster on its own, with GitLab's CA as a literal: another one in the second run."""
    for ca in (
        "-----BEGIN CERTIFICATE-----\nMIIB first\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nMIIB second\n-----END CERTIFICATE-----\n",
    ):
        config = load_config()
        network = Network("gitops", NetworkArgs(config=config))
        KubeadmCluster(
            K8S,
            KubeadmClusterArgs(
                config=config,
                vpc_id=network.vpc_id,
                subnet_ids=network.subnet_ids,
                cluster_security_group_id=network.cluster_security_group_id,
                gitlab_security_group_id=network.gitlab_security_group_id,
                registry_host="gitlab.example.com:5050",
                registry_ca_pem=ca,
                ssh=SshAccess("gitops-ssh", config),
            ),
        )
        yield


def test_a_new_registry_ca_touches_no_instance_and_reapplies_the_trust_on_every_node() -> None:
    runs = cluster_with_a_new_registry_ca()
    result = run_twice(before=ADMIN, program=lambda: next(runs))
    assert result.plan.touched() == {f"{K8S}-{node}-config": "update" for node in NODES}
    digests = {step_env(run, f"{K8S}-master-config")["MATERIAL_DIGEST"] for run in (result.before, result.after)}
    assert len(digests) == 2  # the step applies the new material, and only once


def test_a_kubernetes_minor_upgrade_stops_no_instance_and_runs_the_upgrade_steps_in_order() -> None:
    result = run_twice(before=ADMIN, after={"kubernetesVersion": "1.37"})
    plan = result.plan
    order = [f"{K8S}-master-upgrade"] + [
        f"{K8S}-{worker}-{kind}"
        for worker in ("worker1", "worker2")
        for kind in ("upgrade-drain", "upgrade", "upgrade-uncordon")
    ]
    # A fresh etcd snapshot first (the backups' pre-upgrade hook, run again for the new target).
    snapshot = f"{K8S}-master-etcd-pre-upgrade-snapshot"
    assert plan.touched() == {snapshot: "replace", **dict.fromkeys(order, "update")}
    positions = [plan.position("create", snapshot)] + [plan.position("update", name) for name in order]
    assert positions == sorted(positions)
    # The gate gets the new minor; the workers follow what the control plane then runs.
    assert step_env(result.after, f"{K8S}-master-upgrade")["TARGET_MINOR"] == "1.37"
    assert step_env(result.after, f"{K8S}-worker1-upgrade")["KUBERNETES_VERSION"] == "v1.37.5"
    assert result.after.outputs["kubernetesVersion"] == "v1.37.5"


def test_a_patch_upgrade_takes_the_same_path() -> None:
    plan = second_up({"kubernetesPatch": "1.36.9"})
    assert plan.touched(INSTANCE) == {}
    assert plan.touched()[f"{K8S}-master-upgrade"] == "update"
    assert plan.touched()[f"{K8S}-master-etcd-pre-upgrade-snapshot"] == "replace"
    assert set(plan.touched().values()) == {"update", "replace"}


def test_adding_a_worker_only_adds() -> None:
    result = run_twice(before=ADMIN, after={"workerCount": 3})
    plan = result.plan
    assert set(plan.touched().values()) == {"create"}
    assert plan.touched(INSTANCE) == {f"{K8S}-worker3": "create"}
    # The new worker boots, gets its material, joins and is admitted, then follows the cluster's version.
    order = [
        plan.position("create", f"{K8S}-{step}")
        for step in ("worker3", "worker3-config", "worker3-join", "worker3-upgrade-drain", "worker3-upgrade-uncordon")
    ]
    assert order == sorted(order)
    after = result.after
    drain = after.one(COMMAND, f"{K8S}-worker3-upgrade-drain")
    assert after.one(COMMAND, f"{K8S}-worker3-membership").urn in drain.depends_on  # only once it is Ready
    assert after.one(COMMAND, f"{K8S}-worker2-upgrade-uncordon").urn in drain.depends_on  # one worker at a time


def test_removing_a_worker_drains_it_before_its_instance_goes() -> None:
    result = run_twice(before={**ADMIN, "workerCount": 3}, after={"workerCount": 2})
    plan = result.plan
    assert set(plan.touched().values()) == {"delete"}
    assert {name for name in plan.touched() if not name.startswith(f"{K8S}-worker3")} == set()
    assert plan.position("delete", f"{K8S}-worker3-membership") < plan.position("delete", f"{K8S}-worker3")
    membership = result.before.one(COMMAND, f"{K8S}-worker3-membership").plain_inputs
    assert "STEP_NAME=cluster/remove-worker.sh" in membership["delete"]
    assert "kubectl drain" in membership["delete"]


def test_a_new_operator_key_reaches_every_host_without_a_reboot() -> None:
    result = run_twice(before=ADMIN, after={"operatorSshPublicKey": OPERATOR_KEY})
    plan = result.plan
    assert plan.touched(INSTANCE) == {}
    hosts = {"gitlab-operator-ssh-key", *(f"{K8S}-{node}-config" for node in NODES)}
    assert hosts <= {name for name, action in plan.touched(COMMAND).items() if action == "update"}
    for name in hosts:
        assert step_env(result.after, name)["OPERATOR_SSH_PUBLIC_KEY"] == OPERATOR_KEY


def test_rolling_a_worker_onto_a_new_image_drains_it_first_and_rejoins_it_under_its_name() -> None:
    """`pulumi up --replace <worker urn>`: the one way a running node moves to a newer image."""
    result = run_twice(before=ADMIN, mocks_after=StackMocks(newest_ami=NEWER_DEBIAN), replace=[f"{K8S}-worker2"])
    plan = result.plan
    assert plan.touched(INSTANCE) == {f"{K8S}-worker2": "replace"}
    assert plan.of(f"{K8S}-worker2").delete_before_replace
    # Drained and its Node deleted before the instance goes; the new instance joins afterwards.
    order = [
        plan.position("delete", f"{K8S}-worker2-membership"),
        plan.position("delete", f"{K8S}-worker2"),
        plan.position("create", f"{K8S}-worker2"),
        plan.position("create", f"{K8S}-worker2-join"),
    ]
    assert order == sorted(order)
    # Admission (a fresh token, then wait Ready) runs alongside the join, once the instance exists.
    assert plan.position("create", f"{K8S}-worker2") < plan.position("create", f"{K8S}-worker2-membership")
    # A replacement reads the program's values: the new image, despite ignore_changes.
    assert result.after.one(INSTANCE, f"{K8S}-worker2").plain_inputs["ami"] == NEWER_DEBIAN
    assert {name for name in plan.touched() if "worker1" in name or "master" in name} == set()


def test_replacing_the_control_plane_is_refused() -> None:
    plan = second_up(replace=[f"{K8S}-master"])
    (error,) = plan.errors
    assert f"{K8S}-master" in error and "marked for protection" in error


def test_more_availability_zones_move_no_worker() -> None:
    plan = second_up({"availabilityZoneCount": 3})
    assert plan.touched(INSTANCE) == {}
    assert set(plan.touched().values()) == {"create"}  # the new zone's subnet and its route


def test_fewer_zones_need_the_workers_there_rolled_in_the_same_up() -> None:
    """AWS refuses to delete a subnet with instances: replace the workers in the dropped zone too."""
    plan = second_up({"availabilityZoneCount": 2}, before={"availabilityZoneCount": 3}, replace=[f"{K8S}-worker2"])
    assert plan.touched(INSTANCE) == {f"{K8S}-worker2": "replace"}
    dropped = "gitops-public-us-east-1c"
    assert plan.action_of(dropped) == "delete"
    assert plan.position("create", f"{K8S}-worker2") < plan.position("delete", dropped)


def test_a_new_worker_type_stops_no_worker_and_a_new_control_plane_type_restarts_only_it() -> None:
    assert second_up({"workerInstanceType": "t3.large"}).touched() == {}
    assert second_up({"controlPlaneInstanceType": "t3.large"}).touched() == {f"{K8S}-master": "stop-start"}


def test_certificates_are_checked_again_on_the_first_up_of_a_day() -> None:
    overrides = {**ADMIN}
    with clock.frozen(datetime.date(2027, 3, 1)):
        monday = run_fixture_stack("dev", overrides)
    mocks = StackMocks()
    mocks.keep_deployed(monday)
    with clock.frozen(datetime.date(2027, 3, 2)):
        tuesday = run_fixture_stack("dev", overrides, mocks=mocks)
    assert plan(monday, tuesday).touched() == {f"{K8S}-master-certificates": "update"}


@pytest.mark.parametrize("count", [1, 3])
def test_the_same_configuration_twice_changes_nothing(count: int) -> None:
    assert second_up(before={"workerCount": count}).touched() == {}


def test_a_pre_upgrade_hook_runs_before_the_control_plane_is_upgraded() -> None:
    """The backups change hangs its etcd snapshot here (KubeadmClusterArgs.pre_upgrade)."""
    hooked: list[str] = []

    def snapshot(context: object) -> list[pulumi.Resource]:
        hooked.append(context.target["TARGET_MINOR"])  # type: ignore[attr-defined]
        return [pulumi.CustomResource("test:index:Snapshot", "etcd-snapshot", {})]

    def program() -> None:
        config = load_config()
        network = Network("gitops", NetworkArgs(config=config))
        KubeadmCluster(
            K8S,
            KubeadmClusterArgs(
                config=config,
                vpc_id=network.vpc_id,
                subnet_ids=network.subnet_ids,
                cluster_security_group_id=network.cluster_security_group_id,
                gitlab_security_group_id=network.gitlab_security_group_id,
                registry_host="gitlab.example.com:5050",
                registry_ca_pem="-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
                ssh=SshAccess("gitops-ssh", config),
                pre_upgrade=snapshot,
            ),
        )

    run = run_function(program, "dev", ADMIN, stack_dir=FIXTURE_STACKS)
    assert hooked == ["1.36"]
    snapshot_urn = run.one("test:index:Snapshot", "etcd-snapshot").urn
    assert snapshot_urn in run.one(COMMAND, f"{K8S}-master-upgrade").depends_on
