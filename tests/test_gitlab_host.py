"""The GitLab host: its data survives, its secrets stay on stdin, its identity is known up front."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from components import gitlab_config, versions
from components.cloudinit import USERDATA
from components.gitlab_config import (
    FEATURE_FLAG,
    OMNIBUS_CONFIG_PATH,
    REGISTRY_BACKUP_PASSWORD_FILE,
    REGISTRY_RESTORE_PASSWORD_FILE,
    ROOT_PASSWORD_SEED,
    TOKEN_NAME,
    TRUSTED_CA,
    known_hosts_line,
    omnibus_config,
    secret_bundle,
    seed_token_program,
    token_expiry,
)
from components.remote import step_script
from tests.conftest import system_tool
from tools.harness import ProgramRun, Registration, is_secret_value, plain, provider_files_dir

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / "venv" / "bin"
HOST_COMPONENT = "gitops:gitlab:GitLabHost"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
STEP = "command:remote:Command"
GITLAB_SCRIPTS = sorted((USERDATA / "gitlab").glob("*.sh"))
# What AWS accepts in a security group rule description (EC2 API, IpRange/UserIdGroupPair Description).
AWS_DESCRIPTION = re.compile(r"^[a-zA-Z0-9. _\-:/()#,@\[\]+=&;{}!$*]{1,255}$")


# ---- helpers ----------------------------------------------------------------------------------
def step(run: ProgramRun, name: str) -> Registration:
    return run.one(STEP, f"gitlab-{name}")


def step_script_of(registration: Registration) -> str:
    """The script a step runs: the `bash -c` argument of its command line."""
    words = shlex.split(registration.plain_inputs["create"])
    return words[words.index("bash") + 2]


def step_env(registration: Registration) -> dict[str, str]:
    """The KEY=value assignments of a step's `sudo env ... bash -c <script> <name>` command line."""
    words = shlex.split(registration.plain_inputs["create"])
    assert words[:2] == ["sudo", "env"]
    env = {}
    for word in words[2:]:
        if word == "bash":
            break
        key, _, value = word.partition("=")
        env[key] = value
    return env


def hostname(run: ProgramRun) -> str:
    return run.outputs["gitlabUrl"].removeprefix("https://")


def decoded_stdin(registration: Registration) -> dict[str, str]:
    """A secret bundle read back the way userdata/gitlab/install.sh reads it."""
    entries = {}
    for line in plain(registration.inputs["stdin"]).splitlines():
        name, value = line.split(" ")
        entries[name] = base64.b64decode(value).decode()
    return entries


def secret_values(run: ProgramRun) -> dict[str, str]:
    """Every credential the GitLab host handles, by what it is."""
    secrets = {}
    for registration in run:
        state = plain(registration.state)
        if registration.type == "random:index/randomPassword:RandomPassword" and registration.name.startswith(
            "gitlab-"
        ):
            secrets[registration.name] = state["result"]
        elif registration.type == "tls:index/privateKey:PrivateKey":
            for field in ("privateKeyPem", "privateKeyPemPkcs8", "privateKeyOpenssh"):
                secrets[f"{registration.name}.{field}"] = state[field]
        elif registration.type == "gitlab:index/userRunner:UserRunner":
            secrets["runner token"] = state["token"]
    return secrets


def leaks(text: str, secret: str) -> bool:
    """The secret, its base64 form, or any long line of it (a PEM body line) in text."""
    if secret in text or base64.b64encode(secret.encode()).decode() in text:
        return True
    return any(len(line) >= 20 and "-----" not in line and line in text for line in secret.splitlines())


# ---- the data volume --------------------------------------------------------------------------
def test_data_volume_is_separate_encrypted_protected_and_in_the_instance_zone(dev) -> None:
    volume = dev.one("aws:ebs/volume:Volume", "gitlab-data")
    instance = dev.one("aws:ec2/instance:Instance", "gitlab-host")
    assert volume.plain_inputs["type"] == "gp3"
    assert volume.plain_inputs["encrypted"] is True
    assert volume.plain_inputs["size"] == 50
    assert volume.protect is True
    # Not a block device of the instance: terminating or replacing the instance leaves it alone.
    assert "ebsBlockDevices" not in instance.plain_inputs
    assert instance.plain_inputs["rootBlockDevice"]["deleteOnTermination"] is True
    subnet = next(s for s in dev.all("aws:ec2/subnet:Subnet") if s.id == instance.plain_inputs["subnetId"])
    assert volume.plain_inputs["availabilityZone"] == subnet.plain_inputs["availabilityZone"]

    attachment = dev.one("aws:ec2/volumeAttachment:VolumeAttachment", "gitlab-data-attachment")
    assert attachment.plain_inputs["volumeId"] == volume.id
    assert attachment.plain_inputs["instanceId"] == instance.id
    assert attachment.plain_inputs["deviceName"] == "/dev/sdf"
    # One instance at a time: the old attachment goes first, from a stopped (cleanly unmounted) host.
    assert attachment.plain_inputs["stopInstanceBeforeDetaching"] is True
    assert attachment.delete_before_replace is True


def test_data_volume_size_and_protection_follow_config(prod, run_stack) -> None:
    assert prod.one("aws:ebs/volume:Volume", "gitlab-data").plain_inputs["size"] == 200
    unprotected = run_stack("dev", gitlabDataVolumeProtect=False)
    assert unprotected.one("aws:ebs/volume:Volume", "gitlab-data").protect is False


def test_install_step_finds_the_volume_by_id_and_formats_only_a_blank_one(dev) -> None:
    install = step(dev, "install")
    volume = dev.one("aws:ebs/volume:Volume", "gitlab-data")
    assert step_env(install)["DATA_VOLUME_ID"] == volume.id
    script = (USERDATA / "gitlab/install.sh").read_text()
    # AWS names the NVMe device after the volume id without its dash.
    assert "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${DATA_VOLUME_ID/-/}" in script
    assert re.search(r"blkid -p .*\|\| status=\$\?", script)
    assert re.search(r"2\)\n\s+log .*blank.*\n\s+mkfs\.ext4", script)
    assert "UUID=${uuid} ${MOUNT_POINT} ext4 defaults,nofail" in script
    assert "RequiresMountsFor=/srv/gitlab" in script


def test_a_new_instance_or_volume_reruns_the_steps(dev) -> None:
    instance = dev.one("aws:ec2/instance:Instance", "gitlab-host")
    volume = dev.one("aws:ebs/volume:Volume", "gitlab-data")
    for name in ("install", "seed-admin-token"):
        triggers = step(dev, name).plain_inputs["triggers"]
        assert instance.id in triggers and volume.id in triggers
    assert instance.id in step(dev, "remove-runner").plain_inputs["triggers"]
    # A new Debian AMI or a changed boot document does not replace the stateful host by itself.
    assert set(instance.ignore_changes) >= {"ami", "userData"}


# ---- secrets ------------------------------------------------------------------------------------
def test_no_secret_in_user_data_or_command_text(dev) -> None:
    secrets = secret_values(dev)
    assert len(secrets) >= 20  # root password, tokens, TLS and host keys, runner token...
    checked = 0
    for registration in dev:
        inputs = registration.plain_inputs
        for field in ("userData", "create", "update", "delete"):
            text = inputs.get(field)
            if not isinstance(text, str):
                continue
            checked += 1
            for what, secret in secrets.items():
                assert not leaks(text, secret), f"{what} appears in {registration.name}.{field}"
    assert checked >= 4


def test_secrets_reach_the_host_on_stdin_only(dev) -> None:
    secrets = secret_values(dev)
    install = step(dev, "install")
    assert is_secret_value(install.inputs["stdin"])
    bundle = decoded_stdin(install)
    assert bundle["root_password"] == secrets["gitlab-root-password"]
    assert bundle["tls_key"] == secrets["gitlab-tls-key.privateKeyPem"]
    for kind in ("ed25519", "ecdsa", "rsa"):
        assert bundle[f"ssh_host_{kind}_key"] == secrets[f"gitlab-ssh-host-{kind}.privateKeyOpenssh"]
    for role in ("backup", "restore"):
        assert bundle[f"registry_{role}_password"] == secrets[f"gitlab-registry-{role}-password"]

    seed = step(dev, "seed-admin-token")
    assert is_secret_value(seed.inputs["stdin"])
    assert f"token_value = '{secrets['gitlab-admin-token']}'" in plain(seed.inputs["stdin"])

    # No runner token reaches the GitLab host: the removal step takes no stdin at all.
    assert "stdin" not in step(dev, "remove-runner").inputs


def test_sensitive_exports_are_secret(dev) -> None:
    for key in ("gitlabRootPassword", "gitlabAdminToken", "gitlabAdminPassword", "gitlabAdminUserToken"):
        assert key in dev.secret_outputs, key
        assert dev.outputs[key]
    for key in ("gitlabUrl", "gitlabRegistryHost", "gitlabCaPem", "gitlabSshKnownHosts", "gitlabRunnerId"):
        assert key not in dev.secret_outputs, key
    assert dev.outputs["gitlabAdminToken"] == secret_values(dev)["gitlab-admin-token"]


def test_the_daily_admins_token_is_exported_for_commits_as_the_projects_owner(dev) -> None:
    """The e2e lane's GitOps loop commits with it: root, not a member, is refused on the protected branch."""
    token = dev.one("gitlab:index/personalAccessToken:PersonalAccessToken", "gitlab-owner-token")
    assert dev.outputs["gitlabAdminUserToken"] == plain(token.state)["token"]
    assert dev.outputs["gitlabAdminUserToken"] != dev.outputs["gitlabAdminToken"]
    owner = dev.one("pulumi:providers:gitlab", "gitlab-gitlab-owner")
    assert plain(owner.inputs["token"]) == dev.outputs["gitlabAdminUserToken"]


def test_root_password_is_strong_and_only_a_seed(dev) -> None:
    password = dev.one("random:index/randomPassword:RandomPassword", "gitlab-root-password").plain_inputs
    assert password["length"] >= 24
    config = omnibus_config("gitlab.example.com")
    # Read from the root-only seed file, not written into the configuration.
    assert f"root_password_seed = '{ROOT_PASSWORD_SEED}'" in config
    assert "gitlab_rails['initial_root_password'] = File.read(root_password_seed)" in config
    script = (USERDATA / "gitlab/install.sh").read_text()
    host_seed = "$CONFIG_DIR/" + ROOT_PASSWORD_SEED.removeprefix("/etc/gitlab/")
    assert f'put "{host_seed}" 0600' in script
    assert f'rm -f "{host_seed}"' in script


# ---- GitLab's configuration ----------------------------------------------------------------------
def test_omnibus_config_https_registry_ssh_port_no_letsencrypt() -> None:
    config = omnibus_config("gitlab.example.com")
    assert "external_url 'https://gitlab.example.com'\n" in config
    assert "registry_external_url 'https://gitlab.example.com:5050'\n" in config
    assert "gitlab_rails['gitlab_shell_ssh_port'] = 2222\n" in config
    assert "letsencrypt['enable'] = false\n" in config
    assert "nginx['ssl_certificate'] = '/etc/gitlab/ssl/gitlab.example.com.crt'" in config
    assert "registry_nginx['ssl_certificate_key'] = '/etc/gitlab/ssl/gitlab.example.com.key'" in config
    assert "http://" not in config


@pytest.mark.parametrize("bad", ["Gitlab.Example.com", "gitlab.example.com'; system('id')", "", "localhost"])
def test_omnibus_config_rejects_what_is_not_a_dns_name(bad: str) -> None:
    with pytest.raises(ValueError, match="not a lower-case DNS name"):
        omnibus_config(bad)


def test_install_step_delivers_the_rendered_config_for_the_elastic_ip_name(dev) -> None:
    env = step_env(step(dev, "install"))
    eip = dev.one("aws:ec2/eip:Eip", "gitlab-eip")
    assert hostname(dev) == plain(eip.state)["publicDns"]
    assert env["GITLAB_HOSTNAME"] == hostname(dev)
    assert env["GITLAB_OMNIBUS_CONFIG"] == omnibus_config(hostname(dev))
    assert dev.outputs["gitlabRegistryHost"] == f"{hostname(dev)}:5050"
    # The unit loads the file the step writes, at the path the image evaluates.
    script = (USERDATA / "gitlab/install.sh").read_text()
    assert 'GITOPS_DIR="${HOST_ROOT}/etc/gitops"' in script
    assert f'OMNIBUS_CONFIG="$GITOPS_DIR/{OMNIBUS_CONFIG_PATH.removeprefix("/etc/gitops/")}"' in script
    assert f"--env \"GITLAB_OMNIBUS_CONFIG=from_file('{OMNIBUS_CONFIG_PATH}')\"" in script
    assert f"--volume {OMNIBUS_CONFIG_PATH}:{OMNIBUS_CONFIG_PATH}:ro" in script
    assert "--publish 443:443 --publish 5050:5050 --publish 2222:22" in script
    assert "--publish 80" not in script


def test_images_are_pinned(dev, run_stack) -> None:
    install_env = step_env(step(dev, "install"))
    assert install_env["GITLAB_IMAGE"] == f"gitlab/gitlab-ce:{versions.GITLAB_CE_TAG}" == "gitlab/gitlab-ce:19.4.1-ce.0"
    assert install_env["GITLAB_VERSION"] == "19.4.1"
    other = run_stack("dev", gitlabImageTag="18.11.9-ce.0", gitlabRunnerVersion="18.11.3")
    assert step_env(step(other, "install"))["GITLAB_IMAGE"] == "gitlab/gitlab-ce:18.11.9-ce.0"
    assert step_env(step(other, "install"))["GITLAB_VERSION"] == "18.11.9"
    for registration in dev.all(STEP):
        assert ":latest" not in registration.plain_inputs["create"]


def test_install_step_knows_gitlabs_required_upgrade_stops(dev) -> None:
    stops = step_env(step(dev, "install"))["GITLAB_UPGRADE_STOPS"].split()
    # As omnibus-gitlab's upgrade_check.rb MIN_VERSION names them release by release.
    assert stops[: len(versions.GITLAB_UPGRADE_STOPS_CITED)] == [
        "17.3",
        "17.5",
        "17.8",
        "17.11",
        "18.2",
        "18.5",
        "18.8",
        "18.11",
        "19.2",
    ]
    # After the last cited one, the documented rule: x.2, x.5, x.8 and x.11.
    assert stops[len(versions.GITLAB_UPGRADE_STOPS_CITED) :] == ["19.5", "19.8", "19.11"]
    # The stops it walks through on its own, each with its pinned release; the others it refuses.
    assert step_env(step(dev, "install"))["GITLAB_UPGRADE_STOP_TAGS"] == "18.11.11-ce.0 19.2.4-ce.0"


def test_latest_image_tag_is_rejected(run_stack) -> None:
    from tools.harness import ProgramError

    with pytest.raises(ProgramError, match=r"gitlabImageTag: got 'latest'"):
        run_stack("dev", gitlabImageTag="latest")


# ---- TLS and SSH identity ------------------------------------------------------------------------
def test_server_certificate_is_signed_by_the_ca_for_the_hostname_and_elastic_ip(dev) -> None:
    env = step_env(step(dev, "install"))
    ca = x509.load_pem_x509_certificate(dev.outputs["gitlabCaPem"].encode())
    assert env["GITLAB_CA_PEM"] == dev.outputs["gitlabCaPem"]
    chain = x509.load_pem_x509_certificates(env["GITLAB_TLS_CERT"].encode())
    server = chain[0]
    assert chain[1] == ca  # full chain: server, then CA
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    eip = plain(dev.one("aws:ec2/eip:Eip", "gitlab-eip").state)
    assert sans.get_values_for_type(x509.DNSName) == [hostname(dev)]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(eip["publicIp"])]
    assert ExtendedKeyUsageOID.SERVER_AUTH in server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    lifetime = server.not_valid_after_utc - server.not_valid_before_utc
    assert lifetime <= datetime.timedelta(days=825)
    # The key the step installs is the certificate's key.
    key = serialization.load_pem_private_key(decoded_stdin(step(dev, "install"))["tls_key"].encode(), None)
    assert key.public_key() == server.public_key()


def test_custom_hostname_is_used_everywhere_and_keeps_the_aws_name_in_the_certificate(run_stack) -> None:
    run = run_stack("dev", gitlabHostname="gitlab.example.com")
    assert run.outputs["gitlabUrl"] == "https://gitlab.example.com"
    assert run.outputs["gitlabRegistryHost"] == "gitlab.example.com:5050"
    assert run.outputs["gitlabSshKnownHosts"].startswith("[gitlab.example.com]:2222 ssh-ed25519 ")
    chain = x509.load_pem_x509_certificates(step_env(step(run, "install"))["GITLAB_TLS_CERT"].encode())
    sans = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    eip_dns = plain(run.one("aws:ec2/eip:Eip", "gitlab-eip").state)["publicDns"]
    assert sorted(sans.get_values_for_type(x509.DNSName)) == sorted(["gitlab.example.com", eip_dns])
    assert "external_url 'https://gitlab.example.com'" in step_env(step(run, "install"))["GITLAB_OMNIBUS_CONFIG"]


def test_known_hosts_matches_the_host_keys_the_install_step_places(dev) -> None:
    lines = dev.outputs["gitlabSshKnownHosts"].splitlines()
    host = hostname(dev)
    bundle = decoded_stdin(step(dev, "install"))
    assert [line.split()[1] for line in lines] == ["ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"]
    for line, kind in zip(lines, ("ed25519", "ecdsa", "rsa"), strict=True):
        marker, key_type, key_blob = line.split(" ")
        assert marker == f"[{host}]:2222"
        public = plain(dev.one("tls:index/privateKey:PrivateKey", f"gitlab-ssh-host-{kind}").state)["publicKeyOpenssh"]
        assert f"{key_type} {key_blob}" == public.strip()
        # The private key placed on the host answers for exactly this public key.
        private = serialization.load_ssh_private_key(bundle[f"ssh_host_{kind}_key"].encode(), None)
        derived = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        assert derived.decode() == f"{key_type} {key_blob}"


def test_known_hosts_line_format() -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl comment\n"
    assert known_hosts_line("gitlab.example.com", 2222, key) == (
        "[gitlab.example.com]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    )
    assert known_hosts_line("gitlab.example.com", 22, key).startswith("gitlab.example.com ssh-ed25519 ")
    with pytest.raises(ValueError, match="not an OpenSSH public key"):
        known_hosts_line("gitlab.example.com", 2222, "-----BEGIN PUBLIC KEY-----")


def test_host_keys_are_placed_where_sshd_reads_them() -> None:
    script = (USERDATA / "gitlab/install.sh").read_text()
    # omnibus-gitlab docker/assets/sshd_config: HostKey /etc/gitlab/ssh_host_{rsa,ecdsa,ed25519}_key.
    assert 'key="$CONFIG_DIR/ssh_host_${type}_key"' in script
    assert "for type in ed25519 ecdsa rsa; do" in script
    assert 'put "$key" 0600' in script
    assert 'put "$CONFIG_DIR/ssl/${host}.key" 0600' in script
    assert f'put_text "$CONFIG_DIR/{TRUSTED_CA.removeprefix("/etc/gitlab/")}" 0644 "$GITLAB_CA_PEM"' in script


# ---- the provider and what it manages ------------------------------------------------------------
def test_provider_trusts_the_ca_and_waits_for_the_seeded_token(run_stack) -> None:
    dev = run_stack("dev")  # fresh: every run of a stack rewrites the stack's CA file
    provider = dev.one("pulumi:providers:gitlab", "gitlab-gitlab")
    inputs = provider.plain_inputs
    assert inputs["baseUrl"] == f"https://{hostname(dev)}/api/v4/"
    assert inputs.get("insecure") in (None, False, "false")
    assert inputs["earlyAuthCheck"] in (False, "false")  # providers get config as strings; no GET /user
    assert inputs["cacertFile"] == "build/gitlab-ca-dev.pem"  # relative to the project directory
    # Mocked runs write it to the harness's scratch directory (tests/test_ca_file.py), never the project's.
    assert (provider_files_dir() / inputs["cacertFile"]).read_text() == dev.outputs["gitlabCaPem"]
    assert is_secret_value(provider.inputs["token"])
    assert inputs["token"] == secret_values(dev)["gitlab-admin-token"]
    assert step(dev, "seed-admin-token").urn in provider.depends_on
    owner = dev.one("pulumi:providers:gitlab", "gitlab-gitlab-owner").plain_inputs
    assert (owner["baseUrl"], owner["cacertFile"], owner["earlyAuthCheck"]) == (
        inputs["baseUrl"],
        inputs["cacertFile"],
        inputs["earlyAuthCheck"],
    )
    # Root's token administers the instance; the app project and what is in it is the Owner's.
    on_root = {
        "gitlab:index/applicationSettings:ApplicationSettings",
        "gitlab:index/user:User",
        "gitlab:index/userRunner:UserRunner",
        "gitlab:index/personalAccessToken:PersonalAccessToken",
    }
    for registration in dev:
        if registration.type in on_root:
            assert registration.provider.startswith(provider.urn), registration.name
        elif registration.type.startswith("gitlab:index/"):
            assert registration.provider.startswith(dev.one("pulumi:providers:gitlab", "gitlab-gitlab-owner").urn)


def test_instance_settings_admin_user_and_runner(dev) -> None:
    settings = dev.one("gitlab:index/applicationSettings:ApplicationSettings").plain_inputs
    assert settings["signupEnabled"] is False
    # Only the certificate-based cluster needs local requests (tests/test_gitlab_integration.py).
    assert "allowLocalRequestsFromWebHooksAndServices" not in settings
    admin = dev.one("gitlab:index/user:User", "gitlab-admin").plain_inputs
    assert (admin["username"], admin["email"]) == ("operator", "operator@example.com")
    assert admin["isAdmin"] is True
    assert admin["skipConfirmation"] is True
    assert admin["projectsLimit"] > 0
    assert dev.outputs["gitlabAdminUsername"] == "operator"
    assert dev.all("gitlab:index/userSshKey:UserSshKey") == []
    runner = dev.one("gitlab:index/userRunner:UserRunner").plain_inputs
    assert runner["runnerType"] == "instance_type"
    assert runner["untagged"] is True
    assert dev.outputs["gitlabRunnerId"] == dev.one("gitlab:index/userRunner:UserRunner").id


def test_operator_key_goes_to_the_admin_user(run_stack) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@laptop"
    run = run_stack("dev", operatorSshPublicKey=key)
    ssh_key = run.one("gitlab:index/userSshKey:UserSshKey").plain_inputs
    admin = run.one("gitlab:index/user:User", "gitlab-admin")
    assert ssh_key["key"] == key
    assert ssh_key["userId"] == int(admin.id)


def test_owner_token_is_the_daily_admins_renewed_within_a_year(dev) -> None:
    token = dev.one("gitlab:index/personalAccessToken:PersonalAccessToken", "gitlab-owner-token")
    inputs = token.plain_inputs
    assert inputs["userId"] == int(dev.one("gitlab:index/user:User", "gitlab-admin").id)
    assert inputs["scopes"] == ["api"], "the Owner's work needs api, nothing admin"
    rotation = inputs["rotationConfiguration"]
    # GitLab refuses an expiry past Date.current + 365; a day of margin for the clock of the
    # machine running Pulumi. Renewed by any `pulumi up` in its last 30 days.
    assert rotation == {"expirationDays": 364, "rotateBeforeDays": 30}
    assert "expiresAt" not in inputs, "rotation_configuration sets it (the two conflict)"
    assert "token" in token.additional_secret_outputs


def test_token_rotation_keeper_and_expiry_output(dev, run_stack) -> None:
    token = dev.one("random:index/randomPassword:RandomPassword", "gitlab-admin-token").plain_inputs
    assert token["keepers"] == {"rotation": "1"}
    assert token["length"] == 20 and token["special"] is False
    rotated = run_stack("dev", adminTokenRotation="2026-11-27")
    keepers = rotated.one("random:index/randomPassword:RandomPassword", "gitlab-admin-token").plain_inputs["keepers"]
    assert keepers == {"rotation": "2026-11-27"}
    expected = datetime.date.today() + datetime.timedelta(days=365)
    assert dev.outputs["gitlabAdminTokenExpiresAt"] == expected.isoformat()


def test_steps_run_in_order(dev) -> None:
    owner = dev.one("pulumi:providers:gitlab", "gitlab-gitlab-owner")
    assert dev.one("gitlab:index/personalAccessToken:PersonalAccessToken").urn in owner.depends_on
    install, seed, runner = (step(dev, name) for name in ("install", "seed-admin-token", "remove-runner"))
    attachment = dev.one("aws:ec2/volumeAttachment:VolumeAttachment", "gitlab-data-attachment")
    association = dev.one("aws:ec2/eipAssociation:EipAssociation", "gitlab-eip-association")
    assert {attachment.urn, association.urn} <= set(install.depends_on)
    assert install.urn in seed.depends_on
    assert install.urn in runner.depends_on
    eip = plain(dev.one("aws:ec2/eip:Eip", "gitlab-eip").state)
    for registration in (install, seed, runner):
        assert registration.plain_inputs["connection"]["host"] == eip["publicIp"]
        assert registration.plain_inputs["connection"]["user"] == "admin"


# ---- the seeding program -------------------------------------------------------------------------
def test_seed_program_looks_up_by_name_before_creating_with_expiry_and_scopes() -> None:
    program = seed_token_program("AbCdEfGhIj0123456789")
    lookup = program.index("root.personal_access_tokens.active.find_by(name: token_name)")
    create = program.index("root.personal_access_tokens.create!(")
    assert f"token_name = '{TOKEN_NAME}'" in program
    assert lookup < create
    assert program.index(".find_each(&:revoke!)") < create  # rotation: the old value stops working
    assert "expires_at: 365.days.from_now.to_date" in program
    assert "token.set_token(token_value)\n  token.save!" in program
    scopes = re.search(r"token_scopes = %w\[([a-z_ ]+)\]", program)
    assert scopes and {"api", "create_runner"} <= set(scopes.group(1).split())
    assert f"Feature.enable(:{FEATURE_FLAG})" in program
    assert 'puts "expires_at=#{token.expires_at.iso8601}"' in program
    assert program.count("AbCdEfGhIj0123456789") == 1


def test_seed_program_writes_the_settings_past_every_cache_and_reports_changes() -> None:
    program = seed_token_program("AbCdEfGhIj0123456789")
    # The database row, not this process's cached copy (CacheableAttributes#current).
    assert "settings = ApplicationSetting.current_without_cache || ApplicationSetting.create_from_defaults" in program
    # That column alone: no `update!`, whose model-wide validation could fail on a setting this
    # program never touches (review finding m6).
    assert (
        "settings.update_columns(allow_local_requests_from_web_hooks_and_services: true, updated_at: Time.current)"
        in program
    )
    assert "settings.update!" not in program and "settings.save" not in program
    # Changed only when it was off; the flag likewise. The step waits only then.
    assert program.index("unless settings.allow_local_requests_from_web_hooks_and_services") < program.index(
        "settings.update_columns"
    )
    assert program.index(f"unless Feature.enabled?(:{FEATURE_FLAG})") < program.index(
        f"Feature.enable(:{FEATURE_FLAG})"
    )
    assert "puts \"settings_changed=#{settings_changed ? 'yes' : 'no'}\"" in program
    assert "Gitlab.config.gitlab['application_settings_cache_seconds'] || 60" in program


@pytest.mark.parametrize("bad", ["short", "x" * 21, "AbCdEfGhIj012345678'", "AbCdEfGhIj01234567\n9"])
def test_seed_program_refuses_a_token_that_could_break_out_of_its_literal(bad: str) -> None:
    with pytest.raises(ValueError, match="20 letters or digits"):
        seed_token_program(bad)


# Just enough of GitLab's models for the seeding program to run under plain Ruby: root's token exists
# with the seeded value, and the settings row holds an unrelated value GitLab's validations reject.
SEED_PROGRAM_HARNESS = """
Token = Struct.new(:id, :scopes, :expires_at)
class Tokens
  def initialize(token) = @token = token
  def active = self
  def find_by(**) = @token
end
class User
  TOKEN = Token.new(7, %w[api create_runner admin_mode], Time.utc(2027, 11, 29))
  def self.find_by_username!(name) = (name == 'root' ? new : raise('no such user'))
  def personal_access_tokens = Tokens.new(TOKEN)
end
class PersonalAccessToken
  def self.find_by_token(value) = (value == 'AbCdEfGhIj0123456789' ? User::TOKEN : nil)
end
class Time
  def self.current = now
  def iso8601 = strftime('%Y-%m-%d')
end
class ApplicationSetting
  attr_reader :written, :allow_local_requests_from_web_hooks_and_services
  def self.current_without_cache = (@row ||= new)
  def initialize = @written = []
  def update!(**) = raise('Validation failed: Grafana URL is blocked: Requests to the local network are not allowed')
  def save!(**) = update!
  def update_columns(**columns) = (@written << columns.keys; columns.each { |k, v| instance_variable_set("@#{k}", v) })
end
class Feature
  def self.enabled?(_) = true
end
module Gitlab
  def self.config = Struct.new(:gitlab).new({})
end
"""


def test_seed_program_writes_only_its_column_even_when_another_setting_is_invalid(tmp_path: Path) -> None:
    """Run the program under Ruby against stand-ins of GitLab's models (a fake, not GitLab): a settings
    row that full-model validation would reject still gets local requests allowed, and nothing else."""
    ruby = system_tool("ruby", "apt-get install --no-install-recommends ruby")
    (tmp_path / "harness.rb").write_text(SEED_PROGRAM_HARNESS)
    (tmp_path / "seed.rb").write_text(seed_token_program("AbCdEfGhIj0123456789"))
    (tmp_path / "run.rb").write_text(
        "require_relative 'harness'\nload File.join(__dir__, 'seed.rb')\n"
        "row = ApplicationSetting.current_without_cache\n"
        'puts "written=#{row.written.inspect} allowed=#{row.allow_local_requests_from_web_hooks_and_services}"\n'
    )
    result = subprocess.run([ruby, str(tmp_path / "run.rb")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "settings_changed=yes" in result.stdout
    assert "written=[[:allow_local_requests_from_web_hooks_and_services, :updated_at]] allowed=true" in result.stdout


def test_the_agent_modes_seed_program_changes_no_setting_and_waits_for_nothing(tmp_path: Path) -> None:
    """The same harness, the program of clusterIntegration agent: the token only."""
    ruby = system_tool("ruby", "apt-get install --no-install-recommends ruby")
    (tmp_path / "harness.rb").write_text(SEED_PROGRAM_HARNESS)
    (tmp_path / "seed.rb").write_text(seed_token_program("AbCdEfGhIj0123456789", certificate_clusters=False))
    (tmp_path / "run.rb").write_text(
        "require_relative 'harness'\nload File.join(__dir__, 'seed.rb')\n"
        "row = ApplicationSetting.current_without_cache\n"
        'puts "written=#{row.written.inspect}"\n'
    )
    result = subprocess.run([ruby, str(tmp_path / "run.rb")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "settings_changed=no" in result.stdout and "written=[]" in result.stdout
    assert "expires_at=2027-11-29" in result.stdout


def test_seed_program_is_valid_ruby(tmp_path: Path) -> None:
    ruby = system_tool("ruby", "apt-get install --no-install-recommends ruby")
    path = tmp_path / "seed.rb"
    path.write_text(seed_token_program("AbCdEfGhIj0123456789"))
    subprocess.run([ruby, "-c", str(path)], check=True, capture_output=True)


def test_omnibus_config_evaluates_and_reads_the_root_password_seed_only_when_present(tmp_path: Path) -> None:
    """Evaluate the configuration as Omnibus does (Ruby), with its setting methods stubbed as hashes."""
    ruby = system_tool("ruby", "apt-get install --no-install-recommends ruby")
    seed = tmp_path / "seed"
    config = omnibus_config("gitlab.example.com").replace(ROOT_PASSWORD_SEED, str(seed))
    harness = (
        "S = Hash.new { |h, k| h[k] = {} }\n"
        "%w[letsencrypt nginx registry_nginx gitlab_rails prometheus_monitoring].each { |n| define_method(n) { S[n] } }\n"
        "def external_url(url) = S['external_url'] = url\n"
        "def registry_external_url(url) = S['registry_external_url'] = url\n"
        f"eval(File.read({str(tmp_path / 'config.rb')!r}))\n"
        "puts [S['external_url'], S['registry_external_url'], S['gitlab_rails']['gitlab_shell_ssh_port'],"
        " S['letsencrypt']['enable'], S['gitlab_rails']['initial_root_password'].inspect].join('|')\n"
    )
    (tmp_path / "config.rb").write_text(config)
    (tmp_path / "harness.rb").write_text(harness)

    def evaluate() -> str:
        return subprocess.run(
            [ruby, str(tmp_path / "harness.rb")], check=True, capture_output=True, text=True
        ).stdout.strip()

    prefix = "https://gitlab.example.com|https://gitlab.example.com:5050|2222|false|"
    assert evaluate() == prefix + "nil"
    seed.write_text("s3cret-Passw0rd\n")
    assert evaluate() == prefix + '"s3cret-Passw0rd"'


def test_omnibus_config_gives_gitlab_backup_the_registry_databases_credentials(tmp_path: Path) -> None:
    """GitLab 19 keeps the registry's metadata in PostgreSQL; gitlab-backup includes it only with the
    backup role's credentials, read from the root-only files install.sh writes from stdin."""
    ruby = system_tool("ruby", "apt-get install --no-install-recommends ruby")
    backup, restore = tmp_path / "backup", tmp_path / "restore"
    config = (
        omnibus_config("gitlab.example.com")
        .replace(REGISTRY_BACKUP_PASSWORD_FILE, str(backup))
        .replace(REGISTRY_RESTORE_PASSWORD_FILE, str(restore))
    )
    (tmp_path / "config.rb").write_text(config)
    (tmp_path / "harness.rb").write_text(
        "S = Hash.new { |h, k| h[k] = {} }\n"
        "%w[letsencrypt nginx registry_nginx gitlab_rails prometheus_monitoring].each { |n| define_method(n) { S[n] } }\n"
        "def external_url(url) = nil\ndef registry_external_url(url) = nil\n"
        f"eval(File.read({str(tmp_path / 'config.rb')!r}))\n"
        "r = S['gitlab_rails']\n"
        "puts [r['backup_role'], r['backup_registry_password'].inspect, r['restore_registry_password'].inspect,"
        " r['backup_keep_time']].join('|')\n"
    )

    def evaluate() -> str:
        return subprocess.run(
            [ruby, str(tmp_path / "harness.rb")], check=True, capture_output=True, text=True
        ).stdout.strip()

    assert evaluate() == "true|nil|nil|86400"
    backup.write_text("Backup-Pass-1\n")
    restore.write_text("Restore-Pass-1\n")
    assert evaluate() == 'true|"Backup-Pass-1"|"Restore-Pass-1"|86400'
    script = (USERDATA / "gitlab/install.sh").read_text()
    for path, name in ((REGISTRY_BACKUP_PASSWORD_FILE, "backup"), (REGISTRY_RESTORE_PASSWORD_FILE, "restore")):
        host_path = "$CONFIG_DIR/" + path.removeprefix("/etc/gitlab/")
        assert f'put "{host_path}" 0600 <"$workdir/registry_{name}_password"' in script


def test_token_expiry_parsing() -> None:
    assert token_expiry("DEPRECATION WARNING: x\nexpires_at=2027-11-27\n") == "2027-11-27"
    with pytest.raises(ValueError, match="printed no `expires_at=` line"):
        token_expiry("")


def test_seed_step_pipes_stdin_to_rails_runner() -> None:
    script = (USERDATA / "gitlab/seed-admin-token.sh").read_text()
    assert 'program="$(cat)"' in script
    assert "docker exec -i gitlab gitlab-rails runner -" in script


# ---- no runner on the GitLab host ------------------------------------------------------------------
GITLAB_HOST_STEPS = ("install", "seed-admin-token", "remove-runner", "operator-ssh-key", "k8s-agent-connected")


def test_the_gitlab_host_runs_no_runner(dev) -> None:
    """No step sends a runner token to the GitLab host, registers or starts a runner there."""
    eip = plain(dev.one("aws:ec2/eip:Eip", "gitlab-eip").state)
    on_host = [r for r in dev.all(STEP) if r.plain_inputs["connection"]["host"] == eip["publicIp"]]
    # The GitLab host's own steps, plus the backups' timer (components/backups.py) that runs there.
    expected = [f"gitlab-{name}" for name in GITLAB_HOST_STEPS] + ["backups-gitlab-timer"]
    assert sorted(r.name for r in on_host) == sorted(expected)
    runner = dev.one("gitlab:index/userRunner:UserRunner")
    for registration in on_host:
        assert runner.urn not in registration.property_dependencies.get("stdin", []), registration.name
        script = step_script_of(registration)
        assert "gitlab-runner register" not in script, registration.name
        assert not any("gitlab-runner" in value for value in step_env(registration).values()), registration.name
    user_data = dev.one("aws:ec2/instance:Instance", "gitlab-host").plain_inputs["userData"]
    assert "gitlab-runner" not in user_data
    assert runner.parent != dev.one("gitops:gitlab:GitLabHost", "gitlab").urn


def test_the_old_runner_is_removed_from_existing_hosts(dev) -> None:
    remove = step(dev, "remove-runner")
    assert dev.one(STEP, "gitlab-install").urn in remove.depends_on  # Docker and the host are up
    script = step_script_of(remove)
    for removal in (
        'systemctl disable --now --quiet "$UNIT"',
        "docker rm --force gitlab-runner",
        'docker ps --all --quiet --filter "label=${LABEL}"',
        "LABEL=com.gitlab.gitlab-runner.managed=true",
        '"${HOST_ROOT}/etc/gitlab-runner"',
    ):
        assert removal in script, removal


def test_registry_ca_reaches_host_docker(dev) -> None:
    install = (USERDATA / "gitlab/install.sh").read_text()
    assert 'put_text "${HOST_ROOT}/etc/docker/certs.d/${host}:5050/ca.crt" 0644 "$GITLAB_CA_PEM"' in install


# ---- security group ------------------------------------------------------------------------------
def _rules(run: ProgramRun) -> list[Registration]:
    group = run.one("aws:ec2/securityGroup:SecurityGroup", "gitops-gitlab")
    return [r for r in run.all(INGRESS) if r.plain_inputs["securityGroupId"] == group.id]


def test_security_group_rules(run_stack) -> None:
    admins = ["203.0.113.7/32", "198.51.100.0/24"]
    run = run_stack("dev", adminCidrs=admins)
    groups = {
        run.one("aws:ec2/securityGroup:SecurityGroup", name).id: role
        for name, role in (
            ("gitops-cluster", "cluster"),
            ("runners-manager-group", "manager"),
            ("runners-job-vm-group", "jobs"),
        )
    }
    seen = set()
    for rule in _rules(run):
        inputs = rule.plain_inputs
        assert inputs["ipProtocol"] == "tcp"
        assert inputs["fromPort"] == inputs["toPort"]
        assert AWS_DESCRIPTION.match(inputs["description"]), inputs["description"]
        assert inputs["tags"]["Name"] == rule.name
        source = inputs.get("cidrIpv4") or groups.get(inputs.get("referencedSecurityGroupId"), "?")
        seen.add((inputs["fromPort"], source))
    expected = {(port, cidr) for port in (22, 443, 5050, 2222) for cidr in admins}
    expected |= {(443, "cluster"), (5050, "cluster"), (2222, "cluster")}
    # CI: the runner manager calls the API; job VMs clone, fetch artifacts and use the registry.
    expected |= {(443, "manager"), (443, "jobs"), (5050, "jobs")}
    assert seen == expected
    assert not any(r.plain_inputs.get("cidrIpv4") == "0.0.0.0/0" for r in _rules(run))
    assert not any(port == 80 for port, _ in seen)


# ---- validators ----------------------------------------------------------------------------------
def test_user_data_passes_cloud_init_schema(dev, tmp_path: Path) -> None:
    cloud_init = system_tool("cloud-init", "apt-get install --no-install-recommends cloud-init")
    user_data = dev.one("aws:ec2/instance:Instance", "gitlab-host").plain_inputs["userData"]
    assert user_data.startswith("#cloud-config\n")
    path = tmp_path / "gitlab-user-data.yaml"
    path.write_text(user_data)
    result = subprocess.run([cloud_init, "schema", "--config-file", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_user_data_installs_docker_and_holds_public_material_only(dev) -> None:
    user_data = dev.one("aws:ec2/instance:Instance", "gitlab-host").plain_inputs["userData"]
    assert "/usr/local/lib/gitops/gitlab/install-docker.sh" in user_data
    assert "PRIVATE KEY" not in user_data
    script = (USERDATA / "gitlab/install-docker.sh").read_text()
    assert "DOCKER_KEY_FINGERPRINT=9DC858229FC7DD38854AE2D88D81803C0EBFCD88" in script
    assert "docker-ce docker-ce-cli containerd.io" in script


@pytest.mark.parametrize("script", GITLAB_SCRIPTS, ids=lambda path: path.name)
def test_scripts_pass_shellcheck(script: Path) -> None:
    shellcheck = VENV_BIN / "shellcheck"
    result = subprocess.run([str(shellcheck), "-x", str(script)], capture_output=True, text=True, cwd=script.parent)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", ["gitlab/install.sh", "gitlab/seed-admin-token.sh", "gitlab/remove-runner.sh"])
def test_steps_as_sent_pass_shellcheck(script: str) -> None:
    """What runs on the host: userdata/lib/common.sh followed by the step (components/remote.py)."""
    result = subprocess.run(
        [str(VENV_BIN / "shellcheck"), "-s", "bash", "-"], input=step_script(script), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_secret_bundle_round_trips_through_the_install_step_reader(tmp_path: Path) -> None:
    """The bash loop that reads stdin in install.sh decodes what secret_bundle encodes, byte for byte."""
    script = (USERDATA / "gitlab/install.sh").read_text()
    reader = script[script.index("umask 077") : script.index("umask 022")]
    values = {"tls_key": "-----BEGIN EC PRIVATE KEY-----\nabc\n-----END EC PRIVATE KEY-----\n", "root_password": "p w"}
    program = (
        'set -euo pipefail\ndie() { echo "$*" >&2; exit 1; }\n'
        + reader.replace(
            "for name in tls_key ssh_host_ed25519_key ssh_host_ecdsa_key ssh_host_rsa_key root_password \\\n"
            "  registry_backup_password registry_restore_password",
            "for name in tls_key root_password",
        )
        + f'cp "$workdir/tls_key" {tmp_path}/tls_key; cp "$workdir/root_password" {tmp_path}/root_password\n'
    )
    subprocess.run(["bash", "-c", program], input=secret_bundle(values).rstrip("\n"), text=True, check=True)
    assert (tmp_path / "tls_key").read_text() == values["tls_key"]
    assert (tmp_path / "root_password").read_text() == values["root_password"]


def test_script_paths_match_the_python_constants() -> None:
    install = (USERDATA / "gitlab/install.sh").read_text()
    seed = (USERDATA / "gitlab/seed-admin-token.sh").read_text()
    assert f"CONTAINER_CA={TRUSTED_CA}" in install
    assert f"CONTAINER_CA={TRUSTED_CA}" in seed
    assert gitlab_config.DATA_MOUNT == "/srv/gitlab" and "MOUNT_POINT=/srv/gitlab" in install
