"""The second-run plan harness (tools/plan.py): provider update semantics, ignore_changes, ordering.

The statements about this product's own plans are in tests/test_day2.py; these pin the harness to
the upstream behaviour it models, on small programs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_command as command
import pytest

from tools.harness import StackMocks
from tools.plan import INSTANCE, classify, diff_paths, ignored, run_twice

COMMAND = "command:remote:Command"


@pytest.mark.parametrize(
    ("type_", "keys", "inputs", "action"),
    [
        (INSTANCE, ["ami"], {}, "replace"),
        (INSTANCE, ["subnetId"], {}, "replace"),
        (INSTANCE, ["keyName"], {}, "replace"),
        (INSTANCE, ["privateIp"], {}, "replace"),
        (INSTANCE, ["availabilityZone"], {}, "replace"),
        (INSTANCE, ["userData"], {}, "stop-start"),
        (INSTANCE, ["userData"], {"userDataReplaceOnChange": True}, "replace"),
        (INSTANCE, ["instanceType"], {}, "stop-start"),
        (INSTANCE, ["tags.Name"], {}, "update"),
        (INSTANCE, ["vpcSecurityGroupIds[1]"], {}, "update"),
        (INSTANCE, ["rootBlockDevice.volumeSize"], {}, "update"),
        (INSTANCE, ["rootBlockDevice.encrypted"], {}, "replace"),
        (COMMAND, ["triggers[1]"], {}, "replace"),
        (COMMAND, ["create", "stdin"], {}, "update"),
        # pulumi-command >= 0.6 (infer): connection is not replaceOnChanges any more.
        (COMMAND, ["connection.host"], {}, "update"),
        ("tls:index/locallySignedCert:LocallySignedCert", ["earlyRenewalHours"], {}, "update"),
        ("tls:index/locallySignedCert:LocallySignedCert", ["validityPeriodHours"], {}, "replace"),
        ("random:index/randomPassword:RandomPassword", ["keepers.rotation"], {}, "replace"),
        ("aws:ec2/eipAssociation:EipAssociation", ["instanceId"], {}, "replace"),
        ("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", ["description"], {}, "update"),
        ("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", ["securityGroupId"], {}, "replace"),
        (INSTANCE, ["ebsOptimized"], {}, "replace"),
        # The CI fleet: a template change is a new version; the group takes everything but its name.
        ("aws:ec2/launchTemplate:LaunchTemplate", ["imageId", "userData", "instanceType"], {}, "update"),
        ("aws:ec2/launchTemplate:LaunchTemplate", ["name"], {}, "replace"),
        ("aws:autoscaling/group:Group", ["maxSize", "vpcZoneIdentifiers[2]", "launchTemplate.version"], {}, "update"),
        ("aws:autoscaling/group:Group", ["name"], {}, "replace"),
        ("aws:iam/rolePolicy:RolePolicy", ["policy"], {}, "update"),
        ("aws:iam/rolePolicy:RolePolicy", ["role"], {}, "replace"),
        # Flow logs: every argument but the tags is ForceNew; a log group keeps its data on a new retention.
        ("aws:ec2/flowLog:FlowLog", ["trafficType"], {}, "replace"),
        ("aws:ec2/flowLog:FlowLog", ["tags.Name"], {}, "update"),
        ("aws:cloudwatch/logGroup:LogGroup", ["retentionInDays"], {}, "update"),
        ("aws:cloudwatch/logGroup:LogGroup", ["name"], {}, "replace"),
        ("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup", ["vpcId"], {}, "replace"),
        ("gitlab:index/project:Project", ["description"], {}, "update"),  # not modelled: an update
        (INSTANCE, [], {}, "same"),
    ],
)
def test_classify_follows_each_providers_update_semantics(type_: str, keys: list, inputs: dict, action: str) -> None:
    assert classify(type_, keys, inputs) == action


def test_diff_paths_and_ignore_changes_paths() -> None:
    old = {"a": 1, "tags": {"Name": "x", "Stack": "dev"}, "list": [1, 2], "gone": 1}
    new = {"a": 1, "tags": {"Name": "y", "Stack": "dev"}, "list": [1, 2, 3], "added": 2}
    assert diff_paths(old, new) == {"tags.Name", "list", "gone", "added"}
    assert ignored("tags.Name", ['tags["Name"]'])
    assert ignored("rootBlockDevice.volumeSize", ["rootBlockDevice"])
    assert not ignored("amiFoo", ["ami"])


# ------------------------------------------------------------------------------------------------
# Small programs run twice
# ------------------------------------------------------------------------------------------------
def host_program(
    *, ignore: list[str] | None = None, delete_before_replace: bool = False, protect: bool = False
) -> Callable[[], Any]:
    """An instance, a step bound to it (triggers, with a delete) and a step that connects to its public IP."""

    def program() -> None:
        config = pulumi.Config()
        instance = aws.ec2.Instance(
            "host",
            ami=aws.ec2.get_ami_output(owners=["136693071363"], most_recent=True).id,
            instance_type=config.get("instanceType") or "t3.medium",
            subnet_id=config.get("subnet") or "subnet-1",
            user_data=config.get("userData") or "#cloud-config\n",
            associate_public_ip_address=True,
            opts=pulumi.ResourceOptions(
                ignore_changes=ignore or [], delete_before_replace=delete_before_replace, protect=protect
            ),
        )
        connection = command.remote.ConnectionArgs(host="198.51.100.1", user="admin")
        command.remote.Command(
            "bound",
            connection=connection,
            create="echo admitted",
            delete="echo drained",
            triggers=[instance.id],
        )
        command.remote.Command(
            "on-host",
            connection=command.remote.ConnectionArgs(host=instance.public_ip, user="admin"),
            create="echo configured",
        )

    return program


def twice(program: Callable[[], Any], after: dict | None = None, **kwargs: Any):
    return run_twice(before={"adminCidrs": ["203.0.113.7/32"]}, after=after, program=program, **kwargs)


NEWER_AMI = StackMocks(newest_ami="ami-0fedcba9876543210")


def test_a_newer_ami_replaces_an_instance_that_does_not_ignore_it_and_everything_bound_to_it() -> None:
    plan = twice(host_program(), mocks_after=NEWER_AMI).plan
    assert plan.touched() == {"host": "replace", "bound": "replace", "on-host": "update"}
    # Create before delete: the new instance first, the old one (and the old step's delete) at the end.
    assert plan.position("create", "host") < plan.position("delete", "bound") < plan.position("delete", "host")


def test_ignore_changes_keeps_a_running_instance_and_its_steps() -> None:
    plan = twice(
        host_program(ignore=["ami", "userData"]),
        {"userData": "#cloud-config\nruncmd: []\n"},
        mocks_after=StackMocks(newest_ami="ami-0fedcba9876543210"),
    ).plan
    assert plan.touched() == {}


def test_a_stop_and_start_releases_the_public_ip_so_steps_that_connect_to_it_run_again() -> None:
    plan = twice(host_program(), {"instanceType": "t3.large"}).plan
    assert plan.touched() == {"host": "stop-start", "on-host": "update"}
    assert plan.of("on-host").keys == ("connection",)


def test_delete_before_replace_deletes_the_bound_steps_first_then_creates_them_after() -> None:
    plan = twice(host_program(delete_before_replace=True), {"subnet": "subnet-2"}).plan
    assert plan.touched() == {"host": "replace", "bound": "replace", "on-host": "update"}
    order = [
        plan.position(op, name)
        for op, name in (("delete", "bound"), ("delete", "host"), ("create", "host"), ("create", "bound"))
    ]
    assert order == sorted(order)


def test_replace_on_request_rebuilds_even_what_ignore_changes_would_keep() -> None:
    plan = twice(host_program(ignore=["ami"]), replace=["host"]).plan
    assert plan.action_of("host") == "replace"
    assert plan.of("host").keys == ("--replace",)
    assert plan.action_of("bound") == "replace"


def test_a_protected_resource_is_never_replaced_or_deleted() -> None:
    plan = twice(host_program(protect=True), {"subnet": "subnet-2"}).plan
    assert plan.action_of("host") == "replace"
    (error,) = plan.errors
    assert "unable to replace resource" in error and "pulumi state unprotect" in error


def test_removed_resources_go_dependents_first() -> None:
    def program() -> None:
        host_program()()
        if not pulumi.Config().get_bool("removed"):
            instance = aws.ec2.Instance("extra", ami="ami-1", instance_type="t3.small")
            command.remote.Command(
                "extra-bound",
                connection=command.remote.ConnectionArgs(host="198.51.100.1"),
                create="true",
                delete="echo drained",
                triggers=[instance.id],
            )

    plan = run_twice(
        before={"adminCidrs": ["203.0.113.7/32"]},
        after={"removed": "true"},
        program=program,
    ).plan
    assert plan.touched() == {"extra": "delete", "extra-bound": "delete"}
    assert plan.position("delete", "extra-bound") < plan.position("delete", "extra")
