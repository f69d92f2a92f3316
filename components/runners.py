"""Runners: CI jobs off the GitLab host, on job VMs an autoscaling runner manager starts and removes.

In the order things happen:

1. Network: the manager's group (SSH from adminCidrs, for the steps) and the job VMs' group (SSH
   from the manager's group only); GitLab admits the manager on 443 and the job VMs on 443 and 5050;
   in push delivery with the certificate integration the cluster's API admits the job VMs (the
   deploy job calls it; with the agent it goes through GitLab's k8s proxy on 443 instead).
2. Job VMs: a launch template (IMDSv2 only, encrypted gp3 root, no instance profile, no key pair,
   the manager's public key and GitLab's CA in user data, Docker installed at boot) and an EC2 Auto
   Scaling group with a fixed ceiling (GROUP_MAX_SIZE) that only the runner scales, up to
   runnerMaxInstances (config.toml's max_instances, the working limit): no scaling policy,
   scale-in protection, AZRebalance suspended, its desired capacity left to the plugin
   (fleeting-plugin-aws README "Autoscaling Group Setup"; gitlab-runner docs/executors/docker_autoscaler.md).
3. The manager: a hardened instance whose role may scale and shrink that one group, an instance
   runner in GitLab (gitlab.UserRunner: a glrt- token, untagged jobs), and steps over SSH that
   install gitlab-runner from GitLab's apt repository and write its config.toml, token and job-VM
   key arriving on stdin (userdata/runners/).

A capacity change (runnerMaxInstances, runnerCapacityPerInstance, runnerIdleCount, runnerIdleTime)
re-runs the configure step, which restarts gitlab-runner; the group's size limits never move (its
MaxInstances tag follows runnerMaxInstances) and nothing is replaced (tests/test_day2.py).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_gitlab as gitlab
import pulumi_tls as tls

from components import runner_config
from components.cloudinit import render
from components.config import MAX_RUNNER_INSTANCES, StackConfig
from components.gitlab_config import HTTPS_PORT, REGISTRY_PORT, RUNNER_JOB_IMAGE, secret_bundle
from components.hosts import HostSpec, SshAccess, debian_ami_id, ebs_optimized, hardened_instance, host_image
from components.kubeadm import API_SERVER_PORT
from components.remote import operator_ssh_key_step, remote_step

SSH_PORT = 22
# How long a restart of gitlab-runner waits for running jobs (userdata/runners/configure-runner.sh).
DRAIN_SECONDS = 600
# The ASG processes the plugin needs suspended: AZRebalance would terminate job VMs to even out zones.
SUSPENDED_PROCESSES = ("AZRebalance",)
# The group's MaxSize: a ceiling that never moves, at least any runnerMaxInstances the config accepts;
# config.toml's max_instances is the limit that works ("Maximum capacity should be equal or more than
# the configured fleeting Max Size option": fleeting-plugin-aws README, research/runners.md section 3).
# Lowering MaxSize below the group's size makes AWS lower the desired capacity with it
# (UpdateAutoScalingGroup: "we implicitly call SetDesiredCapacity to set the size of the group to the
# new value of MaxSize"); the VMs are scale-in protected, so none goes, and the runner's own deletions
# (TerminateInstanceInAutoScalingGroup, decrementing) then hit "desiredSize equals minSize (0)" for
# the last one: a billed VM nobody removes. A fixed ceiling never lowers anything.
GROUP_MAX_SIZE = MAX_RUNNER_INSTANCES
# The group's tag naming the working limit, for people reading the console and for tools/cost.py
# (a tag change is CreateOrUpdateTags alone, never UpdateAutoScalingGroup: terraform-provider-aws
# internal/service/autoscaling/group.go resourceGroupUpdate).
MAX_INSTANCES_TAG = "MaxInstances"


@dataclass(frozen=True)
class RunnersArgs:
    config: StackConfig
    vpc_id: pulumi.Input[str]
    subnet_ids: list[pulumi.Output[str]]
    gitlab_security_group_id: pulumi.Input[str]
    cluster_security_group_id: pulumi.Input[str]
    gitlab_hostname: pulumi.Input[str]
    registry_host: pulumi.Input[str]
    gitlab_ca_pem: pulumi.Input[str]
    gitlab_provider: gitlab.Provider  # root's: creates the instance runner
    ssh: SshAccess
    # The cluster API load balancer's group (controlPlaneCount 3, KubeadmCluster.api_security_group_id):
    # the private API URL goes through it.
    api_security_group_id: pulumi.Input[str] | None = None


def _require_x86_64(instance_type: str, parent: pulumi.Resource) -> None:
    """Stop the program on a job-VM type that cannot boot the amd64 image (config.py refuses the
    Graviton names; DescribeInstanceTypes ProcessorInfo.SupportedArchitectures says it for the rest).
    The group would otherwise fail every launch in its activity history, `pulumi up` green."""
    found = aws.ec2.get_instance_type(instance_type=instance_type, opts=pulumi.InvokeOptions(parent=parent))
    architectures = list(found.supported_architectures or [])
    if "x86_64" not in architectures:
        raise pulumi.RunError(
            f"runnerInstanceType: got {instance_type!r} ({', '.join(architectures) or 'no architecture'}); "
            "expected an x86_64 instance type such as t3.medium or c6i.large: job VMs boot Debian's amd64 image"
        )


class Runners(pulumi.ComponentResource):
    runner_id: pulumi.Output[str]
    manager_public_ip: pulumi.Output[str]
    manager_instance_id: pulumi.Output[str]
    group_name: pulumi.Output[str]
    job_security_group_id: pulumi.Output[str]
    manager_security_group_id: pulumi.Output[str]

    def __init__(self, name: str, args: RunnersArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gitops:runners:Runners", name, None, opts)
        config = args.config
        child = pulumi.ResourceOptions(parent=self)
        _require_x86_64(config.runner_instance_type, self)

        # ---- 1. network ---------------------------------------------------------------------------
        manager_group = self._group(f"{name}-manager-group", "GitLab Runner manager: SSH for the Pulumi steps", args)
        job_group = self._group(f"{name}-job-vm-group", "CI job VMs: SSH from the runner manager only", args)
        for cidr in config.admin_cidrs:
            label = cidr.replace(".", "-").replace("/", "-")
            self._rule(
                f"{name}-manager-ssh-{label}",
                manager_group.id,
                SSH_PORT,
                f"SSH from admin CIDR {cidr}",
                args,
                cidr=cidr,
            )
        self._rule(
            f"{name}-job-vms-ssh-from-manager",
            job_group.id,
            SSH_PORT,
            "SSH from the runner manager (the docker-autoscaler executor reaches Docker through it)",
            args,
            source=manager_group.id,
        )
        self._rule(
            f"{name}-gitlab-https-from-manager",
            args.gitlab_security_group_id,
            HTTPS_PORT,
            "GitLab API (HTTPS) from the runner manager: job requests, logs, artifacts",
            args,
            source=manager_group.id,
        )
        self._rule(
            f"{name}-gitlab-https-from-job-vms",
            args.gitlab_security_group_id,
            HTTPS_PORT,
            "GitLab (HTTPS) from CI job VMs: git clone, artifacts, cache",
            args,
            source=job_group.id,
        )
        self._rule(
            f"{name}-gitlab-registry-from-job-vms",
            args.gitlab_security_group_id,
            REGISTRY_PORT,
            "GitLab container registry (HTTPS) from CI job VMs: image pulls and pushes",
            args,
            source=job_group.id,
        )
        if config.delivery == "push" and config.cluster_integration == "certificate":
            # The push pipeline's deployment job runs kubectl against the cluster's private API URL
            # (KUBE_URL). In agent mode it reaches the cluster through GitLab's k8s proxy on 443.
            self._rule(
                f"{name}-cluster-api-from-job-vms",
                args.cluster_security_group_id,
                API_SERVER_PORT,
                "Kubernetes API from CI job VMs (push delivery, certificate integration: the deployment job)",
                args,
                source=job_group.id,
            )
            if args.api_security_group_id is not None:
                self._rule(
                    f"{name}-cluster-api-lb-from-job-vms",
                    args.api_security_group_id,
                    API_SERVER_PORT,
                    "Kubernetes API load balancer from CI job VMs (push delivery, certificate integration)",
                    args,
                    source=job_group.id,
                )

        # ---- 2. job VMs ---------------------------------------------------------------------------
        # The manager logs in to job VMs with this key alone (never the admin key, which opens every
        # host): a job VM trusts nothing else, and the key opens nothing else.
        fleeting_key = tls.PrivateKey(f"{name}-fleeting-key", algorithm="ED25519", opts=child)
        image = host_image(config, self)
        job_tags = config.tags(f"{name}-job-vm")
        user_data = pulumi.Output.all(args.registry_host, args.gitlab_ca_pem, fleeting_key.public_key_openssh).apply(
            lambda values: base64.b64encode(
                render(
                    runner_config.job_vm_cloud_config(
                        registry_host=values[0], gitlab_ca_pem=values[1], manager_public_key=values[2]
                    )
                ).encode()
            ).decode()
        )
        optimized = ebs_optimized(config.runner_instance_type, self)
        template = aws.ec2.LaunchTemplate(
            f"{name}-job-vm",
            description="CI job VM of the docker-autoscaler runner (components/runners.py)",
            image_id=image.id,
            instance_type=config.runner_instance_type,
            ebs_optimized="true" if optimized else None,
            user_data=user_data,
            # IMDSv2 only, one hop: job containers cannot reach the metadata service (and the VM has
            # no instance profile whose credentials it could hand out anyway).
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1
            ),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name=image.root_device_name,
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=config.root_volume_size_gb,
                        volume_type="gp3",
                        encrypted="true",
                        delete_on_termination="true",
                    ),
                )
            ],
            # Public subnets without a NAT gateway: a job VM reaches Docker Hub and apt through its
            # own public address; nothing reaches it but the manager (its group admits port 22 only).
            network_interfaces=[
                aws.ec2.LaunchTemplateNetworkInterfaceArgs(
                    device_index=0,
                    associate_public_ip_address="true",
                    delete_on_termination="true",
                    security_groups=[job_group.id],
                )
            ],
            # Instances an Auto Scaling group launches are not Pulumi resources: the provider's
            # default tags do not reach them (pulumi-aws ec2/launch_template.py tag_specifications).
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type=kind, tags=job_tags)
                for kind in ("instance", "volume", "network-interface")
            ],
            update_default_version=True,
            tags=config.tags(f"{name}-job-vm"),
            opts=child,
        )
        group = aws.autoscaling.Group(
            f"{name}-job-vms",
            min_size=0,
            max_size=GROUP_MAX_SIZE,
            vpc_zone_identifiers=args.subnet_ids,
            launch_template=aws.autoscaling.GroupLaunchTemplateArgs(
                id=template.id, version=template.latest_version.apply(str)
            ),
            # The runner alone scales the group: no scaling policy, new instances protected from
            # scale-in, no rebalancing between zones, no capacity rebalance, no instance refresh (any
            # of them would terminate VMs running jobs: docker_autoscaler.md troubleshooting).
            protect_from_scale_in=True,
            suspended_processes=list(SUSPENDED_PROCESSES),
            capacity_rebalance=False,
            health_check_type="EC2",
            wait_for_capacity_timeout="0",
            # `pulumi destroy` terminates whatever job VMs are left instead of waiting for them.
            force_delete=True,
            tags=[
                aws.autoscaling.GroupTagArgs(key=key, value=value, propagate_at_launch=False)
                for key, value in {
                    **config.tags(f"{name}-job-vms"),
                    MAX_INSTANCES_TAG: str(config.runner_max_instances),
                }.items()
            ],
            # The plugin sets the desired capacity (SetDesiredCapacity); a later `up` must not reset it.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["desiredCapacity"]),
        )

        # ---- 3. the manager -------------------------------------------------------------------------
        role = aws.iam.Role(
            f"{name}-manager-role",
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
                    ],
                }
            ),
            tags=config.tags(f"{name}-manager-role"),
            opts=child,
        )
        policy = aws.iam.RolePolicy(
            f"{name}-manager-fleeting",
            role=role.id,
            policy=group.arn.apply(lambda arn: json.dumps(runner_config.fleeting_policy(arn))),
            opts=child,
        )
        profile = aws.iam.InstanceProfile(
            f"{name}-manager-profile", role=role.name, tags=config.tags(f"{name}-manager-profile"), opts=child
        )
        manager = hardened_instance(
            f"{name}-manager",
            HostSpec(
                instance_type=config.runner_manager_instance_type,
                subnet_id=args.subnet_ids[0],
                security_group_ids=[manager_group.id],
                user_data=render(
                    runner_config.manager_cloud_config(operator_ssh_public_key=config.operator_ssh_public_key)
                ),
                ami_id=debian_ami_id(config, self),
                key_name=args.ssh.key_name,
                instance_profile=profile.name,
                associate_public_ip=True,  # public subnet, no NAT: packages.gitlab.com, registry.gitlab.com
            ),
            config,
            # No state lives on the manager but config.toml, which the steps rewrite: still, a newer
            # Debian image or a user-data edit must not restart it (and every job with it).
            # Replaced (a new key pair, subnet, root-volume key): the old one goes first. Two managers
            # on one group would each remove the other's VMs as "pre-existing" at start
            # (docker_autoscaler.md: one autoscaling resource per runner configuration).
            pulumi.ResourceOptions(parent=self, ignore_changes=["ami", "userData"], delete_before_replace=True),
        )
        runner = gitlab.UserRunner(
            f"{name}-runner",
            runner_type="instance_type",
            description=f"{config.project}-{config.stack}: docker-autoscaler, CI job VMs on EC2 Auto Scaling",
            untagged=True,  # the tutorial's "run untagged jobs"
            opts=pulumi.ResourceOptions(parent=self, provider=args.gitlab_provider),
        )

        host = manager.public_ip
        operator_ssh_key_step(
            f"{name}-manager-operator-ssh-key",
            config,
            args.ssh,
            host=host,
            instance_id=manager.id,
            opts=pulumi.ResourceOptions(parent=self),
        )
        install = remote_step(
            f"{name}-manager-install",
            host=host,
            private_key=args.ssh.private_key_openssh,
            script="runners/install-runner.sh",
            env={"GITLAB_RUNNER_VERSION": config.gitlab_runner_version},
            triggers=[manager.id],
            opts=pulumi.ResourceOptions(parent=self),
        )
        fleet = pulumi.Output.all(args.gitlab_hostname, group.name).apply(
            lambda values: runner_config.Fleet(
                name=f"{config.project}-{config.stack}",
                gitlab_url=f"https://{values[0]}",
                group_name=values[1],
                job_image=RUNNER_JOB_IMAGE,
                max_instances=config.runner_max_instances,
                capacity_per_instance=config.runner_capacity_per_instance,
                idle_count=config.runner_idle_count,
                idle_time=config.runner_idle_time,
            )
        )
        region = aws.get_region_output(opts=pulumi.InvokeOptions(parent=self)).region
        remote_step(
            f"{name}-manager-configure",
            host=host,
            private_key=args.ssh.private_key_openssh,
            script="runners/configure-runner.sh",
            env={
                "RUNNER_CONFIG_TOML": fleet.apply(lambda f: runner_config.to_toml(runner_config.manager_config(f))),
                "FLEETING_PLUGIN": runner_config.FLEETING_PLUGIN,
                "GITLAB_HOSTNAME": args.gitlab_hostname,
                "GITLAB_CA_PEM": args.gitlab_ca_pem,
                "AWS_SHARED_CONFIG": region.apply(runner_config.aws_shared_config),
                "RUNNER_CONFIG_FILE": runner_config.CONFIG_FILE,
                "RUNNER_CA_FILE": runner_config.CA_FILE,
                "FLEETING_KEY_FILE": runner_config.FLEETING_KEY_FILE,
                "AWS_CONFIG_FILE": runner_config.AWS_CONFIG_FILE,
                "FLEETING_PLUGIN_PATH": runner_config.FLEETING_PLUGIN_PATH,
                "RUNNER_DRAIN_SECONDS": str(DRAIN_SECONDS),
            },
            stdin=pulumi.Output.secret(
                pulumi.Output.all(runner.token, fleeting_key.private_key_openssh).apply(
                    lambda values: secret_bundle({"runner_token": values[0], "fleeting_key": values[1]})
                )
            ),
            # A new manager starts from an empty disk. A new token (the runner was replaced) or a new
            # configuration re-runs the step in place: it rewrites the files and restarts the runner.
            triggers=[manager.id],
            # The runner calls AWS with the role's policy from its first job on: created first.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[install, policy]),
        )

        self.runner_id = runner.id
        self.manager_public_ip = host
        self.manager_instance_id = manager.id
        self.group_name = group.name
        self.job_security_group_id = job_group.id
        self.manager_security_group_id = manager_group.id
        self.register_outputs(
            {
                "runner_id": self.runner_id,
                "manager_public_ip": self.manager_public_ip,
                "group_name": self.group_name,
            }
        )

    def _group(self, group_name: str, description: str, args: RunnersArgs) -> aws.ec2.SecurityGroup:
        """A group with open egress: the manager fetches packages and the plugin, job VMs pull images."""
        group = aws.ec2.SecurityGroup(
            group_name,
            vpc_id=args.vpc_id,
            description=description,
            tags=args.config.tags(group_name),
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.vpc.SecurityGroupEgressRule(
            f"{group_name}-egress-all",
            security_group_id=group.id,
            ip_protocol="-1",
            cidr_ipv4="0.0.0.0/0",
            description="Outbound to the internet: packages, container images, GitLab",
            tags=args.config.tags(f"{group_name}-egress-all"),
            opts=pulumi.ResourceOptions(parent=group),
        )
        return group

    def _rule(
        self,
        rule_name: str,
        on_group: pulumi.Input[str],
        port: int,
        description: str,
        args: RunnersArgs,
        *,
        cidr: str | None = None,
        source: pulumi.Input[str] | None = None,
    ) -> None:
        aws.vpc.SecurityGroupIngressRule(
            rule_name,
            security_group_id=on_group,
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            cidr_ipv4=cidr,
            referenced_security_group_id=source,
            description=description,
            tags=args.config.tags(rule_name),
            opts=pulumi.ResourceOptions(parent=self),
        )
