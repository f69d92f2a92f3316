"""The GitLab host as data: Omnibus configuration, boot document, known_hosts, seeding program, stdin bundles.

Pure functions over plain values, tested without Pulumi; ``components/gitlab_host.py`` feeds them
Outputs. Every fixed value is fixed by an upstream document, cited next to it. Nothing returned by
``omnibus_config`` or ``gitlab_cloud_config`` may hold a secret: both end up in user data or in a
step's command line. Secrets travel only in what ``secret_bundle`` and ``seed_token_program`` build,
which go to a step's stdin.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from components import versions
from components.cloudinit import INSTALL_DIR, cloud_config, script_file
from components.config import gitlab_version as config_gitlab_version

# Ports. Inside the container GitLab keeps its defaults (nginx 443, registry nginx 5050, sshd 22);
# the host publishes 443, 5050 and 2222 -> 22 (doc/install/docker/configuration.md, "Expose GitLab
# on different ports"; container_registry.md "under an existing GitLab domain": port 5050).
HTTPS_PORT = 443
REGISTRY_PORT = 5050
SSH_PORT = 2222
# Where the data volume is mounted on the host; the three directories the image declares as
# volumes (/etc/gitlab, /var/log/gitlab, /var/opt/gitlab) live under it (doc/install/docker/installation.md).
DATA_MOUNT = "/srv/gitlab"
# The rendered configuration on the host, bind-mounted read-only at the same path in the container
# and loaded through GITLAB_OMNIBUS_CONFIG=from_file(...): the image evaluates that variable as Ruby
# before /etc/gitlab/gitlab.rb (omnibus-gitlab docker/assets/gitlab.rb), so gitlab.rb stays free for
# an operator's local overrides and the variable itself stays one short line.
OMNIBUS_CONFIG_PATH = "/etc/gitops/gitlab-omnibus.rb"
# Container paths (host: /srv/gitlab/config/...). The root password seed is written by the install
# step, read by the Omnibus configuration only at the database's first seed, then deleted.
ROOT_PASSWORD_SEED = "/etc/gitlab/pulumi_initial_root_password"
# The registry metadata database's backup and restore roles' passwords (secrets on install.sh's stdin),
# root-only files on the config volume: Omnibus reads them at every reconfigure.
REGISTRY_BACKUP_PASSWORD_FILE = "/etc/gitlab/pulumi_registry_backup_password"
REGISTRY_RESTORE_PASSWORD_FILE = "/etc/gitlab/pulumi_registry_restore_password"
TRUSTED_CA = "/etc/gitlab/trusted-certs/gitops-gitlab-ca.crt"  # omnibus-gitlab doc/settings/ssl: trusted-certs

# The seeded admin token. Scopes: `api` for everything the provider does (application settings,
# users, projects, clusters, variables), `create_runner` for POST /user/runners (gitlab.UserRunner),
# `admin_mode` so admin calls keep working if an operator turns Admin Mode on (it is in
# Gitlab::Auth::ADMIN_SCOPES, which PersonalAccessToken#validate_scopes accepts).
TOKEN_NAME = "pulumi-admin"
TOKEN_SCOPES = ("api", "create_runner", "admin_mode")
TOKEN_LIFETIME_DAYS = 365  # PersonalAccessToken::MAX_PERSONAL_ACCESS_TOKEN_LIFETIME_IN_DAYS
# "The token must be 20 characters long" (doc/user/profile/personal_access_tokens.md, "Create a
# personal access token programmatically"); letters and digits keep it safe inside a Ruby literal.
_TOKEN_VALUE = re.compile(r"^[A-Za-z0-9]{20}$")
FEATURE_FLAG = "certificate_based_clusters"  # ops flag, off by default (config/feature_flags/ops/)
LOCAL_REQUESTS_SETTING = "allow_local_requests_from_web_hooks_and_services"  # doc/api/settings.md
_EXPIRY_LINE = re.compile(r"^expires_at=(\d{4}-\d{2}-\d{2})$", re.MULTILINE)

# Default image of jobs that name none: the same Docker release the app's pipelines run.
RUNNER_JOB_IMAGE = versions.DOCKER_CLI_IMAGE
# The runner's feature flags, fixed at registration ([runners.feature_flags], so no job can turn
# them off). FF_NETWORK_PER_BUILD: every job gets its own Docker network where its services are
# reachable by alias, instead of the default bridge's container links, which Docker Engine 30
# removes (gitlab-runner docs/configuration/feature-flags.md, docs/executors/docker.md).
RUNNER_FEATURE_FLAGS = ("FF_NETWORK_PER_BUILD",)

# The daily admin's own API token: it creates the app project and everything in it, so the project
# and its commits belong to the project's Owner (Projects::CreateService makes the namespace owner
# Owner and writes its project_authorizations row inline). Minted with root's token through
# POST /users/:user_id/personal_access_tokens (admin only); at most 364 days: GitLab refuses an
# expiry past Date.current + 365 (PersonalAccessToken#expires_at_before_instance_max_expiry_date)
# and the provider counts days on the machine running Pulumi, which may be a day ahead of UTC.
OWNER_TOKEN_NAME = "pulumi-app-project"
OWNER_TOKEN_SCOPES = ("api",)
OWNER_TOKEN_LIFETIME_DAYS = 364
OWNER_TOKEN_ROTATE_BEFORE_DAYS = 30

_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_SECRET_NAME = re.compile(r"^[a-z0-9_]+$")


def _check_hostname(hostname: str) -> str:
    if not _HOSTNAME.match(hostname):
        raise ValueError(f"GitLab hostname {hostname!r} is not a lower-case DNS name such as gitlab.example.com")
    return hostname


def registry_host(hostname: str) -> str:
    """What `docker login`, containerd and Flux call the registry: <host>:5050."""
    return f"{_check_hostname(hostname)}:{REGISTRY_PORT}"


def ssl_paths(hostname: str) -> tuple[str, str]:
    """Certificate (full chain) and key paths in the container: the names Omnibus looks for by default
    (/etc/gitlab/ssl/<external_url host>.crt/.key, omnibus-gitlab doc/settings/ssl/_index.md)."""
    _check_hostname(hostname)
    return f"/etc/gitlab/ssl/{hostname}.crt", f"/etc/gitlab/ssl/{hostname}.key"


def omnibus_config(hostname: str) -> str:
    """The gitlab.rb settings this product fixes, as Ruby (public: it travels on a command line)."""
    certificate, key = ssl_paths(hostname)
    return f"""\
# Rendered by Pulumi (components/gitlab_config.py) and loaded through GITLAB_OMNIBUS_CONFIG before
# /etc/gitlab/gitlab.rb: put local overrides in gitlab.rb, they win.
external_url 'https://{hostname}'
# The registry on the same name, its own port (doc/administration/packages/container_registry.md).
registry_external_url 'https://{hostname}:{REGISTRY_PORT}'
# TLS from the Pulumi-made CA; never Let's Encrypt (omnibus-gitlab doc/settings/ssl/_index.md).
letsencrypt['enable'] = false
nginx['ssl_certificate'] = '{certificate}'
nginx['ssl_certificate_key'] = '{key}'
registry_nginx['ssl_certificate'] = '{certificate}'
registry_nginx['ssl_certificate_key'] = '{key}'
# sshd listens on 22 in the container, published on the host's {SSH_PORT}: clone URLs must say {SSH_PORT}.
gitlab_rails['gitlab_shell_ssh_port'] = {SSH_PORT}
# Port 80 is not published on the host: GitLab is reached over HTTPS only.
# The bundled Prometheus stack is not needed here and costs ~1 GB of the host's memory.
prometheus_monitoring['enable'] = false
# The initial root password: read only when the database is first seeded (the first reconfigure),
# from a root-only file the install step writes and deletes once GitLab is up. Keeps the password
# out of user data, of this file and of the container's environment (`docker inspect`).
root_password_seed = '{ROOT_PASSWORD_SEED}'
gitlab_rails['initial_root_password'] = File.read(root_password_seed).strip if File.exist?(root_password_seed)
# The container registry's metadata database (on by default from GitLab 19.0) is in `gitlab-backup`
# only when the backup finds its credentials: the backup role makes Omnibus create the
# registry_backup/registry_restore PostgreSQL roles and write them for gitlab-backup
# (omnibus-gitlab doc/settings/backups.md "Container Registry metadata database backup credentials").
gitlab_rails['backup_role'] = true
registry_backup_password = '{REGISTRY_BACKUP_PASSWORD_FILE}'
registry_restore_password = '{REGISTRY_RESTORE_PASSWORD_FILE}'
gitlab_rails['backup_registry_password'] = File.read(registry_backup_password).strip if File.exist?(registry_backup_password)
gitlab_rails['restore_registry_password'] = File.read(registry_restore_password).strip if File.exist?(registry_restore_password)
# Archives left on the data volume by a run that was killed are pruned by the next backup (a day old).
gitlab_rails['backup_keep_time'] = 86400
"""


def known_hosts_line(hostname: str, port: int, public_key_openssh: str) -> str:
    """One known_hosts line. OpenSSH writes a non-default port as `[host]:port` (sshd(8), SSH_KNOWN_HOSTS
    FILE FORMAT); the key is `<type> <base64>` without a comment."""
    fields = public_key_openssh.split()
    if len(fields) < 2 or not fields[0].startswith(("ssh-", "ecdsa-")):
        raise ValueError(f"not an OpenSSH public key: {public_key_openssh[:40]!r}")
    host = _check_hostname(hostname) if port == 22 else f"[{_check_hostname(hostname)}]:{port}"
    return f"{host} {fields[0]} {fields[1]}"


def known_hosts(hostname: str, public_keys_openssh: Sequence[str]) -> str:
    """GitLab's git-over-SSH identity: one line per host key, ed25519 first."""
    return "\n".join(known_hosts_line(hostname, SSH_PORT, key) for key in public_keys_openssh) + "\n"


def secret_bundle(values: Mapping[str, str]) -> str:
    """Several secrets on one stdin: `<name> <base64>` lines, read back by userdata/gitlab/install.sh."""
    lines = []
    for name, value in values.items():
        if not _SECRET_NAME.match(name):
            raise ValueError(f"secret name {name!r} must be lower-case letters, digits and '_'")
        lines.append(f"{name} {base64.b64encode(value.encode()).decode()}\n")
    return "".join(lines)


# What GitLab's certificate-based cluster needs (clusterIntegration certificate), in the seeding program.
_CERTIFICATE_CLUSTER_SETTINGS = f"""\
# The cluster's API URL is a private address: GitLab's URL blocker refuses it unless local requests
# are allowed. Read and written on the database row itself, never through a cached copy. One column
# and nothing else: update! would run every ApplicationSetting validation, so a setting this
# program never touches, made invalid by a later GitLab release, would fail the step. The callbacks
# skipped only expire this process's own cache; the step waits out every worker's instead.
settings_changed = false
settings = ApplicationSetting.current_without_cache || ApplicationSetting.create_from_defaults
unless settings.{LOCAL_REQUESTS_SETTING}
  settings.update_columns({LOCAL_REQUESTS_SETTING}: true, updated_at: Time.current)
  settings_changed = true
end
# Certificate-based clusters (GitLabIntegration) answer 404 until this ops flag is on.
unless Feature.enabled?(:{FEATURE_FLAG})
  Feature.enable(:{FEATURE_FLAG})
  settings_changed = true
end
"""
# Agent mode: nothing to turn on (KAS calls GitLab's internal API, not an outgoing integration URL).
_NO_CLUSTER_SETTINGS = """\
# GitLab's agent for Kubernetes needs neither local requests nor the certificate_based_clusters flag:
# nothing is turned on here, and nothing is turned off.
settings_changed = false
"""


def seed_token_program(token: str, *, certificate_clusters: bool = True) -> str:
    """The Ruby program the seeding step pipes into `gitlab-rails runner -` (stdin: it holds the token).

    Two jobs, both idempotent (the second only with ``certificate_clusters``, clusterIntegration
    certificate: GitLab's agent needs neither setting, so in agent mode the program turns nothing on,
    and it never turns anything off: a stack switched from certificate mode keeps them, which the
    certificate cluster's deletion needs, as the README says):

    1. Root's admin API token (the provider that creates users, settings and the runner). The token
       is looked up by name first and kept when it already holds this value; another value under the
       name (adminTokenRotation changed) is revoked and a new token minted (doc/user/profile/
       personal_access_tokens.md, "Create/Revoke a personal access token programmatically").
    2. What GitLab's view of the cluster needs, written to the database with every cache bypassed:
       `allow_local_requests_from_web_hooks_and_services` on the row `ApplicationSetting.
       current_without_cache` returns (CacheableAttributes: `current` would read this process's
       cache), that column alone (`update_columns`: no model-wide validation), and the ops flag `certificate_based_clusters` (ProjectCluster answers 404 without it).
       Each Puma worker keeps serving its cached copy until it expires (application settings:
       `application_settings_cache_seconds`, 60 s by default, in Gitlab::ProcessMemoryCache; feature
       flags: a 1-minute per-process L1 cache, lib/feature.rb), so the program reports whether it
       changed anything and the cache lifetime, and the step waits that long before anything that
       depends on them runs.

    Prints `expires_at=<date>`, `settings_changed=yes|no` and `settings_cache_seconds=<n>`.
    """
    if not _TOKEN_VALUE.match(token):
        raise ValueError("the admin token must be 20 letters or digits")
    scopes = " ".join(TOKEN_SCOPES)
    settings = _CERTIFICATE_CLUSTER_SETTINGS if certificate_clusters else _NO_CLUSTER_SETTINGS
    return f"""\
# Seeds the admin API token Pulumi generated and the settings GitLab's cluster integration needs
# (components/gitlab_config.py seed_token_program).
token_name = '{TOKEN_NAME}'
token_scopes = %w[{scopes}]
token_value = '{token}'
root = User.find_by_username!('root')
token = root.personal_access_tokens.active.find_by(name: token_name)
unless token && PersonalAccessToken.find_by_token(token_value)&.id == token.id
  stale = PersonalAccessToken.find_by_token(token_value)
  if stale && !stale.active?
    abort "the seeded admin token has expired or was revoked: change adminTokenRotation and run pulumi up"
  end
  # Absent, or holding an older value: the old one stops working now.
  root.personal_access_tokens.active.where(name: token_name).find_each(&:revoke!)
  token = root.personal_access_tokens.create!(
    name: token_name, scopes: token_scopes, expires_at: {TOKEN_LIFETIME_DAYS}.days.from_now.to_date
  )
  token.set_token(token_value)
  token.save!
end
token.update!(scopes: token_scopes) unless token.scopes.map(&:to_s).sort == token_scopes.sort

{settings}puts "expires_at=#{{token.expires_at.iso8601}}"
puts "settings_changed=#{{settings_changed ? 'yes' : 'no'}}"
puts "settings_cache_seconds=#{{(Gitlab.config.gitlab['application_settings_cache_seconds'] || 60).to_i}}"
"""


def token_expiry(stdout: str) -> str:
    """The expiry date the seeding step printed (YYYY-MM-DD)."""
    found = _EXPIRY_LINE.findall(stdout)
    if not found:
        raise ValueError(
            "the GitLab token seeding step printed no `expires_at=` line; "
            "re-run it with `pulumi up --replace <its URN>` and read its output"
        )
    return found[-1]


def gitlab_version(image_tag: str) -> str:
    """The GitLab version a gitlab/gitlab-ce tag runs (19.4.1-ce.0 -> 19.4.1), as the install step compares it."""
    return ".".join(map(str, config_gitlab_version(image_tag)))


def upgrade_stops() -> str:
    """The required upgrade stops for the install step, space-separated (19.2 ...)."""
    return " ".join(f"{major}.{minor}" for major, minor in versions.gitlab_upgrade_stops())


def upgrade_stop_tags() -> str:
    """The pinned gitlab/gitlab-ce tag of each stop the install step may walk through, space-separated."""
    return " ".join(tag for _stop, (tag, _runner) in sorted(versions.GITLAB_UPGRADE_STOP_TAGS.items()))


def docker_daemon_config() -> str:
    """/etc/docker/daemon.json: the `local` log driver rotates logs (20 MB x 5 per container by
    default, docs.docker.com/engine/logging/drivers/local) so job containers cannot fill the disk."""
    return json.dumps({"log-driver": "local"}, indent=2) + "\n"


def gitlab_cloud_config(*, operator_ssh_public_key: str | None) -> dict[str, Any]:
    """The GitLab host's user data: Docker Engine and nothing else, public material only.

    Everything that can change over the host's life (GitLab's configuration, TLS, host keys, the
    systemd units, the runner) is applied by the steps over SSH, which re-run when it changes;
    cloud-init applies user data only at an instance's first boot. Packages are installed by the
    boot script with retries: the host has no public address until its Elastic IP is associated,
    moments after the instance starts, so cloud-init's own package_update could fail.
    """
    return cloud_config(
        hostname="gitlab",
        write_files=[
            script_file("gitlab/install-docker.sh"),
            {
                "path": "/etc/docker/daemon.json",
                "permissions": "0644",
                "owner": "root:root",
                "content": docker_daemon_config(),
            },
        ],
        runcmd=[[f"{INSTALL_DIR}/gitlab/install-docker.sh"]],
        operator_ssh_public_key=operator_ssh_public_key,
    )
