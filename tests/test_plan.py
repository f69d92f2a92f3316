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
import pulumi_kubernetes as k8s
import pulumi_tls as tls
import pytest
import yaml

from tools.harness import StackMocks
from tools.plan import (
    INSTANCE,
    UnmodelledChange,
    classify,
    diff_paths,
    ignored,
    kubernetes_provider_action,
    run_twice,
)

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
        ("aws:ec2/volumeAttachment:VolumeAttachment", ["instanceId"], {}, "replace"),
        ("aws:ec2/vpc:Vpc", ["cidrBlock"], {}, "replace"),
        ("aws:ec2/vpc:Vpc", ["enableDnsHostnames"], {}, "update"),
        ("aws:ec2/routeTableAssociation:RouteTableAssociation", ["subnetId"], {}, "replace"),
        ("aws:ec2/routeTableAssociation:RouteTableAssociation", ["routeTableId"], {}, "update"),
        ("gitlab:index/projectVariable:ProjectVariable", ["value"], {}, "update"),
        ("gitlab:index/projectVariable:ProjectVariable", ["key"], {}, "replace"),
        ("pulumi:providers:gitlab", ["baseUrl"], {}, "update"),
        (
            "gitlab:index/applicationSettings:ApplicationSettings",
            ["allowLocalRequestsFromWebHooksAndServices"],
            {},
            "update",
        ),
        ("gitlab:index/repositoryFile:RepositoryFile", ["content"], {}, "update"),
        ("gitlab:index/repositoryFile:RepositoryFile", ["branch"], {}, "replace"),
        # pulumi-kubernetes diff.go: the object's identity, and each kind's immutable fields.
        ("kubernetes:core/v1:Namespace", ["metadata.labels.team"], {}, "update"),
        ("kubernetes:core/v1:Namespace", ["metadata.name"], {}, "replace"),
        ("kubernetes:core/v1:Secret", ["data.identity"], {}, "replace"),
        ("kubernetes:core/v1:ServiceAccount", ["metadata.annotations.a"], {}, "update"),
        ("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding", ["roleRef.name"], {}, "replace"),
        ("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding", ["subjects[0].name"], {}, "update"),
        ("kubernetes:source.toolkit.fluxcd.io/v1:GitRepository", ["spec.url"], {}, "update"),
        ("kubernetes:apps/v1:Deployment", ["spec.selector.matchLabels.app"], {}, "replace"),
        ("kubernetes:helm.sh/v3:Release", ["values.image"], {}, "update"),
        ("kubernetes:helm.sh/v3:Release", ["namespace"], {}, "replace"),
        # The API endpoint (terraform-provider-aws elbv2/, route53/).
        ("aws:lb/loadBalancer:LoadBalancer", ["internal"], {}, "replace"),
        ("aws:lb/loadBalancer:LoadBalancer", ["enableCrossZoneLoadBalancing", "tags.Name"], {}, "update"),
        ("aws:lb/targetGroup:TargetGroup", ["port"], {}, "replace"),
        ("aws:lb/targetGroup:TargetGroup", ["healthCheck.interval", "preserveClientIp"], {}, "update"),
        ("aws:lb/listener:Listener", ["loadBalancerArn"], {}, "replace"),
        ("aws:lb/listener:Listener", ["defaultActions[0].targetGroupArn"], {}, "update"),
        ("aws:lb/targetGroupAttachment:TargetGroupAttachment", ["targetId"], {}, "replace"),
        ("aws:route53/zone:Zone", ["name"], {}, "replace"),
        ("aws:route53/zone:Zone", ["vpcs[0].vpcId", "comment"], {}, "update"),
        ("aws:route53/record:Record", ["zoneId"], {}, "replace"),
        # An A record that becomes an alias (1 -> 3 control-plane nodes): one change batch, in place.
        ("aws:route53/record:Record", ["aliases", "records", "ttl"], {}, "update"),
        (INSTANCE, [], {}, "same"),
        ("gitlab:index/project:Project", [], {}, "same"),
    ],
)
def test_classify_follows_each_providers_update_semantics(type_: str, keys: list, inputs: dict, action: str) -> None:
    assert classify(type_, keys, inputs) == action


@pytest.mark.parametrize(
    ("keys", "before", "after", "action"),
    [
        (["subnets"], {"subnets": ["a", "b"]}, {"subnets": ["a", "b", "c"]}, "update"),
        (["subnets"], {"subnets": ["a", "b", "c"]}, {"subnets": ["a", "b"]}, "replace"),
        (["subnets[1]"], {"subnets": ["a", "b"]}, {"subnets": ["a", "c"]}, "replace"),
        (["securityGroups"], {"securityGroups": []}, {"securityGroups": ["sg-1"]}, "replace"),
        (["securityGroups"], {"securityGroups": ["sg-1"]}, {"securityGroups": []}, "replace"),
        (["securityGroups[0]"], {"securityGroups": ["sg-1"]}, {"securityGroups": ["sg-2"]}, "update"),
    ],
)
def test_a_network_load_balancer_is_replaced_for_a_lost_subnet_or_its_first_or_last_group(
    keys: list[str], before: dict, after: dict, action: str
) -> None:
    """terraform-provider-aws load_balancer.go customizeDiffLoadBalancerNLB."""
    assert classify("aws:lb/loadBalancer:LoadBalancer", keys, after, before) == action


def test_a_change_to_a_type_the_harness_does_not_model_is_an_error_not_an_update() -> None:
    """Counting it an update would hide a replacement: the harness fails closed."""
    with pytest.raises(UnmodelledChange, match=r"gitlab:index/project:Project: \['description'\] changed"):
        classify("gitlab:index/project:Project", ["description"], {})


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


# ------------------------------------------------------------------------------------------------
# The Kubernetes provider (pulumi-kubernetes provider.go DiffConfig) and what it manages
# ------------------------------------------------------------------------------------------------
def kubeconfig(server: str, ca: str = "Q0EgMQ==", user_cert: str = "Y2VydCAx") -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "k8s", "cluster": {"server": server, "certificate-authority-data": ca}}],
            "users": [{"name": "admin", "user": {"client-certificate-data": user_cert}}],
            "contexts": [{"name": "admin@k8s", "context": {"cluster": "k8s", "user": "admin"}}],
            "current-context": "admin@k8s",
        }
    )


@pytest.mark.parametrize(
    ("old", "new", "computed", "action"),
    [
        # Another client certificate for the same cluster: the active cluster is unchanged.
        (
            {"kubeconfig": kubeconfig("https://a:6443")},
            {"kubeconfig": kubeconfig("https://a:6443", user_cert="Mg==")},
            [],
            "update",
        ),
        ({"kubeconfig": kubeconfig("https://a:6443")}, {"kubeconfig": kubeconfig("https://b:6443")}, [], "replace"),
        (
            {"kubeconfig": kubeconfig("https://a:6443")},
            {"kubeconfig": kubeconfig("https://a:6443", ca="Mg==")},
            [],
            "replace",
        ),
        # In a preview the new kubeconfig may be unknown: "we can't tell", so replace...
        (
            {"kubeconfig": kubeconfig("https://a:6443")},
            {"kubeconfig": kubeconfig("https://a:6443")},
            ["kubeconfig"],
            "replace",
        ),
        # ...unless an unchanged clusterIdentifier says it is the same cluster.
        (
            {"kubeconfig": kubeconfig("https://a:6443"), "clusterIdentifier": "one"},
            {"kubeconfig": kubeconfig("https://b:6443"), "clusterIdentifier": "one"},
            ["kubeconfig"],
            "update",
        ),
        ({"clusterIdentifier": "one"}, {"clusterIdentifier": "two"}, [], "replace"),
        # Adding an identifier replaces nothing ("to make on-boarding less risky").
        (
            {"kubeconfig": kubeconfig("https://a:6443")},
            {"kubeconfig": kubeconfig("https://a:6443"), "clusterIdentifier": "one"},
            [],
            "update",
        ),
    ],
)
def test_the_kubernetes_provider_is_replaced_only_for_another_cluster(
    old: dict, new: dict, computed: list, action: str
) -> None:
    keys = diff_paths(old, new)
    assert kubernetes_provider_action(old, new, keys, computed) == action


def cluster_program(*, identifier: bool) -> Callable[[], Any]:
    """A cluster's kubeconfig made from a certificate, its provider, and one object it manages."""

    def program() -> None:
        key = tls.PrivateKey("admin-key", algorithm="ED25519")
        cert = tls.SelfSignedCert(
            "admin-cert",
            private_key_pem=key.private_key_pem,
            subject=tls.SelfSignedCertSubjectArgs(common_name="admin"),
            validity_period_hours=8760,
            allowed_uses=["client_auth"],
        )
        server = pulumi.Config().get("server") or "https://10.0.0.1:6443"
        provider = k8s.Provider(
            "cluster",
            kubeconfig=cert.cert_pem.apply(lambda pem: kubeconfig(server, user_cert=str(len(pem)))),
            cluster_identifier="kubeadm:cluster:sha256:ca" if identifier else None,
        )
        k8s.core.v1.Namespace("flux", metadata={"name": "flux"}, opts=pulumi.ResourceOptions(provider=provider))

    return program


def test_a_replaced_provider_replaces_every_object_it_manages() -> None:
    plan = twice(cluster_program(identifier=False), {"server": "https://10.0.0.2:6443"}).plan
    assert plan.touched() == {"cluster": "replace", "flux": "replace"}
    assert plan.of("flux").keys == ("provider",)


def test_a_preview_with_an_unknown_kubeconfig_replaces_everything_unless_the_cluster_is_identified() -> None:
    """The yearly re-issue of the admin certificate: the `up` updates, its preview shows replacements."""
    up = twice(cluster_program(identifier=False), replace=["admin-cert"]).plan
    assert up.touched() == {"admin-cert": "replace", "cluster": "update"}
    preview = twice(cluster_program(identifier=False), replace=["admin-cert"], preview=True).plan
    assert preview.touched() == {"admin-cert": "replace", "cluster": "replace", "flux": "replace"}
    identified = twice(cluster_program(identifier=True), replace=["admin-cert"], preview=True).plan
    assert identified.touched() == {"admin-cert": "replace", "cluster": "update"}
