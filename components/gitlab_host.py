"""GitLabHost: GitLab CE in Docker on one EC2 host, with its own TLS, SSH identity and admin token.

In the order things happen:

1. Identity, known before the instance exists: the Elastic IP (GitLab's hostname is its public DNS
   name unless config gives one), a Pulumi-made CA and server certificate, the SSH host keys (so the
   known_hosts line is an output from the start), the root password and the admin API token.
2. The host: a hardened Debian instance whose user data only installs Docker, a separate encrypted
   gp3 data volume for /srv/gitlab (protected, attached at /dev/sdf, survives the instance), the
   Elastic IP association, and the ingress rules of the GitLab security group.
3. Steps over SSH, secrets on stdin (userdata/gitlab/): install (volume; a version change walked
   through GitLab's required upgrade stops, each hop checked before anything changes; TLS, host
   keys, config, start or reload, readiness, background migrations after an upgrade), seed
   root's token and the settings the cluster integration needs (waiting out GitLab's caches when
   they changed), and remove the runner earlier versions ran here: no CI job runs on this host
   (components/runners.py runs them on their own VMs).
4. Root's GitLab provider, trusting the CA and authenticated with the seeded token, and what it
   manages here: application settings, the daily admin user (+ SSH key), and the daily admin's own
   API token.
5. The owner's provider, authenticated with that token (``owner_provider``): what it creates (the
   app project and everything in it) is created by the project's Owner, so commits to the protected
   default branch and the pipelines they start are allowed (ProtectedRefAccess has no admin bypass:
   an instance admin who is not a member is refused).

Teardown: the data volume is protected (gitlabDataVolumeProtect): `pulumi destroy` refuses to delete
it until `gitlabDataVolumeProtect` is set to false and applied, or `pulumi state unprotect` is run.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_gitlab as gitlab
import pulumi_random as random
import pulumi_tls as tls

from components.backup_layout import dlm_target_tag
from components.backups import GitLabBackupTarget
from components.cloudinit import render
from components.config import StackConfig
from components.gitlab_config import (
    HTTPS_PORT,
    OWNER_TOKEN_LIFETIME_DAYS,
    OWNER_TOKEN_NAME,
    OWNER_TOKEN_ROTATE_BEFORE_DAYS,
    OWNER_TOKEN_SCOPES,
    REGISTRY_PORT,
    SSH_PORT,
    gitlab_cloud_config,
    gitlab_version,
    known_hosts,
    omnibus_config,
    secret_bundle,
    seed_token_program,
    token_expiry,
    upgrade_stop_tags,
    upgrade_stops,
)
from components.gitlab_config import registry_host as registry_host_of
from components.hosts import HostSpec, SshAccess, debian_ami_id, hardened_instance, instance_profile
from components.remote import remote_step

# The GitLab provider reads its CA from a file (`cacert_file`): the program writes the public CA
# certificate under the project's git-ignored build/ directory, one file per stack. The provider is
# given the path relative to the project directory, where Pulumi starts provider plugins (the
# engine's plugin context takes the project root as its pwd, pkg/engine/project.go getPwdMain, and
# every plugin is exec'd there, sdk/go/common/resource/plugin/plugin.go `cmd.Dir = pwd`), so the
# path recorded in state holds for any checkout and for `pulumi refresh`/`destroy`.
# Runs with no provider plugin at all (tools/harness.py: tests, render, cost) set
# PROVIDER_FILES_DIR_ENV to a scratch directory: a mock CA never replaces the real one.
PROJECT_DIR = Path(__file__).resolve().parent.parent
PROVIDER_FILES_DIR_ENV = "GITOPS_PROVIDER_FILES_DIR"
BUILD_DIR = "build"
DATA_DEVICE = "/dev/sdf"  # appears as an NVMe device on Nitro: install.sh finds it by volume id
CA_VALIDITY_HOURS = 10 * 365 * 24
# 825 days: the longest server-certificate lifetime Apple platforms accept even from a private CA.
SERVER_CERT_VALIDITY_HOURS = 825 * 24
SERVER_CERT_RENEWAL_HOURS = 30 * 24  # a `pulumi up` in the last 30 days re-issues it (install re-runs)
# GitLab's default for new users (Admin > Settings > Account and limit): the API's default of 0
# would leave the daily admin unable to create projects in their own namespace.
ADMIN_PROJECTS_LIMIT = 100000


@dataclass(frozen=True)
class GitLabHostArgs:
    config: StackConfig
    subnet_id: pulumi.Input[str]
    availability_zone: str  # the subnet's zone: an EBS volume attaches only within its zone
    gitlab_security_group_id: pulumi.Input[str]
    cluster_security_group_id: pulumi.Input[str]
    ssh: SshAccess
    ami_id: pulumi.Input[str] | None = None  # None: the newest official Debian 12 image (or config amiId)
    # Steps the install step waits for (backups: the hook it runs before an upgrade, the role's policy).
    before_install: Callable[[GitLabBackupTarget], Sequence[pulumi.Resource]] | None = None


def ca_file_path(stack: str) -> str:
    """The CA file's path relative to the project directory: build/gitlab-ca-<stack>.pem."""
    return f"{BUILD_DIR}/gitlab-ca-{stack}.pem"


def provider_files_dir() -> Path:
    """Where files for provider plugins are written: the project directory, unless a run without
    plugins (tools/harness.py) points PROVIDER_FILES_DIR_ENV elsewhere."""
    return Path(os.environ.get(PROVIDER_FILES_DIR_ENV) or PROJECT_DIR)


def write_ca_file(relative_path: str, pem: str) -> str:
    """Write the (public) CA certificate for the GitLab provider; return its project-relative path.

    Done while the program runs, in preview too, rather than by a local command: the provider
    reads the file whenever it is configured (preview, refresh, up) and on any machine running
    the program, so the file must follow the program, not a one-time command on one machine.
    """
    path = provider_files_dir() / relative_path
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != pem:
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
            handle.write(pem)
        os.replace(handle.name, path)
        path.chmod(0o644)
    return relative_path


def _cidr_label(cidr: str) -> str:
    network = ipaddress.ip_network(cidr)
    return f"{network.network_address}-{network.prefixlen}".replace(".", "-")


class GitLabHost(pulumi.ComponentResource):
    hostname: pulumi.Output[str]
    url: pulumi.Output[str]
    registry_host: pulumi.Output[str]
    ca_pem: pulumi.Output[str]
    ssh_known_hosts: pulumi.Output[str]
    ssh_url_base: pulumi.Output[str]
    root_password: pulumi.Output[str]
    admin_token: pulumi.Output[str]
    admin_token_expires_at: pulumi.Output[str]
    admin_user_id: pulumi.Output[str]
    admin_username: pulumi.Output[str]
    admin_namespace_id: pulumi.Output[int]
    admin_password: pulumi.Output[str]
    # The daily admin's own API token (the owner provider's): a secret, and an instance-admin
    # credential as long as the daily admin is one and Admin Mode is off.
    admin_user_token: pulumi.Output[str]
    provider: gitlab.Provider  # root's: instance settings, users, the instance runner (components/runners.py)
    owner_provider: gitlab.Provider  # the daily admin's: the app project and everything in it
    public_ip: pulumi.Output[str]
    private_ip: pulumi.Output[str]
    instance_id: pulumi.Output[str]
    data_volume_id: pulumi.Output[str]
    # What must exist before GitLab may call the cluster (certificate mode): the seeding step (local
    # requests and the certificate_based_clusters flag, effective on every worker when it returns)
    # and the settings.
    settings_effective: list[pulumi.Resource]

    def __init__(self, name: str, args: GitLabHostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gitops:gitlab:GitLabHost", name, None, opts)
        config = args.config
        child = pulumi.ResourceOptions(parent=self)

        # ---- 1. identity ------------------------------------------------------------------------
        eip = aws.ec2.Eip(f"{name}-eip", domain="vpc", tags=config.tags(f"{name}-eip"), opts=child)
        # Inside the VPC (DNS hostnames on) the public DNS name resolves to the private IP, so the
        # nodes and the runner reach GitLab by the same name as the operator. A custom name should
        # be a CNAME to it for the same reason.
        hostname: pulumi.Output[str] = (
            pulumi.Output.from_input(config.gitlab_hostname) if config.gitlab_hostname else eip.public_dns
        )
        self.hostname = hostname
        self.url = pulumi.Output.concat("https://", hostname)
        self.registry_host = hostname.apply(registry_host_of)
        self.ssh_url_base = pulumi.Output.concat("ssh://git@", hostname, f":{SSH_PORT}")

        ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        ca = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=ca_key.private_key_pem,
            is_ca_certificate=True,
            set_subject_key_id=True,
            subject=tls.SelfSignedCertSubjectArgs(
                common_name=f"{config.project}-{config.stack} GitLab CA", organization=config.project
            ),
            validity_period_hours=CA_VALIDITY_HOURS,
            allowed_uses=["cert_signing", "crl_signing", "digital_signature"],
            opts=child,
        )
        self.ca_pem = ca.cert_pem
        # SANs: the hostname (plus the Elastic IP's DNS name when a custom name is configured) and
        # the Elastic IP. Not the private IP: no client uses it (inside the VPC the DNS name resolves
        # to it), and it would tie the certificate to one instance.
        dns_names = (
            pulumi.Output.all(hostname, eip.public_dns).apply(lambda names: sorted(set(names)))
            if config.gitlab_hostname
            else eip.public_dns.apply(lambda name_: [name_])
        )
        server_key = tls.PrivateKey(f"{name}-tls-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        request = tls.CertRequest(
            f"{name}-tls-request",
            private_key_pem=server_key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(common_name=hostname, organization=config.project),
            dns_names=dns_names,
            ip_addresses=[eip.public_ip],
            opts=child,
        )
        server_cert = tls.LocallySignedCert(
            f"{name}-tls",
            cert_request_pem=request.cert_request_pem,
            ca_private_key_pem=ca_key.private_key_pem,
            ca_cert_pem=ca.cert_pem,
            validity_period_hours=SERVER_CERT_VALIDITY_HOURS,
            early_renewal_hours=SERVER_CERT_RENEWAL_HOURS,
            allowed_uses=["digital_signature", "server_auth"],
            opts=child,
        )
        # Full chain: server certificate, then the CA (omnibus-gitlab doc/settings/ssl/_index.md).
        certificate_chain = pulumi.Output.concat(server_cert.cert_pem, ca.cert_pem)

        # GitLab's SSH host identity; the image only generates host keys that are missing.
        host_keys = [
            tls.PrivateKey(f"{name}-ssh-host-ed25519", algorithm="ED25519", opts=child),
            tls.PrivateKey(f"{name}-ssh-host-ecdsa", algorithm="ECDSA", ecdsa_curve="P256", opts=child),
            tls.PrivateKey(f"{name}-ssh-host-rsa", algorithm="RSA", rsa_bits=3072, opts=child),
        ]
        self.ssh_known_hosts = pulumi.Output.all(hostname, *[key.public_key_openssh for key in host_keys]).apply(
            lambda values: known_hosts(values[0], values[1:])
        )

        root_password = random.RandomPassword(
            f"{name}-root-password", length=32, special=False, min_lower=2, min_upper=2, min_numeric=2, opts=child
        )
        self.root_password = pulumi.Output.secret(root_password.result)
        # The registry metadata database's backup and restore roles (gitlab_config.omnibus_config):
        # with them `gitlab-backup` includes that database; whether backups are on or off, so a
        # restore onto this host can always load one.
        registry_passwords = [
            random.RandomPassword(f"{name}-registry-{role}-password", length=32, special=False, opts=child)
            for role in ("backup", "restore")
        ]
        # 20 letters and digits, as the token seeding documentation requires. Changing the keeper
        # (adminTokenRotation) makes a new value, which re-runs the seeding step.
        admin_token = random.RandomPassword(
            f"{name}-admin-token",
            length=20,
            special=False,
            keepers={"rotation": config.admin_token_rotation},
            opts=child,
        )
        self.admin_token = pulumi.Output.secret(admin_token.result)

        # ---- 2. the host ------------------------------------------------------------------------
        self._ingress_rules(name, args)
        profile = instance_profile(name, config, self)
        instance = hardened_instance(
            f"{name}-host",
            HostSpec(
                instance_type=config.gitlab_instance_type,
                subnet_id=args.subnet_id,
                security_group_ids=[args.gitlab_security_group_id],
                user_data=render(gitlab_cloud_config(operator_ssh_public_key=config.operator_ssh_public_key)),
                ami_id=args.ami_id if args.ami_id is not None else debian_ami_id(config, self),
                key_name=args.ssh.key_name,
                instance_profile=profile.name,
            ),
            config,
            # A stateful host is replaced on purpose only (`pulumi up --replace`), not because Debian
            # published a newer AMI. User data runs at first boot only: a changed document would
            # merely stop and start the host; the steps apply everything that can change.
            pulumi.ResourceOptions(parent=self, ignore_changes=["ami", "userData"]),
        )
        volume = aws.ebs.Volume(
            f"{name}-data",
            availability_zone=args.availability_zone,
            size=config.gitlab_data_volume_size_gb,
            type="gp3",
            encrypted=True,
            # The backup tag selects it for the stack's daily snapshots (components/backups.py).
            tags={**config.tags(f"{name}-data"), **dlm_target_tag(config.project, config.stack)},
            # Repositories, registry and database: a destroy or a replacement must be deliberate.
            opts=pulumi.ResourceOptions(parent=self, protect=config.gitlab_data_volume_protect),
        )
        attachment = aws.ec2.VolumeAttachment(
            f"{name}-data-attachment",
            device_name=DATA_DEVICE,
            volume_id=volume.id,
            instance_id=instance.id,
            # Detach from a stopped instance (GitLab shut down cleanly, the filesystem unmounted);
            # a volume attaches to one instance at a time, so a replacement detaches first.
            stop_instance_before_detaching=True,
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        association = aws.ec2.EipAssociation(
            f"{name}-eip-association",
            allocation_id=eip.allocation_id,
            instance_id=instance.id,
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )

        # ---- 3. steps over SSH --------------------------------------------------------------------
        ssh_host = eip.public_ip
        prepared = (
            list(
                args.before_install(
                    GitLabBackupTarget(
                        role_name=profile.role.apply(lambda role: role or ""),
                        ssh_host=ssh_host,
                        instance_id=instance.id,
                        ssh=args.ssh,
                        after=[association],
                        parent=self,
                    )
                )
            )
            if args.before_install
            else []
        )
        install = remote_step(
            f"{name}-install",
            host=ssh_host,
            private_key=args.ssh.private_key_openssh,
            script="gitlab/install.sh",
            env={
                "GITLAB_HOSTNAME": hostname,
                "GITLAB_IMAGE": f"gitlab/gitlab-ce:{config.gitlab_image_tag}",
                # The install step compares it with what the data volume last ran: it walks the
                # required upgrade stops in between, or refuses (a downgrade, an unpinned stop)
                # before it stops anything.
                "GITLAB_VERSION": gitlab_version(config.gitlab_image_tag),
                "GITLAB_UPGRADE_STOPS": upgrade_stops(),
                # The pinned release of each stop it may walk through in one run (versions.py).
                "GITLAB_UPGRADE_STOP_TAGS": upgrade_stop_tags(),
                "DATA_VOLUME_ID": volume.id,
                "GITLAB_CA_PEM": ca.cert_pem,
                "GITLAB_TLS_CERT": certificate_chain,
                "GITLAB_OMNIBUS_CONFIG": hostname.apply(omnibus_config),
            },
            stdin=pulumi.Output.secret(
                pulumi.Output.all(
                    server_key.private_key_pem,
                    *[key.private_key_openssh for key in host_keys],
                    root_password.result,
                    *[password.result for password in registry_passwords],
                ).apply(
                    lambda values: secret_bundle(
                        {
                            "tls_key": values[0],
                            "ssh_host_ed25519_key": values[1],
                            "ssh_host_ecdsa_key": values[2],
                            "ssh_host_rsa_key": values[3],
                            "root_password": values[4],
                            "registry_backup_password": values[5],
                            "registry_restore_password": values[6],
                        }
                    )
                )
            ),
            # A new instance (or a new data volume) starts from scratch: run again.
            triggers=[instance.id, volume.id],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[association, attachment, *prepared]),
        )
        seed = remote_step(
            f"{name}-seed-admin-token",
            host=ssh_host,
            private_key=args.ssh.private_key_openssh,
            script="gitlab/seed-admin-token.sh",
            env={"GITLAB_HOSTNAME": hostname},
            stdin=pulumi.Output.secret(
                admin_token.result.apply(
                    lambda token: seed_token_program(
                        token, certificate_clusters=config.cluster_integration == "certificate"
                    )
                )
            ),
            triggers=[instance.id, volume.id],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[install]),
        )
        self.admin_token_expires_at = seed.stdout.apply(token_expiry)

        # ---- 4. GitLab through root's token -------------------------------------------------------
        api_url = pulumi.Output.concat("https://", hostname, "/api/v4/")  # "must end with a slash"
        cacert_file = ca.cert_pem.apply(lambda pem: write_ca_file(ca_file_path(config.stack), pem))
        self.provider = gitlab.Provider(
            f"{name}-gitlab",
            base_url=api_url,
            token=self.admin_token,
            cacert_file=cacert_file,
            # No GET /user when the provider is configured: once the hostname and the token are known
            # (any preview after a first, failed `pulumi up`) a preview would otherwise fail against a
            # GitLab that is not seeded yet, blocking the `pulumi up` that would seed it. The
            # provider documents this switch for a GitLab created in the same program.
            early_auth_check=False,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[seed]),
        )
        on_gitlab = pulumi.ResourceOptions(parent=self, provider=self.provider)
        settings = gitlab.ApplicationSettings(
            f"{name}-settings",
            signup_enabled=False,
            # The tutorial's "Allow requests to the local network from web hooks and services": the
            # cluster's API URL is a private address, which GitLab's URL blocker rejects otherwise.
            # The seeding step turns it on first, on the database row, and waits out the workers'
            # caches; declared here with the same value, so a later `pulumi up` puts it back if
            # someone turns it off, and never flips what the step set. It runs after the step
            # (through its provider), so the two never race. Only the certificate-based cluster needs
            # it: with GitLab's agent it is left as it is (GitLab's default, off, on a new stack).
            allow_local_requests_from_web_hooks_and_services=True
            if config.cluster_integration == "certificate"
            else None,
            opts=pulumi.ResourceOptions.merge(on_gitlab, pulumi.ResourceOptions(depends_on=[seed])),
        )
        admin_password = random.RandomPassword(
            f"{name}-admin-password", length=32, special=False, min_lower=2, min_upper=2, min_numeric=2, opts=child
        )
        self.admin_password = pulumi.Output.secret(admin_password.result)
        admin = gitlab.User(
            f"{name}-admin",
            name="GitOps operator",
            username=config.gitlab_admin_username,
            email=config.gitlab_admin_email,
            password=self.admin_password,
            is_admin=True,
            skip_confirmation=True,
            can_create_group=True,
            projects_limit=ADMIN_PROJECTS_LIMIT,
            opts=on_gitlab,
        )
        if config.operator_ssh_public_key:
            gitlab.UserSshKey(
                f"{name}-admin-ssh-key",
                user_id=admin.id.apply(int),
                title="operator (operatorSshPublicKey)",
                key=config.operator_ssh_public_key,
                opts=on_gitlab,
            )
        # ---- 5. GitLab through the daily admin's token ---------------------------------------------
        # Minted by root (POST /users/:user_id/personal_access_tokens, admin only). The provider
        # renews it on the first `pulumi up` in its last OWNER_TOKEN_ROTATE_BEFORE_DAYS days
        # (POST /personal_access_tokens/:id/rotate: the old token stops working, the provider below
        # is reconfigured with the new one in the same update).
        owner_token = gitlab.PersonalAccessToken(
            f"{name}-owner-token",
            user_id=admin.id.apply(int),
            name=OWNER_TOKEN_NAME,
            description="Pulumi: creates and seeds the app project as its Owner (components/gitlab_host.py)",
            scopes=list(OWNER_TOKEN_SCOPES),
            rotation_configuration=gitlab.PersonalAccessTokenRotationConfigurationArgs(
                expiration_days=OWNER_TOKEN_LIFETIME_DAYS,
                rotate_before_days=OWNER_TOKEN_ROTATE_BEFORE_DAYS,
            ),
            opts=on_gitlab,
        )
        self.admin_user_token = pulumi.Output.secret(owner_token.token)
        self.owner_provider = gitlab.Provider(
            f"{name}-gitlab-owner",
            base_url=api_url,
            token=self.admin_user_token,
            cacert_file=cacert_file,
            early_auth_check=False,  # as above: no GET /user while GitLab may not exist yet
            opts=pulumi.ResourceOptions(parent=self, depends_on=[owner_token, admin]),
        )

        # Stacks created before CI moved to its own VMs ran a privileged runner here: the step stops and
        # removes it (and finds nothing on a new host). Its gitlab.UserRunner is gone from the program,
        # so the same `pulumi up` deletes it in GitLab, which revokes its token.
        remote_step(
            f"{name}-remove-runner",
            host=ssh_host,
            private_key=args.ssh.private_key_openssh,
            script="gitlab/remove-runner.sh",
            triggers=[instance.id],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[install]),
        )

        self.admin_user_id = admin.id
        self.admin_username = admin.username
        self.admin_namespace_id = admin.namespace_id
        self.public_ip = eip.public_ip
        self.private_ip = instance.private_ip
        self.instance_id = instance.id
        self.data_volume_id = volume.id
        self.settings_effective = [seed, settings]
        self.register_outputs(
            {
                "hostname": self.hostname,
                "url": self.url,
                "registry_host": self.registry_host,
                "ca_pem": self.ca_pem,
                "ssh_known_hosts": self.ssh_known_hosts,
                "root_password": self.root_password,
                "admin_token": self.admin_token,
                "admin_token_expires_at": self.admin_token_expires_at,
                "admin_username": self.admin_username,
                "admin_user_token": self.admin_user_token,
                "public_ip": self.public_ip,
                "private_ip": self.private_ip,
            }
        )

    def _ingress_rules(self, name: str, args: GitLabHostArgs) -> None:
        """One rule per (port, source), each described: admins reach everything, the cluster's nodes
        reach what they use (image pulls and Flux's registry scans on 5050, Flux's git over SSH on
        2222, the API on 443). No port 80: GitLab is HTTPS only."""
        config = args.config
        services = (
            (22, "ssh", "SSH to the GitLab host (Pulumi steps, operators)", False),
            (HTTPS_PORT, "https", "GitLab web UI and API (HTTPS)", True),
            (REGISTRY_PORT, "registry", "GitLab container registry (HTTPS)", True),
            (SSH_PORT, "git-ssh", "Git over SSH to GitLab (container port 22)", True),
        )
        for port, service, what, from_cluster in services:
            for cidr in config.admin_cidrs:
                self._ingress_rule(
                    f"{name}-{service}-{_cidr_label(cidr)}",
                    args,
                    port=port,
                    description=f"{what} from admin CIDR {cidr}",
                    cidr_ipv4=cidr,
                )
            if from_cluster:
                self._ingress_rule(
                    f"{name}-{service}-cluster",
                    args,
                    port=port,
                    description=f"{what} from the Kubernetes nodes (cluster security group)",
                    source_group_id=args.cluster_security_group_id,
                )

    def _ingress_rule(
        self,
        rule_name: str,
        args: GitLabHostArgs,
        *,
        port: int,
        description: str,
        cidr_ipv4: str | None = None,
        source_group_id: pulumi.Input[str] | None = None,
    ) -> None:
        aws.vpc.SecurityGroupIngressRule(
            rule_name,
            security_group_id=args.gitlab_security_group_id,
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            cidr_ipv4=cidr_ipv4,
            referenced_security_group_id=source_group_id,
            description=description,
            tags=args.config.tags(rule_name),
            opts=pulumi.ResourceOptions(parent=self),
        )
