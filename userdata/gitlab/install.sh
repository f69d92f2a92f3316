#!/usr/bin/env bash
# Step (GitLab host, over SSH): mount the data volume; refuse a GitLab version change GitLab does not
# support (a downgrade, a jump across a required upgrade stop, GitLab 19 on PostgreSQL < 17) before
# anything stops; place TLS, SSH host keys and the root password seed; write GitLab's configuration
# and systemd unit; restart GitLab when any of it changed (only reload nginx and the registry when
# only the certificate changed); wait until it serves HTTPS, the registry and the API; after an
# upgrade, wait for GitLab's batched background migrations; delete the root password seed.
# stdin (secret): `<name> <base64>` lines (components/gitlab_config.py secret_bundle): tls_key,
#   ssh_host_ed25519_key, ssh_host_ecdsa_key, ssh_host_rsa_key (OpenSSH format), root_password.
# env (public): GITLAB_HOSTNAME, GITLAB_IMAGE, GITLAB_VERSION (the image's x.y.z), GITLAB_UPGRADE_STOPS
#   (required upgrade stops, "x.y x.y ..."; components/versions.py), DATA_VOLUME_ID, GITLAB_CA_PEM,
#   GITLAB_TLS_CERT (server certificate then CA), GITLAB_OMNIBUS_CONFIG (Ruby, components/gitlab_config.py).
#   HOST_ROOT is empty on a host: the step's behaviour tests point it at a scratch directory.
# Idempotent: a file is rewritten only when its content differs; GitLab restarts only then.
# Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail

# Read the secrets first, before any other command can touch stdin.
umask 077
workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
while IFS=' ' read -r name value || [[ -n "${name:-}" ]]; do
  [[ -n "$name" ]] || continue
  [[ "$name" =~ ^[a-z0-9_]+$ ]] || die "unexpected entry on stdin (names are lower-case words)"
  printf '%s' "$value" | base64 -d >"$workdir/$name" || die "stdin entry ${name} is not base64"
done
for name in tls_key ssh_host_ed25519_key ssh_host_ecdsa_key ssh_host_rsa_key root_password; do
  [[ -s "$workdir/$name" ]] || die "stdin holds no ${name}"
done
umask 022

require_env GITLAB_HOSTNAME GITLAB_IMAGE GITLAB_VERSION GITLAB_UPGRADE_STOPS DATA_VOLUME_ID GITLAB_CA_PEM \
  GITLAB_TLS_CERT GITLAB_OMNIBUS_CONFIG
[[ "$GITLAB_HOSTNAME" =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$ ]] || die "GITLAB_HOSTNAME ${GITLAB_HOSTNAME} is not a DNS name"
[[ "$DATA_VOLUME_ID" =~ ^vol-[0-9a-f]+$ ]] || die "DATA_VOLUME_ID ${DATA_VOLUME_ID} is not an EBS volume id"
[[ "$GITLAB_VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "GITLAB_VERSION ${GITLAB_VERSION} is not x.y.z"
[[ "$GITLAB_IMAGE" =~ ^gitlab/gitlab-ce:${GITLAB_VERSION//./\\.}-ce\.[0-9]+$ ]] ||
  die "GITLAB_IMAGE ${GITLAB_IMAGE} is not a gitlab/gitlab-ce tag of GitLab ${GITLAB_VERSION}"
[[ "$GITLAB_UPGRADE_STOPS" =~ ^[0-9]+\.[0-9]+( [0-9]+\.[0-9]+)*$ ]] ||
  die "GITLAB_UPGRADE_STOPS ${GITLAB_UPGRADE_STOPS} is not a list of x.y versions"
host="$GITLAB_HOSTNAME"
HOST_ROOT="${HOST_ROOT:-}"

wait_for_cloud_init
command -v docker >/dev/null || die "Docker is not installed: see /var/log/cloud-init-output.log (install-docker)"

# Host paths. Container paths: /srv/gitlab/config = /etc/gitlab, logs = /var/log/gitlab, data = /var/opt/gitlab.
MOUNT_POINT=/srv/gitlab
MOUNT="${HOST_ROOT}${MOUNT_POINT}"
CONFIG_DIR="$MOUNT/config"
GITOPS_DIR="${HOST_ROOT}/etc/gitops"
OMNIBUS_CONFIG="$GITOPS_DIR/gitlab-omnibus.rb"
HOST_CA="$GITOPS_DIR/gitlab-ca.crt"
UNIT="${HOST_ROOT}/etc/systemd/system/gitlab.service"
FSTAB="${HOST_ROOT}/etc/fstab"
CONTAINER_CA=/etc/gitlab/trusted-certs/gitops-gitlab-ca.crt
# What the data volume last ran: the Rails VERSION file reconfigure copies to /var/opt/gitlab, the
# file the image's own init-container compares before `gitlab-ctl upgrade-check` (omnibus-gitlab
# files/gitlab-cookbooks/gitlab/recipes/gitlab-rails.rb, docker/assets/init-container).
VERSION_FILE="$MOUNT/data/gitlab-rails/VERSION"
PG_VERSION_FILE="$MOUNT/data/postgresql/data/PG_VERSION"
# Set while an upgrade has not finished its background migrations: a re-run waits for them again.
UPGRADE_MARKER="$MOUNT/.gitops-upgrade-in-progress"
# The hook point run before GitLab is stopped for an upgrade (with the old and new versions): the
# place a backup goes once this product takes backups. Nothing installs it today.
PRE_UPGRADE_HOOK="$GITOPS_DIR/hooks/pre-gitlab-upgrade"

# ---- the data volume -------------------------------------------------------------------------
# On Nitro instances an EBS volume is an NVMe device whose serial is the volume id without its dash;
# udev links it as /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol… (AWS "Amazon EBS and NVMe").
# Xen instance types show the attachment's /dev/sdf as /dev/xvdf.
data_device() {
  local candidate
  for candidate in "${HOST_ROOT}/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${DATA_VOLUME_ID/-/}" \
    "${HOST_ROOT}/dev/xvdf"; do
    if [[ -e "$candidate" ]]; then
      readlink -f "$candidate"
      return 0
    fi
  done
  return 1
}

data_device_attached() {
  data_device >/dev/null
}

mount_data_volume() {
  local device fstype="" status=0 uuid line
  wait_until 600 "EBS volume ${DATA_VOLUME_ID} to appear (the attachment follows the instance's start)" data_device_attached
  device="$(data_device)"
  # Format only a blank volume: blkid -p exits 2 when it finds no signature at all.
  fstype="$(blkid -p -o value -s TYPE "$device")" || status=$?
  case "$status" in
    0) [[ -n "$fstype" ]] || die "${device} (${DATA_VOLUME_ID}) is not blank but holds no filesystem; refusing to format it" ;;
    2)
      log "${DATA_VOLUME_ID} is blank: creating an ext4 filesystem on ${device}"
      mkfs.ext4 -q -L gitlab-data "$device"
      fstype=ext4
      ;;
    *) die "blkid could not probe ${device} (exit ${status})" ;;
  esac
  [[ "$fstype" == ext4 ]] || die "${device} (${DATA_VOLUME_ID}) holds ${fstype}, not the ext4 this host made"
  uuid="$(blkid -p -o value -s UUID "$device")"
  # nofail: a missing volume must not stop the boot (SSH stays reachable); gitlab.service has
  # RequiresMountsFor, so GitLab never starts on the empty mount point instead.
  line="UUID=${uuid} ${MOUNT_POINT} ext4 defaults,nofail,x-systemd.device-timeout=30s 0 2"
  if ! grep -qxF "$line" "$FSTAB"; then
    sed -i "\\|[[:space:]]${MOUNT_POINT}[[:space:]]|d" "$FSTAB"
    printf '%s\n' "$line" >>"$FSTAB"
    systemctl daemon-reload
  fi
  mkdir -p "$MOUNT"
  mountpoint -q "$MOUNT_POINT" || mount "$MOUNT_POINT"
  [[ "$(findmnt -n -o SOURCE --mountpoint "$MOUNT_POINT")" == "$device" ]] ||
    die "${MOUNT_POINT} is mounted from $(findmnt -n -o SOURCE --mountpoint "$MOUNT_POINT"), not from ${DATA_VOLUME_ID} (${device})"
  mkdir -p "$MOUNT/config" "$MOUNT/logs" "$MOUNT/data"
  log "${DATA_VOLUME_ID} (${device}) is mounted on ${MOUNT_POINT}"
}

# ---- version changes ---------------------------------------------------------------------------
# version_key X.Y.Z: a zero-padded key that sorts like the version.
version_key() {
  local major minor patch
  IFS=. read -r major minor patch <<<"$1"
  printf '%05d%05d%05d' "$major" "$minor" "${patch:-0}"
}

# The version the data volume last ran, "" on a new volume.
previous_version=""
read_previous_version() {
  local content
  [[ -f "$VERSION_FILE" ]] || return 0
  content="$(head -n 1 "$VERSION_FILE")"
  [[ "$content" =~ ^([0-9]+\.[0-9]+\.[0-9]+) ]] ||
    die "${VERSION_FILE} holds '${content}', not a GitLab version: check what ran on ${DATA_VOLUME_ID}"
  previous_version="${BASH_REMATCH[1]}"
}

# Refuse, before anything stops, what GitLab refuses: a downgrade, a jump across a required upgrade
# stop (GitLab's image exits in `gitlab-ctl upgrade-check`, docs.gitlab.com/update/upgrade_paths),
# GitLab 19 on a PostgreSQL older than 17 (19.x ships PostgreSQL 17 and 18 only).
check_version_change() {
  local old="$previous_version" new="$GITLAB_VERSION" stop crossed=() path pg_major
  [[ -n "$old" && "$old" != "$new" ]] || return 0
  if [[ "$(version_key "$new")" < "$(version_key "$old")" ]]; then
    die "refusing to downgrade GitLab: ${DATA_VOLUME_ID} was last run by GitLab ${old}, gitlabImageTag asks for ${new}." \
      "GitLab does not support downgrades (its database has already been migrated to ${old})." \
      "Set gitlabImageTag back to a ${old} tag or later; to go back in time, restore a backup taken on the older version."
  fi
  for stop in $GITLAB_UPGRADE_STOPS; do
    if [[ "$(version_key "$old")" < "$(version_key "${stop}.0")" && "$(version_key "${stop}.0")" < "$(version_key "${new%.*}.0")" ]]; then
      crossed+=("$stop")
    fi
  done
  if ((${#crossed[@]})); then
    path="${old}"
    for stop in "${crossed[@]}"; do path+=" -> ${stop}.x"; done
    path+=" -> ${new}"
    die "refusing to upgrade GitLab ${old} -> ${new} in one step: it crosses the required upgrade stop(s)" \
      "${crossed[*]} (docs.gitlab.com/update/upgrade_paths; GitLab's image would refuse to start)." \
      "Upgrade one stop per pulumi up: set gitlabImageTag to the latest ${crossed[0]}.x patch (gitlab/gitlab-ce:${crossed[0]}.<patch>-ce.0)," \
      "run pulumi up (it waits for the background migrations), then the next. Path: ${path}. Nothing was stopped."
  fi
  if [[ "${new%%.*}" -ge 19 && -f "$PG_VERSION_FILE" ]]; then
    pg_major="$(head -n 1 "$PG_VERSION_FILE")"
    if [[ "$pg_major" =~ ^[0-9]+$ ]] && ((pg_major < 17)); then
      die "refusing to start GitLab ${new} on PostgreSQL ${pg_major}: GitLab 19 requires PostgreSQL 17 and ships no" \
        "older server. GitLab 18.11 upgrades its database on start unless that failed (docker logs gitlab):" \
        "with gitlabImageTag on 18.11, run 'sudo docker exec gitlab gitlab-ctl pg-upgrade -V 17' on the GitLab host" \
        "(it needs free space for a second copy of the database), then pulumi up again. Nothing was stopped."
    fi
  fi
  log "upgrading GitLab ${old} -> ${new} (no required upgrade stop in between)"
}

# The documented check (gitlabhq doc/update/background_migrations.md): zero rows not finished (3)
# or finalized (6) means every batched background migration is done; 4 is failed.
migrations_count() {
  docker exec gitlab gitlab-psql -At -c "SELECT count(*) FROM batched_background_migrations WHERE $1"
}

wait_for_background_migrations() {
  local timeout="$1" when="$2" deadline pending failed next_heartbeat=0
  deadline=$((SECONDS + timeout))
  log "waiting up to ${timeout}s for GitLab's batched background migrations (${when})"
  while :; do
    failed="$(migrations_count 'status = 4' 2>/dev/null)" || failed=""
    pending="$(migrations_count 'status NOT IN (3, 6)' 2>/dev/null)" || pending=""
    if [[ "$failed" =~ ^[0-9]+$ ]] && ((failed > 0)); then
      die "${failed} batched background migration(s) failed: retry them in Admin > Monitoring > Background" \
        "migrations (docs.gitlab.com/update/background_migrations), then run pulumi up again"
    fi
    if [[ "$pending" == 0 ]]; then
      log "every batched background migration has finished"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      die "batched background migrations still running after ${timeout}s (${pending:-unknown} left): GitLab is" \
        "up; watch Admin > Monitoring > Background migrations and run pulumi up again, which waits for them"
    fi
    if ((SECONDS >= next_heartbeat)); then
      log "${pending:-?} batched background migration(s) still running (Admin > Monitoring > Background migrations)"
      next_heartbeat=$((SECONDS + 60))
    fi
    sleep 15
  done
}

run_pre_upgrade_hook() {
  if [[ -x "$PRE_UPGRADE_HOOK" ]]; then
    log "running ${PRE_UPGRADE_HOOK} ${previous_version} ${GITLAB_VERSION}"
    "$PRE_UPGRADE_HOOK" "$previous_version" "$GITLAB_VERSION" || die "${PRE_UPGRADE_HOOK} failed; GitLab was not stopped"
  else
    log "no pre-upgrade hook (${PRE_UPGRADE_HOOK}): no backup is taken before this upgrade; the data volume is kept"
  fi
}

# ---- files -----------------------------------------------------------------------------------
changed=0
# put FILE MODE: stdin into FILE, the mode set before any content lands; changed=1 if it differs.
put() {
  local file="$1" mode="$2" tmp
  mkdir -p "$(dirname "$file")"
  tmp="$(mktemp "${file}.XXXXXX")"
  chmod "$mode" "$tmp"
  cat >"$tmp"
  if [[ -f "$file" ]] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
    chmod "$mode" "$file"
    return 0
  fi
  mv -f "$tmp" "$file"
  changed=1
  log "wrote ${file}"
}

# put_text FILE MODE TEXT
put_text() {
  put "$1" "$2" < <(printf '%s' "$3")
}

write_unit() {
  put "$UNIT" 0644 <<'UNIT'
[Unit]
Description=GitLab CE in Docker (configured by Pulumi: /etc/gitops/gitlab.env, /etc/gitops/gitlab-omnibus.rb)
Documentation=https://docs.gitlab.com/install/docker/
Requires=docker.service
After=docker.service network-online.target
Wants=network-online.target
# Never on the bare mount point: GitLab would initialise a new, empty instance on the root disk.
RequiresMountsFor=/srv/gitlab

[Service]
EnvironmentFile=/etc/gitops/gitlab.env
ExecStartPre=-/usr/bin/docker rm --force gitlab
# Port 80 is not published: GitLab is HTTPS only. The configuration is loaded through
# GITLAB_OMNIBUS_CONFIG (the image evaluates it as Ruby before /etc/gitlab/gitlab.rb).
ExecStart=/usr/bin/docker run --rm --name gitlab --shm-size 256m \
  --publish 443:443 --publish 5050:5050 --publish 2222:22 \
  --volume /srv/gitlab/config:/etc/gitlab \
  --volume /srv/gitlab/logs:/var/log/gitlab \
  --volume /srv/gitlab/data:/var/opt/gitlab \
  --volume /etc/gitops/gitlab-omnibus.rb:/etc/gitops/gitlab-omnibus.rb:ro \
  --env "GITLAB_OMNIBUS_CONFIG=from_file('/etc/gitops/gitlab-omnibus.rb')" \
  ${GITLAB_IMAGE}
ExecStop=/usr/bin/docker stop --time 120 gitlab
Restart=always
RestartSec=10
TimeoutStopSec=150

[Install]
WantedBy=multi-user.target
UNIT
}

# ---- readiness -------------------------------------------------------------------------------
# Reconfigured (the root password is seeded), healthy (/-/readiness answers only from localhost:
# gitlab_rails['monitoring_whitelist']), and served through the published ports with the
# Pulumi-made certificate: the web UI on 443, the registry on 5050 (401 = asks for a token).
reconfigured() {
  grep -qF 'gitlab Reconfigured!' < <(docker logs gitlab 2>&1)
}

gitlab_serving() {
  reconfigured &&
    docker exec gitlab curl --fail --silent --output /dev/null --max-time 10 --cacert "$CONTAINER_CA" \
      --resolve "${host}:443:127.0.0.1" "https://${host}/-/readiness" 2>/dev/null &&
    curl --fail --silent --output /dev/null --max-time 10 --cacert "$HOST_CA" \
      --resolve "${host}:443:127.0.0.1" "https://${host}/users/sign_in" &&
    [[ "$(curl --silent --output /dev/null --write-out '%{http_code}' --max-time 10 --cacert "$HOST_CA" \
      --resolve "${host}:5050:127.0.0.1" "https://${host}:5050/v2/")" == 401 ]]
}

diagnose() {
  log "systemctl status gitlab:"
  systemctl --no-pager status gitlab.service >&2 || true
  log "last 80 lines of the container's output (docker logs gitlab):"
  docker logs --tail 80 gitlab >&2 2>&1 || true
  log "services inside the container (gitlab-ctl status):"
  docker exec gitlab gitlab-ctl status >&2 || true
  log "more: journalctl -u gitlab; ${MOUNT_POINT}/logs/reconfigure/ (first start), ${MOUNT_POINT}/logs/gitlab-rails/, ${MOUNT_POINT}/logs/nginx/"
}

wait_for_gitlab() {
  local timeout="$1" deadline=$((SECONDS + $1)) next_heartbeat=$((SECONDS + 60))
  log "waiting up to ${timeout}s for https://${host} (a first start or an upgrade runs migrations: ~5-15 minutes)"
  until gitlab_serving; do
    if ((SECONDS >= deadline)); then
      diagnose
      die "GitLab did not become ready within ${timeout}s"
    fi
    if ((SECONDS >= next_heartbeat)); then
      log "still waiting for https://${host} ($((deadline - SECONDS))s left)"
      next_heartbeat=$((SECONDS + 60))
    fi
    sleep 10
  done
}

# ---- main ------------------------------------------------------------------------------------
mount_data_volume
read_previous_version
check_version_change
upgrading=0
if [[ -n "$previous_version" && "$previous_version" != "$GITLAB_VERSION" ]]; then
  upgrading=1
fi

# Read by the Omnibus configuration only at the database's first seed; deleted once GitLab is up.
put "$CONFIG_DIR/pulumi_initial_root_password" 0600 <"$workdir/root_password"

# The certificate and its key: nginx serves them for the web UI and the registry, and re-reads them
# on a HUP ("Update the SSL certificates", omnibus-gitlab doc/settings/ssl/_index.md).
changed=0
put_text "$CONFIG_DIR/ssl/${host}.crt" 0644 "$GITLAB_TLS_CERT"
put "$CONFIG_DIR/ssl/${host}.key" 0600 <"$workdir/tls_key"
tls_changed="$changed"

# Everything else the container reads at start: a change restarts it.
changed=0
put_text "$CONFIG_DIR/trusted-certs/gitops-gitlab-ca.crt" 0644 "$GITLAB_CA_PEM"
# The image generates only missing host keys (omnibus-gitlab docker/assets/init-container) and sshd_config
# names exactly these files: placed before the first start, they fix the identity in known_hosts.
for type in ed25519 ecdsa rsa; do
  key="$CONFIG_DIR/ssh_host_${type}_key"
  put "$key" 0600 <"$workdir/ssh_host_${type}_key"
  put "${key}.pub" 0644 < <(ssh-keygen -y -f "$key")
done
put_text "$GITOPS_DIR/gitlab.env" 0644 "GITLAB_IMAGE=${GITLAB_IMAGE}
"
put_text "$OMNIBUS_CONFIG" 0644 "$GITLAB_OMNIBUS_CONFIG"
write_unit
restart_needed="$changed"

# Trust for the host: its own curl checks, and dockerd pulling job images from the registry
# (Docker reads /etc/docker/certs.d/<host>:<port>/ca.crt at each pull, no restart).
put_text "$HOST_CA" 0644 "$GITLAB_CA_PEM"
put_text "${HOST_ROOT}/etc/docker/certs.d/${host}:5050/ca.crt" 0644 "$GITLAB_CA_PEM"

if ! docker image inspect "$GITLAB_IMAGE" >/dev/null 2>&1; then
  log "pulling ${GITLAB_IMAGE}"
  retry 3 timeout 1800 docker pull --quiet "$GITLAB_IMAGE"
fi

systemctl daemon-reload
systemctl enable --quiet gitlab.service
running=0
systemctl is-active --quiet gitlab.service && running=1
if ((restart_needed)) || ((!running)); then
  if ((upgrading)); then
    if ((running)) && gitlab_serving; then
      # GitLab's upgrade rule: the previous version's background migrations finish first.
      wait_for_background_migrations 3600 "before leaving GitLab ${previous_version}"
    else
      log "GitLab ${previous_version} is not serving: its background migrations cannot be checked before the upgrade"
    fi
    run_pre_upgrade_hook
    printf '%s %s\n' "$previous_version" "$GITLAB_VERSION" >"$UPGRADE_MARKER"
  fi
  log "starting GitLab (${GITLAB_IMAGE})"
  systemctl restart gitlab.service
elif ((tls_changed)); then
  log "only the TLS certificate changed: reloading nginx and the registry (gitlab-ctl hup), GitLab keeps running"
  docker exec gitlab gitlab-ctl hup nginx
  docker exec gitlab gitlab-ctl hup registry
else
  log "GitLab's configuration is unchanged"
fi

wait_for_gitlab 1800
if [[ -f "$UPGRADE_MARKER" ]]; then
  wait_for_background_migrations 3600 "after the upgrade $(<"$UPGRADE_MARKER")"
  rm -f "$UPGRADE_MARKER"
fi
rm -f "$CONFIG_DIR/pulumi_initial_root_password" "$CONFIG_DIR/initial_root_password"
log "GitLab ${GITLAB_VERSION} serves https://${host} (registry ${host}:5050, git over SSH on port 2222)"
