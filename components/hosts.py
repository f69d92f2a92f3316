"""What every EC2 host of this product shares: the Debian image, SSH access, a hardened instance.

The GitLab host and the Kubernetes nodes are built from these pieces so that the security
defaults (IMDSv2, encrypted gp3 root volume, no IAM permission, tags) are written once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_tls as tls

from components.config import StackConfig

# Debian's cloud team publishes the official AMIs from this account
# (https://wiki.debian.org/Cloud/AmazonEC2Image); "debian-12-amd64-*" are the bookworm amd64 images.
DEBIAN_OWNER = "136693071363"
DEBIAN_NAME_PATTERN = "debian-12-amd64-*"
# The default login user of Debian cloud images (passwordless sudo).
SSH_USER = "admin"


def debian_ami_id(config: StackConfig, parent: pulumi.Resource) -> pulumi.Input[str]:
    """The configured AMI, or the newest official Debian 12 amd64 image of the region."""
    if config.ami_id:
        return config.ami_id
    return host_image(config, parent).id


def host_image(config: StackConfig, parent: pulumi.Resource) -> pulumi.Output[aws.ec2.GetAmiResult]:
    """The image ``debian_ami_id`` names, with its details (a launch template needs the root device name:
    a block device mapping on another name adds a disk instead of sizing and encrypting the root one)."""
    filters = (
        [aws.ec2.GetAmiFilterArgs(name="image-id", values=[config.ami_id])]
        if config.ami_id
        else [
            aws.ec2.GetAmiFilterArgs(name="name", values=[DEBIAN_NAME_PATTERN]),
            aws.ec2.GetAmiFilterArgs(name="architecture", values=["x86_64"]),
            aws.ec2.GetAmiFilterArgs(name="virtualization-type", values=["hvm"]),
        ]
    )
    return aws.ec2.get_ami_output(
        owners=None if config.ami_id else [DEBIAN_OWNER],
        most_recent=True,
        filters=filters,
        opts=pulumi.InvokeOptions(parent=parent),
    )


def ebs_optimized(instance_type: str, parent: pulumi.Resource | None) -> bool | None:
    """True for an instance type that supports EBS optimization, None for one that does not.

    Current-generation types are EBS-optimized by default (turning it on explicitly changes nothing,
    and says so to a scanner); a type that does not support it fails to launch with it (AWS "Amazon
    EBS-optimized instances"). The EC2 API says which is which (DescribeInstanceTypes EbsInfo:
    unsupported, supported or default).
    """
    support = aws.ec2.get_instance_type(instance_type=instance_type, opts=pulumi.InvokeOptions(parent=parent))
    return True if support.ebs_optimized_support in ("supported", "default") else None


class SshAccess(pulumi.ComponentResource):
    """The admin SSH key made by Pulumi: its private half drives the remote steps, never leaves state."""

    key_name: pulumi.Output[str]
    public_key_openssh: pulumi.Output[str]
    private_key_openssh: pulumi.Output[str]

    def __init__(self, name: str, config: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gitops:hosts:SshAccess", name, None, opts)
        key = tls.PrivateKey(f"{name}-key", algorithm="ED25519", opts=pulumi.ResourceOptions(parent=self))
        pair = aws.ec2.KeyPair(
            f"{name}-keypair",
            public_key=key.public_key_openssh,
            tags=config.tags(f"{name}-keypair"),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.key_name = pair.key_name
        self.public_key_openssh = key.public_key_openssh
        self.private_key_openssh = pulumi.Output.secret(key.private_key_openssh)
        self.register_outputs({"key_name": self.key_name, "public_key_openssh": self.public_key_openssh})


def instance_profile(name: str, config: StackConfig, parent: pulumi.Resource) -> aws.iam.InstanceProfile:
    """A role with no permissions of its own (no cloud provider, no SSM).

    Components attach what a host needs (components/backups.py: its own prefix of the backup bucket),
    and an operator can attach a policy later, without replacing the instance.
    """
    role = aws.iam.Role(
        f"{name}-role",
        assume_role_policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
                ],
            }
        ),
        tags=config.tags(f"{name}-role"),
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return aws.iam.InstanceProfile(
        f"{name}-profile",
        role=role.name,
        tags=config.tags(f"{name}-profile"),
        opts=pulumi.ResourceOptions(parent=parent),
    )


@dataclass(frozen=True)
class HostSpec:
    """One EC2 host: where it runs, what it boots with."""

    instance_type: str
    subnet_id: pulumi.Input[str]
    security_group_ids: list[pulumi.Input[str]]
    user_data: pulumi.Input[str]
    ami_id: pulumi.Input[str]
    key_name: pulumi.Input[str]
    instance_profile: pulumi.Input[str]
    associate_public_ip: bool = False


def hardened_instance(name: str, spec: HostSpec, config: StackConfig, opts: pulumi.ResourceOptions) -> aws.ec2.Instance:
    """An instance with IMDSv2 required, an encrypted gp3 root volume, EBS optimization and the common tags.

    ``ebsOptimized`` is set when the instance is created and ignored afterwards: it forces a new
    instance in the provider (ForceNew in terraform-provider-aws aws_instance), and hosts created
    before it was set are EBS-optimized already by their type (the provider reads them back as false,
    pulumi-aws ec2/instance.py: "if this is not set on an instance type that is optimized by
    default then this will show as disabled"). A running host is never replaced for it.
    """
    return aws.ec2.Instance(
        name,
        ami=spec.ami_id,
        instance_type=spec.instance_type,
        ebs_optimized=ebs_optimized(spec.instance_type, opts.parent),
        subnet_id=spec.subnet_id,
        vpc_security_group_ids=spec.security_group_ids,
        associate_public_ip_address=spec.associate_public_ip,
        key_name=spec.key_name,
        iam_instance_profile=spec.instance_profile,
        user_data=spec.user_data,
        # IMDSv2 only, one hop: containers on the host cannot reach the metadata service.
        metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
            http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1
        ),
        root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
            volume_type="gp3",
            volume_size=config.root_volume_size_gb,
            encrypted=True,
            delete_on_termination=True,
            tags=config.tags(f"{name}-root"),
        ),
        tags=config.tags(name),
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(ignore_changes=["ebsOptimized"])),
    )
