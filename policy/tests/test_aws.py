"""AWS policies: each row is a realistic mistake the pack stops, next to the compliant resource."""

from __future__ import annotations

import base64
import gzip
from pathlib import Path

import pytest

from policy.gitops_policies.aws import policy_document_findings, user_data_findings
from policy.tests import resources as r
from policy.tests.cases import Case
from tools.policy_runner import analyze, secret

ROOT = Path(__file__).resolve().parents[2]
RSA_KEY_BLOCK = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGcY\n-----END RSA PRIVATE KEY-----\n"
)

CASES = [
    # --- IMDSv2 ----------------------------------------------------------------------------
    Case(
        "aws-ec2-imdsv2-required",
        "instance-allows-imdsv1",
        bad=[r.instance(metadataOptions={"httpTokens": "optional"})],
        expect="httpTokens is 'optional'",
        good=[r.instance()],
    ),
    Case(
        "aws-ec2-imdsv2-required",
        "job-vm-template-allowing-imdsv1",
        bad=[r.launch_template("runners-job-vm", metadataOptions={"httpTokens": "optional"})],
        expect="httpTokens is 'optional'",
        good=[r.launch_template("runners-job-vm")],
    ),
    Case(
        "aws-ec2-imdsv2-required",
        "launch-template-without-metadata-options",
        bad=[r.launch_template(metadataOptions=None)],
        expect="httpTokens is None",
        good=[r.launch_template()],
    ),
    # --- encryption ------------------------------------------------------------------------
    Case(
        "aws-ec2-block-devices-encrypted",
        "unencrypted-root-volume",
        bad=[r.instance(rootBlockDevice={"encrypted": False})],
        expect="rootBlockDevice.encrypted is not true",
        good=[r.instance()],
    ),
    Case(
        "aws-ec2-block-devices-encrypted",
        "root-volume-left-to-account-default",
        bad=[r.instance(rootBlockDevice=None)],
        expect="rootBlockDevice is not set",
        good=[r.instance()],
    ),
    Case(
        "aws-ec2-block-devices-encrypted",
        "launch-template-mapping-unencrypted",
        bad=[r.launch_template(blockDeviceMappings=[{"deviceName": "/dev/xvda", "ebs": {"encrypted": "false"}}])],
        expect="blockDeviceMappings[0].ebs.encrypted is not true",
        good=[r.launch_template()],
    ),
    Case(
        "aws-ebs-volume-encrypted",
        "unencrypted-gitlab-data-volume",
        bad=[r.volume(encrypted=False)],
        expect="encrypted=False",
        good=[r.volume()],
    ),
    # --- instance families -----------------------------------------------------------------
    Case(
        "aws-ec2-current-generation",
        "t2-worker",
        bad=[r.instance("gitops-worker-1", instanceType="t2.medium")],
        expect="previous-generation family t2",
        good=[r.instance("gitops-worker-1", instanceType="t3.medium")],
    ),
    Case(
        "aws-ec2-current-generation",
        "m4-in-a-launch-template",
        bad=[r.launch_template(instanceType="m4.large")],
        expect="family m4",
        good=[r.launch_template(instanceType="m6i.large")],
    ),
    # --- user data -------------------------------------------------------------------------
    Case(
        "aws-user-data-no-secrets",
        "ssh-host-key-written-by-cloud-init",
        bad=[
            r.instance(
                userData="#cloud-config\nwrite_files:\n  - path: /srv/gitlab/config/ssh_host_rsa_key\n    content: |\n"
                + "".join(f"      {line}\n" for line in RSA_KEY_BLOCK.splitlines())
            )
        ],
        expect="userData contains a private key",
        good=[r.instance()],
    ),
    Case(
        "aws-user-data-no-secrets",
        "kubeadm-join-with-its-token",
        bad=[
            r.instance(
                "gitops-worker-1",
                userData="#!/bin/bash\nkubeadm join 10.42.0.10:6443 --token abcdef.0123456789abcdef "
                "--discovery-token-ca-cert-hash sha256:1234\n",
            )
        ],
        expect="a kubeadm bootstrap token",
        good=[r.instance("gitops-worker-1")],
    ),
    Case(
        "aws-user-data-no-secrets",
        "runner-token-in-an-env-file",
        bad=[
            r.instance(
                userData=r.PUBLIC_USER_DATA.replace("REGISTRY_PORT=5050", "RUNNER_TOKEN=glrt-t1_Zx8Kq2Lm4Np6Rs8Tv0Wy")
            )
        ],
        expect="a GitLab token",
        good=[r.instance()],
    ),
    Case(
        "aws-user-data-no-secrets",
        "root-password-in-gitlab-omnibus-config",
        bad=[
            r.instance(
                userData=r.PUBLIC_USER_DATA.replace(
                    "REGISTRY_PORT=5050",
                    "GITLAB_OMNIBUS_CONFIG=\"gitlab_rails['initial_root_password'] = 'Sup3r-S3cret-Pw'\"",
                )
            )
        ],
        expect="credential assignment",
        good=[r.instance()],
    ),
    Case(
        "aws-user-data-no-secrets",
        "gzipped-base64-user-data-is-read-too",
        bad=[
            r.instance(
                userData=None,
                userDataBase64=base64.b64encode(gzip.compress(f"#cloud-config\n# {RSA_KEY_BLOCK}".encode())).decode(),
            )
        ],
        expect="userDataBase64 contains a private key",
        good=[r.instance(userData=None, userDataBase64=base64.b64encode(r.PUBLIC_USER_DATA.encode()).decode())],
    ),
    Case(
        "aws-user-data-no-secrets",
        "secret-wrapped-user-data-is-still-scanned",
        bad=[r.instance(userData=secret("#!/bin/bash\nexport GITLAB_ROOT_PASSWORD=Hunter2-Hunter2\n"))],
        expect="credential assignment to 'GITLAB_ROOT_PASSWORD'",
        good=[r.instance(userData=secret(r.PUBLIC_USER_DATA))],
    ),
    Case(
        "aws-user-data-no-secrets",
        "launch-template-user-data",
        bad=[r.launch_template(userData=base64.b64encode(b"#!/bin/sh\nglpat-abcdefghij0123456789\n").decode())],
        expect="a GitLab token",
        good=[r.launch_template()],
    ),
    # --- world-open ingress ----------------------------------------------------------------
    Case(
        "aws-ingress-not-world-open",
        "ssh-from-anywhere",
        bad=[r.ingress_rule("gitops-gitlab-ssh", 22, cidr="0.0.0.0/0")],
        expect="opens tcp 22 to 0.0.0.0/0",
        good=[r.ingress_rule("gitops-gitlab-ssh", 22)],
    ),
    Case(
        "aws-ingress-not-world-open",
        "all-traffic-from-ipv6-anywhere",
        bad=[r.ingress_rule("gitops-cluster-all", None, cidr="::/0", protocol="-1")],
        expect="opens all traffic to ::/0",
        good=[r.ingress_rule("gitops-cluster-all", None, cidr=None, group=r.CLUSTER_GROUP, protocol="-1")],
    ),
    Case(
        "aws-ingress-not-world-open",
        "whole-nodeport-range-like-the-tutorial",
        bad=[r.ingress_rule("gitops-workers-nodeports", (30000, 32767), cidr="0.0.0.0/0")],
        expect="opens tcp 30000-32767",
        good=[r.ingress_rule("gitops-workers-app", 30000, cidr="0.0.0.0/0", description="shark-app NodePort")],
    ),
    Case(
        "aws-ingress-not-world-open",
        "inline-ingress-on-a-group",
        bad=[r.security_group(ingress=[r.inline_ingress(443, ["0.0.0.0/0"])])],
        expect="ingress[0] opens tcp 443",
        good=[r.security_group(ingress=[r.inline_ingress(443, [r.ADMIN_CIDR])])],
    ),
    Case(
        "aws-ingress-not-world-open",
        "security-group-rule-resource",
        bad=[r.security_group_rule("gitops-registry", 5050, ["0.0.0.0/0"])],
        expect="opens tcp 5050",
        good=[r.security_group_rule("gitops-registry", 5050, [r.ADMIN_CIDR])],
    ),
    # --- admin ports -----------------------------------------------------------------------
    Case(
        "aws-admin-ports-restricted",
        "kubernetes-api-from-a-slash-8",
        bad=[r.ingress_rule("gitops-cluster-api", 6443, cidr="10.0.0.0/8")],
        expect="admits 10.0.0.0/8 to admin port(s) 6443",
        good=[r.ingress_rule("gitops-cluster-api", 6443)],
    ),
    Case(
        "aws-admin-ports-restricted",
        "gitlab-web-from-anywhere",
        bad=[r.ingress_rule("gitops-gitlab-https", 443, cidr="0.0.0.0/0")],
        expect="admits 0.0.0.0/0 to admin port(s) 443",
        good=[r.ingress_rule("gitops-gitlab-https", 443, cidr=None, group=r.CLUSTER_GROUP)],
    ),
    Case(
        "aws-admin-ports-restricted",
        "prod-refuses-the-whole-vpc-on-ssh",
        bad=[r.ingress_rule("gitops-gitlab-ssh", 22, cidr="10.42.0.0/16")],
        expect="the widest source allowed is /24",
        good=[r.ingress_rule("gitops-gitlab-ssh", 22, cidr="10.42.0.0/24")],
        config={"aws-admin-ports-restricted": {"minIpv4PrefixLength": 24}},
    ),
    # --- cluster-internal ports ------------------------------------------------------------
    Case(
        "aws-cluster-ports-from-groups",
        "kubelet-from-the-vpc-cidr",
        bad=[r.ingress_rule("gitops-cluster-kubelet", 10250, cidr="10.42.0.0/16")],
        expect="admits 10.42.0.0/16 to cluster-internal port(s) 10250",
        good=[r.ingress_rule("gitops-cluster-kubelet", 10250, cidr=None, group=r.CLUSTER_GROUP)],
    ),
    Case(
        "aws-cluster-ports-from-groups",
        "etcd-in-an-inline-rule",
        bad=[r.security_group(ingress=[r.inline_ingress(2379, [r.ADMIN_CIDR], "etcd")])],
        expect="cluster-internal port(s) 2379-2380",
        good=[
            r.security_group(
                ingress=[{"protocol": "tcp", "fromPort": 2379, "toPort": 2380, "self": True, "description": "etcd"}]
            )
        ],
    ),
    Case(
        "aws-cluster-ports-from-groups",
        "flannel-vxlan-open-to-a-cidr",
        bad=[r.ingress_rule("gitops-cluster-vxlan", 8472, cidr="10.42.0.0/16", protocol="udp")],
        expect="8472",
        good=[r.ingress_rule("gitops-cluster-vxlan", 8472, cidr=None, group=r.CLUSTER_GROUP, protocol="udp")],
    ),
    # --- descriptions ----------------------------------------------------------------------
    Case(
        "aws-security-group-rules-described",
        "rule-without-description",
        bad=[r.ingress_rule("gitops-gitlab-ssh", 22, description=None)],
        expect="rule gitops-gitlab-ssh has no description",
        good=[r.ingress_rule("gitops-gitlab-ssh", 22)],
    ),
    Case(
        "aws-security-group-rules-described",
        "group-with-pulumi-default-description",
        bad=[r.security_group(description="Managed by Pulumi")],
        expect="no description of its own",
        good=[r.security_group()],
    ),
    Case(
        "aws-security-group-rules-described",
        "inline-rule-without-description",
        bad=[r.security_group(ingress=[r.inline_ingress(443, [r.ADMIN_CIDR], description="")])],
        expect="ingress[0] of gitops-legacy has no description",
        good=[r.security_group(ingress=[r.inline_ingress(443, [r.ADMIN_CIDR])])],
    ),
    # --- IAM -------------------------------------------------------------------------------
    Case(
        "aws-iam-least-privilege",
        "star-action",
        bad=[r.role_policy("gitops-gitlab-admin", {"Effect": "Allow", "Action": "*", "Resource": "*"})],
        expect="allows every action",
        good=[
            r.role_policy(
                "gitops-gitlab-admin",
                {"Effect": "Allow", "Action": ["ec2:DescribeInstances", "ec2:DescribeTags"], "Resource": "*"},
            )
        ],
    ),
    Case(
        "aws-iam-least-privilege",
        "write-actions-on-every-resource",
        bad=[r.role_policy("gitops-backup", {"Sid": "Backups", "Effect": "Allow", "Action": "s3:*", "Resource": "*"})],
        expect="Statement[0] (Backups) allows s3:* on every resource",
        good=[
            r.role_policy(
                "gitops-backup",
                {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::gitops-backups/*"},
            )
        ],
    ),
    Case(
        "aws-iam-least-privilege",
        "allow-not-action",
        bad=[r.role_policy("gitops-ops", {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})],
        expect="NotAction",
        good=[r.role_policy("gitops-ops", {"Effect": "Deny", "NotAction": "ec2:Describe*", "Resource": "*"})],
    ),
    Case(
        "aws-iam-least-privilege",
        "administrator-access-attached",
        bad=[r.policy_attachment("gitops-gitlab-admin", "arn:aws:iam::aws:policy/AdministratorAccess")],
        expect="AWS managed policy AdministratorAccess",
        good=[r.policy_attachment("gitops-gitlab-ssm", "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore")],
    ),
    Case(
        "aws-iam-least-privilege",
        "role-with-power-user-and-inline-star",
        bad=[
            r.role(
                managedPolicyArns=["arn:aws:iam::aws:policy/PowerUserAccess"],
                inlinePolicies=[
                    {"name": "all", "policy": r.iam_document({"Effect": "Allow", "Action": "*:*", "Resource": "*"})}
                ],
            )
        ],
        expect="PowerUserAccess",
        good=[r.role()],
    ),
    # --- GitLab data -----------------------------------------------------------------------
    Case(
        "aws-gitlab-data-survives-instance",
        "unprotected-data-volume",
        bad=[r.volume(protect=False)],
        expect="GitLab data volume gitops-gitlab-data is not protected",
        good=[r.volume(protect=True)],
    ),
    Case(
        "aws-gitlab-data-survives-instance",
        "data-volume-recognised-by-its-name-tag",
        bad=[r.volume("gitops-disk-1", protect=False, tags={"Name": "gitops-gitlab-data"})],
        expect="is not protected",
        good=[r.volume("gitops-disk-1", protect=True, tags={"Name": "gitops-gitlab-data"})],
    ),
    Case(
        "aws-gitlab-data-survives-instance",
        "data-disk-inline-on-the-instance",
        bad=[r.instance(ebsBlockDevices=[{"deviceName": "/dev/sdf", "volumeSize": 50, "encrypted": True}])],
        expect="ebsBlockDevices[0] (/dev/sdf) is deleted when the instance terminates",
        good=[r.instance(), r.volume()],
    ),
    # --- tags ------------------------------------------------------------------------------
    Case(
        "aws-required-tags",
        "vpc-without-managed-by",
        bad=[r.vpc(tags={"ManagedBy": None}), *r.vpc_baseline(r.vpc())],
        expect="lacks the tag(s) ManagedBy",
        good=[r.vpc(), *r.vpc_baseline(r.vpc())],
    ),
    Case(
        "aws-required-tags",
        "job-vms-launched-untagged",
        bad=[r.launch_template("runners-job-vm", tagSpecifications=None)],
        expect="runners-job-vm tags no instance it launches",
        good=[r.launch_template("runners-job-vm")],
    ),
    Case(
        "aws-required-tags",
        "job-vm-volumes-without-stack",
        bad=[
            r.launch_template(
                "runners-job-vm",
                tagSpecifications=[
                    {"resourceType": "instance", "tags": r.tags("runners-job-vm")},
                    {"resourceType": "volume", "tags": {"Name": "runners-job-vm"}},
                ],
            )
        ],
        expect="the volumes runners-job-vm launches lack the tag(s) Project, Stack, ManagedBy",
        good=[r.launch_template("runners-job-vm")],
    ),
    Case(
        "aws-required-tags",
        "autoscaling-group-tag-list-without-project",
        bad=[
            r.autoscaling_group(
                tags=[
                    {"key": k, "value": v, "propagateAtLaunch": False} for k, v in r.tags("x").items() if k != "Project"
                ]
            )
        ],
        expect="runners-job-vms lacks the tag(s) Project",
        good=[r.autoscaling_group()],
    ),
    # --- the VPC ---------------------------------------------------------------------------
    Case(
        "aws-vpc-flow-logs-and-closed-default-group",
        "vpc-without-flow-logs-or-managed-default-group",
        bad=[r.vpc()],
        expect="VPC gitops-vpc has no flow log of ALL its traffic",
        good=[r.vpc(), *r.vpc_baseline(r.vpc())],
    ),
    Case(
        "aws-vpc-flow-logs-and-closed-default-group",
        "default-group-left-open",
        bad=[
            r.vpc(),
            *r.vpc_baseline(
                r.vpc(),
                ingress=[{"protocol": "-1", "fromPort": 0, "toPort": 0, "self": True, "description": "AWS default"}],
                egress=[
                    {"protocol": "-1", "fromPort": 0, "toPort": 0, "cidrBlocks": ["0.0.0.0/0"], "description": "x"}
                ],
            ),
        ],
        expect="default security group gitops-default-group of VPC gitops-vpc has ingress and egress rules",
        good=[r.vpc(), *r.vpc_baseline(r.vpc())],
    ),
    Case(
        "aws-vpc-flow-logs-and-closed-default-group",
        "flow-logs-kept-forever",
        bad=[r.vpc(), *r.vpc_baseline(r.vpc(), retention=None)],
        expect="log group gitops-flow-logs of flow log gitops-flow-log keeps flow logs forever",
        good=[r.vpc(), *r.vpc_baseline(r.vpc(), retention=90)],
    ),
    Case(
        "aws-required-tags",
        "volume-without-any-tag",
        bad=[r.volume(tags=None)],
        expect="lacks the tag(s) Project, Stack, ManagedBy, Name",
        good=[r.volume()],
    ),
]


def test_default_tags_of_an_explicit_provider_count() -> None:
    provider = r.aws_provider(default_tags={"Project": "gitops", "Stack": "dev", "ManagedBy": "pulumi"})
    tagged_by_provider = r.vpc(tags={"Project": None, "Stack": None, "ManagedBy": None})
    tagged_by_provider.provider = f"{provider.urn}::provider-id"
    assert analyze([provider, tagged_by_provider]).of("aws-required-tags") == []
    alone = r.vpc(tags={"Project": None, "Stack": None, "ManagedBy": None})
    assert [v.resource for v in analyze([alone]).of("aws-required-tags")] == ["gitops-vpc"]


def test_a_public_port_is_configurable_per_stack() -> None:
    nodeport = r.ingress_rule("gitops-workers-app", 31080, cidr="0.0.0.0/0", description="app NodePort")
    assert analyze([nodeport]).of("aws-ingress-not-world-open")  # default: only 30000
    config = {"aws-ingress-not-world-open": {"publicPorts": [31080]}}
    assert analyze([nodeport], config=config).violations == ()


@pytest.mark.parametrize(
    ("statement", "finding"),
    [
        ({"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}, None),
        ({"Effect": "Allow", "Action": ["logs:CreateLogStream"], "Resource": "*"}, "logs:CreateLogStream"),
        ({"Effect": "Allow", "Action": "ec2:CreateTags", "NotResource": "arn:aws:ec2:*:*:vpc/*"}, "ec2:CreateTags"),
        ({"Effect": "Deny", "Action": "*", "Resource": "*"}, None),
        ({"Effect": "Allow", "Action": "s3:GetObject", "Resource": ["arn:aws:s3:::b/*"]}, None),
    ],
)
def test_iam_statements(statement: dict, finding: str | None) -> None:
    findings = policy_document_findings(r.iam_document(statement), allowed_actions=set())
    if finding is None:
        assert findings == []
    else:
        assert len(findings) == 1 and finding in findings[0]


def test_write_actions_aws_only_grants_on_star_can_be_allowed() -> None:
    statement = {"Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "*"}
    assert policy_document_findings(r.iam_document(statement), allowed_actions={"ec2:createtags"}) == []


@pytest.mark.parametrize(
    "text",
    [
        r.PUBLIC_USER_DATA,
        "lock_passwd: true\nssh_pwauth: false\n",
        'token="$(cat /run/gitops/token)"\npassword: ${GITLAB_PASSWORD}\nTOKEN_TTL=24h\n',
        "server: https://ec2-198-51-100-20.compute-1.amazonaws.com:6443\n",
    ],
)
def test_public_user_data_is_not_mistaken_for_a_secret(text: str) -> None:
    assert user_data_findings(text) == []


def test_the_products_own_host_scripts_pass_the_user_data_scanner() -> None:
    """Everything under userdata/ may end up in user data (components/cloudinit.py)."""
    scripts = sorted(p for p in (ROOT / "userdata").rglob("*") if p.is_file())
    assert scripts, "userdata/ holds the boot and step scripts"
    for path in scripts:
        assert user_data_findings(path.read_text()) == [], path
