#!/usr/bin/env bash
# Step (GitLab host, over SSH): mount the data volume; run the GitLab release gitlabImageTag names on
# it, walking GitLab's required upgrade stops when the version changes; keep TLS, SSH host keys, the
# root password seed, GitLab's configuration and its systemd unit in place; wait until GitLab serves
# HTTPS, the registry and the API with the certificate Pulumi issued.
#
# A version change, one hop per required upgrade stop crossed (each stop's pinned release comes in
# GITLAB_UPGRADE_STOP_TAGS), then the wanted release. For each hop, everything that can refuse runs
# before any file changes: the image pull, the PostgreSQL check, the running version's background
# migrations, the pre-upgrade hook. Then the files point at the hop's image, GitLab restarts, the
# step waits until it serves and its background migrations finish, and checks that the data volume
# now runs that version. A refusal (a downgrade, a stop with no pinned release, GitLab 19 on
# PostgreSQL < 17) comes before anything stops; a failure stops at that hop, and a re-run starts from
# what the data volume runs.
#
# GitLab restarts when a file it reads at start changed, when it is not running, or when it runs
# another image than the hop's. A renewed certificate only reloads nginx, which terminates TLS for
# the web UI (443) and the registry (5050): whether to reload is decided by comparing the certificate
# nginx serves with the file, so a failed reload is retried by the next run.
# stdin (secret): `<name> <base64>` lines (components/gitlab_config.py secret_bundle): tls_key,
#   ssh_host_ed25519_key, ssh_host_ecdsa_key, ssh_host_rsa_key (OpenSSH format), root_password,
#   registry_backup_password, registry_restore_password (the registry database's backup roles).
# env (public): GITLAB_HOSTNAME, GITLAB_IMAGE, GITLAB_VERSION (the image's x.y.z), GITLAB_UPGRADE_STOPS
#   (required upgrade stops, "x.y x.y ..."), GITLAB_UPGRADE_STOP_TAGS (the pinned gitlab/gitlab-ce tag
#   of the stops the step may walk through; both from components/versions.py), DATA_VOLUME_ID,
#   GITLAB_CA_PEM, GITLAB_TLS_CERT (server certificate then CA), GITLAB_OMNIBUS_CONFIG (Ruby,
#   components/gitlab_config.py).
#   HOST_ROOT is empty on a host: the step's behaviour tests point it at a scratch directory.
# Idempotent: a file is rewritten only when its content differs; a second run changes nothing.
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
for name in tls_key ssh_host_ed25519_key ssh_host_ecdsa_key ssh_host_rsa_key root_password \
  registry_backup_password registry_restore_password; do
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
GITLAB_UPGRADE_STOP_TAGS="${GITLAB_UPGRADE_STOP_TAGS:-}"
[[ "$GITLAB_UPGRADE_STOP_TAGS" =~ ^([0-9]+\.[0-9]+\.[0-9]+-ce\.[0-9]+( |$))*$ ]] ||
  die "GITLAB_UPGRADE_STOP_TAGS ${GITLAB_UPGRADE_STOP_TAGS} is not a list of gitlab/gitlab-ce tags (x.y.z-ce.n)"
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
# Full chain, server certificate first: the name Omnibus looks for (components/gitlab_config.py ssl_paths).
CERTIFICATE="$CONFIG_DIR/ssl/${host}.crt"
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
# The hook run before GitLab is stopped for an upgrade (with the old and new versions): with backups
# on, components/backups.py installs it to take a GitLab backup first (userdata/backup/gitlab-backup.sh).
PRE_UPGRADE_HOOK="$GITOPS_DIR/hooks/pre-gitlab-upgrade"
# Held by userdata/backup/gitlab-backup.sh while it runs (a restart would kill its gitlab-backup create)
# and by userdata/backup/gitlab-restore.sh (an operator's restore, which restarts GitLab itself).
BACKUP_LOCK="${HOST_ROOT}/var/lib/gitops/backups/gitlab-backup.lock"
# Created by an operator (by hand, on the host) to upgrade although the running version's background
# migrations cannot be checked (it cannot start); used by one upgrade, then removed.
SKIP_MIGRATION_CHECK="$GITOPS_DIR/gitlab-upgrade-skip-migration-check"

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

# image_version gitlab/gitlab-ce:19.2.4-ce.0 -> 19.2.4
image_version() {
  local tag="${1##*:}"
  printf '%s' "${tag%%-ce.*}"
}

# The version the data volume last ran, "" on a new volume.
previous_version=""
read_previous_version() {
  local content
  previous_version=""
  [[ -f "$VERSION_FILE" ]] || return 0
  content="$(head -n 1 "$VERSION_FILE")"
  [[ "$content" =~ ^([0-9]+\.[0-9]+\.[0-9]+) ]] ||
    die "${VERSION_FILE} holds '${content}', not a GitLab version: check what ran on ${DATA_VOLUME_ID}"
  previous_version="${BASH_REMATCH[1]}"
}

# stop_tag X.Y: the pinned gitlab/gitlab-ce tag of required stop X.Y, empty when there is none.
stop_tag() {
  local tag
  for tag in $GITLAB_UPGRADE_STOP_TAGS; do
    if [[ "$(image_version "$tag")" == "$1".* ]]; then
      printf '%s' "$tag"
      return 0
    fi
  done
}

# GitLab 19 ships PostgreSQL 17 and 18 only: refuse to start it on an older database.
check_postgresql() {
  local version="$1" pg_major
  [[ "${version%%.*}" -ge 19 && -f "$PG_VERSION_FILE" ]] || return 0
  pg_major="$(head -n 1 "$PG_VERSION_FILE")"
  if [[ "$pg_major" =~ ^[0-9]+$ ]] && ((pg_major < 17)); then
    die "refusing to start GitLab ${version} on PostgreSQL ${pg_major}: GitLab 19 requires PostgreSQL 17 and ships no" \
      "older server. GitLab 18.11 upgrades its database on start unless that failed (docker logs gitlab):" \
      "with gitlabImageTag on 18.11, run 'sudo docker exec gitlab gitlab-ctl pg-upgrade -V 17' on the GitLab host" \
      "(it needs free space for a second copy of the database), then pulumi up again. Nothing was stopped."
  fi
}

# The images to run, in order: the pinned release of every required upgrade stop between what the
# data volume last ran and GITLAB_VERSION, then GITLAB_IMAGE. Refuses, before anything stops, what
# GitLab refuses (a downgrade; GitLab's image exits in `gitlab-ctl upgrade-check` across a stop,
# docs.gitlab.com/update/upgrade_paths) and a stop this program pins no release for.
hops=()
plan_upgrade() {
  local old="$previous_version" new="$GITLAB_VERSION" stop tag crossed=() unpinned=() path
  hops=()
  if [[ -n "$old" && "$old" != "$new" ]]; then
    if [[ "$(version_key "$new")" < "$(version_key "$old")" ]]; then
      die "refusing to downgrade GitLab: ${DATA_VOLUME_ID} was last run by GitLab ${old}, gitlabImageTag asks for ${new}." \
        "GitLab does not support downgrades (its database has already been migrated to ${old})." \
        "Set gitlabImageTag back to a ${old} tag or later; to go back in time, restore a backup taken on the older version."
    fi
    path="$old"
    for stop in $GITLAB_UPGRADE_STOPS; do
      if [[ "$(version_key "$old")" < "$(version_key "${stop}.0")" && "$(version_key "${stop}.0")" < "$(version_key "${new%.*}.0")" ]]; then
        crossed+=("$stop")
        tag="$(stop_tag "$stop")"
        if [[ -n "$tag" ]]; then
          hops+=("gitlab/gitlab-ce:${tag}")
          path+=" -> $(image_version "$tag")"
        else
          unpinned+=("$stop")
          path+=" -> ${stop}.x"
        fi
      fi
    done
    path+=" -> ${new}"
    if ((${#unpinned[@]})); then
      die "refusing to upgrade GitLab ${old} -> ${new}: it crosses the required upgrade stop(s) ${crossed[*]}" \
        "(docs.gitlab.com/update/upgrade_paths; those GitLab enforces make its image refuse to start), and this program pins no" \
        "release for ${unpinned[*]} (components/versions.py GITLAB_UPGRADE_STOP_TAGS), so it cannot walk the path itself." \
        "Set gitlabImageTag to the latest ${unpinned[0]}.x patch (gitlab/gitlab-ce:${unpinned[0]}.<patch>-ce.0), run pulumi up" \
        "(it waits for the background migrations), then the next. Path: ${path}. Nothing was stopped."
    fi
    if ((${#crossed[@]})); then
      log "upgrading GitLab ${old} -> ${new} through the required upgrade stop(s) ${crossed[*]}, one restart each: ${path}"
    else
      log "upgrading GitLab ${old} -> ${new} (no required upgrade stop in between)"
    fi
  fi
  hops+=("$GITLAB_IMAGE")
  # The first hop's database is known now: refuse before anything is pulled or stopped.
  if [[ -n "$old" && "$old" != "$(image_version "${hops[0]}")" ]]; then
    check_postgresql "$(image_version "${hops[0]}")"
  fi
}

# The documented checks (gitlabhq doc/update/background_migrations.md): batched background
# migrations are done when no row is outside finished (3) and finalized (6); 4 is failed
# (lib/gitlab/database/background_migration/batched_migration.rb). PostgreSQL alone answers these.
migrations_count() {
  docker exec gitlab gitlab-psql -At -c "SELECT count(*) FROM batched_background_migrations WHERE $1"
}

# The same page's check of the older, Sidekiq-based background migrations (the last ones were
# scheduled in GitLab 15.0): `Gitlab::BackgroundMigration.remaining`, read through a Rails runner
# (about a minute), so only once the batched ones are done. A release without the method has none.
SIDEKIQ_MIGRATIONS_PROGRAM='m = defined?(Gitlab::BackgroundMigration) && Gitlab::BackgroundMigration; puts(m && m.respond_to?(:remaining) ? m.remaining : 0)'
sidekiq_migrations_remaining() {
  local output
  output="$(timeout 600 docker exec gitlab gitlab-rails runner -e production "$SIDEKIQ_MIGRATIONS_PROGRAM" 2>/dev/null)" || return 1
  output="$(printf '%s\n' "$output" | tail -n 1)"
  [[ "$output" =~ ^[0-9]+$ ]] || return 1
  printf '%s' "$output"
}

# wait_for_background_migrations TIMEOUT WHEN: poll every 15 s until every background migration has
# finished (0). Dies on a failed migration, or when some are still running at the deadline (bounded
# by time and by polls). Returns 2 when PostgreSQL never answered in the first 20 polls (~5 minutes).
wait_for_background_migrations() {
  local timeout="$1" when="$2" deadline polls=0 max_polls answered=0 pending failed remaining
  local next_heartbeat=0
  deadline=$((SECONDS + timeout))
  max_polls=$((timeout / 15 + 1))
  log "waiting up to ${timeout}s for GitLab's background migrations (${when})"
  while :; do
    polls=$((polls + 1))
    pending=""
    remaining=""
    if failed="$(migrations_count 'status = 4' 2>/dev/null)" && [[ "$failed" =~ ^[0-9]+$ ]] &&
      pending="$(migrations_count 'status NOT IN (3, 6)' 2>/dev/null)" && [[ "$pending" =~ ^[0-9]+$ ]]; then
      answered=1
      if ((failed > 0)); then
        die "${failed} batched background migration(s) failed: retry them in Admin > Monitoring > Background" \
          "migrations (docs.gitlab.com/update/background_migrations), then run pulumi up again"
      fi
      if ((pending == 0)); then
        if remaining="$(sidekiq_migrations_remaining)" && ((remaining == 0)); then
          log "every background migration has finished (batched and Sidekiq-based)"
          return 0
        fi
        pending="${remaining:-an unknown number of} Sidekiq-based"
      fi
    else
      pending=""
      if ((!answered && polls >= 20)); then
        return 2
      fi
    fi
    if ((SECONDS >= deadline || polls >= max_polls)); then
      die "background migrations still running after ${timeout}s (${pending:-unknown} left): GitLab is" \
        "up; watch Admin > Monitoring > Background migrations and run pulumi up again, which waits for them"
    fi
    if ((SECONDS >= next_heartbeat)); then
      log "${pending:-?} background migration(s) still running (Admin > Monitoring > Background migrations)"
      next_heartbeat=$((SECONDS + 60))
    fi
    sleep 15
  done
}

container_running() {
  [[ "$(docker inspect --format '{{.State.Running}}' gitlab 2>/dev/null)" == true ]]
}

# GitLab's upgrade rule: the running version's background migrations finish before it is left.
# Only PostgreSQL must answer (not the web UI or the registry). When it cannot be asked (GitLab is
# not running, or its database does not answer), the upgrade is refused unless the operator
# created SKIP_MIGRATION_CHECK on the host, which is used once.
wait_before_upgrade() {
  local old="$1" new="$2" status=0 why
  if container_running; then
    wait_for_background_migrations 3600 "before leaving GitLab ${old}" || status=$?
    ((status == 0)) && return 0
    why="GitLab ${old}'s database did not answer (docker exec gitlab gitlab-psql)"
  else
    why="GitLab ${old} is not running on this host"
  fi
  if [[ -f "$SKIP_MIGRATION_CHECK" ]]; then
    rm -f "$SKIP_MIGRATION_CHECK"
    log "WARNING: ${why}: upgrading to ${new} without checking its background migrations, as ${SKIP_MIGRATION_CHECK} asked (now removed)"
    return 0
  fi
  die "${why}, so its background migrations cannot be checked before the upgrade to ${new} (an unfinished one" \
    "makes the new version's database migrations fail). Start GitLab ${old} (pulumi up with gitlabImageTag on a ${old}" \
    "tag, or 'sudo systemctl start gitlab' on the host) and run pulumi up again; or, if ${old} cannot run, run" \
    "'sudo touch ${SKIP_MIGRATION_CHECK#"$HOST_ROOT"}' on the GitLab host and pulumi up again (used once). Nothing was stopped."
}

run_pre_upgrade_hook() {
  local old="$1" new="$2"
  if [[ -x "$PRE_UPGRADE_HOOK" ]]; then
    log "running ${PRE_UPGRADE_HOOK} ${old} ${new}"
    "$PRE_UPGRADE_HOOK" "$old" "$new" || die "${PRE_UPGRADE_HOOK} failed; GitLab was not stopped"
  else
    log "no pre-upgrade hook (${PRE_UPGRADE_HOOK}): no backup is taken before this upgrade; the data volume is kept"
  fi
}

# take_backup_lock / release_backup_lock: no GitLab backup runs while the files change and GitLab
# restarts (bounded wait; giving up comes before any file changes, so a re-run restarts as needed).
# Released after the restart, so the next hop's pre-upgrade backup can take it.
BACKUP_LOCK_FD=""
take_backup_lock() {
  install -d -m 0755 "$(dirname "$BACKUP_LOCK")"
  exec {BACKUP_LOCK_FD}>"$BACKUP_LOCK"
  flock --nonblock "$BACKUP_LOCK_FD" && return 0
  log "a GitLab backup or restore is running: waiting for it before GitLab's files change and it restarts"
  with_heartbeat "waiting for the GitLab backup or restore (lock ${BACKUP_LOCK})" \
    flock --wait "${BACKUP_LOCK_WAIT_SECONDS:-10800}" "$BACKUP_LOCK_FD" ||
    die "a GitLab backup or restore still holds ${BACKUP_LOCK} after ${BACKUP_LOCK_WAIT_SECONDS:-10800}s; nothing was" \
      "changed and GitLab was not restarted (journalctl -u gitops-gitlab-backup; a restore runs in an operator's" \
      "shell: pgrep -af gitlab-restore). Run pulumi up again once it has finished"
}
release_backup_lock() { exec {BACKUP_LOCK_FD}>&-; }

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

# write_files IMAGE: everything GitLab reads, pointing at IMAGE; restart_needed=1 when a file it
# reads at start changed. The certificate and its key are not among those: nginx re-reads them on a
# HUP (ensure_certificate_served), so a renewal does not restart GitLab.
restart_needed=0
write_files() {
  local image="$1" type key
  # Read by the Omnibus configuration only at the database's first seed; deleted once GitLab is up.
  put "$CONFIG_DIR/pulumi_initial_root_password" 0600 <"$workdir/root_password"
  put_text "$CERTIFICATE" 0644 "$GITLAB_TLS_CERT"
  put "$CONFIG_DIR/ssl/${host}.key" 0600 <"$workdir/tls_key"

  changed=0
  # GitLab's own CA, trusted by the services that call GitLab's external URL: KAS (the agent
  # server) among them. A reconfigure alone would not restart KAS for a new certificate
  # (add_trusted_certs notifies puma, pages and workhorse only): a change restarts the container.
  put_text "$CONFIG_DIR/trusted-certs/gitops-gitlab-ca.crt" 0644 "$GITLAB_CA_PEM"
  # Read by the Omnibus configuration at every reconfigure (gitlab_rails backup_registry_password,
  # restore_registry_password): the registry database's roles for gitlab-backup.
  put "$CONFIG_DIR/pulumi_registry_backup_password" 0600 <"$workdir/registry_backup_password"
  put "$CONFIG_DIR/pulumi_registry_restore_password" 0600 <"$workdir/registry_restore_password"
  # The image generates only missing host keys (omnibus-gitlab docker/assets/init-container) and
  # sshd_config names exactly these files: placed before the first start, they fix the identity in
  # known_hosts.
  for type in ed25519 ecdsa rsa; do
    key="$CONFIG_DIR/ssh_host_${type}_key"
    put "$key" 0600 <"$workdir/ssh_host_${type}_key"
    put "${key}.pub" 0644 < <(ssh-keygen -y -f "$key")
  done
  put_text "$GITOPS_DIR/gitlab.env" 0644 "GITLAB_IMAGE=${image}
"
  put_text "$OMNIBUS_CONFIG" 0644 "$GITLAB_OMNIBUS_CONFIG"
  write_unit
  restart_needed="$changed"

  # Trust for the host: its own curl checks, and dockerd pulling job images from the registry
  # (Docker reads /etc/docker/certs.d/<host>:<port>/ca.crt at each pull, no restart).
  put_text "$HOST_CA" 0644 "$GITLAB_CA_PEM"
  put_text "${HOST_ROOT}/etc/docker/certs.d/${host}:5050/ca.crt" 0644 "$GITLAB_CA_PEM"
  systemctl daemon-reload
  systemctl enable --quiet gitlab.service
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

# ---- the certificate nginx serves ---------------------------------------------------------------
# nginx terminates TLS for the web UI (443) and, in the same process, for the registry (5050:
# registry_nginx, omnibus-gitlab files/gitlab-cookbooks/registry/templates/default/
# nginx-gitlab-registry.conf.erb `listen ... ssl`, `ssl_certificate`); the registry itself listens on
# plain HTTP at 127.0.0.1:5000 (libraries/registry.rb registry_http_addr). So `gitlab-ctl hup nginx`
# loads a renewed certificate for both ("Update the SSL certificates", doc/settings/ssl/_index.md;
# nginx re-reads its configuration and certificates on HUP). Whether to reload is decided from what
# is served, not from whether the file just changed: a reload that failed once is retried next run.
# openssl comes with ca-certificates (install-docker.sh).
served_fingerprint() {
  timeout 15 openssl s_client -connect "127.0.0.1:$1" -servername "$host" </dev/null 2>/dev/null |
    openssl x509 -noout -fingerprint -sha256 2>/dev/null || true
}

certificate_served() {
  local wanted
  wanted="$(openssl x509 -in "$CERTIFICATE" -noout -fingerprint -sha256)" || die "${CERTIFICATE} is not a PEM certificate"
  [[ "$(served_fingerprint 443)" == "$wanted" && "$(served_fingerprint 5050)" == "$wanted" ]]
}

reload_nginx() {
  log "nginx serves another certificate than ${CERTIFICATE} on 443 or 5050: reloading it (gitlab-ctl hup nginx), GitLab keeps running"
  docker exec gitlab gitlab-ctl hup nginx || log "gitlab-ctl hup nginx failed (exit $?)"
}

# Before waiting for GitLab: reload a stale certificate if nginx answers at all (an expired one
# would fail the readiness checks, which trust only the stack's CA).
reload_stale_certificate() {
  [[ -n "$(served_fingerprint 443)" ]] || return 0
  certificate_served || reload_nginx
}

# Once GitLab serves: the certificate served on 443 and 5050 must be the file's, or the step fails.
ensure_certificate_served() {
  local attempt
  certificate_served && return 0
  reload_nginx
  for attempt in 1 2 3 4 5 6 7 8 9 10 11 12; do
    if certificate_served; then
      log "nginx serves the current certificate on 443 and 5050 (after ${attempt} check(s))"
      return 0
    fi
    sleep 5
  done
  die "nginx still serves another certificate than ${CERTIFICATE} on 443 or 5050 after gitlab-ctl hup nginx:" \
    "see ${MOUNT_POINT}/logs/nginx/error.log; run pulumi up again (it compares and reloads again), or restart GitLab" \
    "('sudo systemctl restart gitlab' on the host)"
}

# ---- one release on the data volume ------------------------------------------------------------
pull_image() {
  if ! docker image inspect "$1" >/dev/null 2>&1; then
    log "pulling $1"
    retry 3 timeout 1800 docker pull --quiet "$1"
  fi
}

# GitLab runs IMAGE: the service is active and its container was created from IMAGE.
gitlab_runs() {
  systemctl is-active --quiet gitlab.service &&
    [[ "$(docker inspect --format '{{.Config.Image}}' gitlab 2>/dev/null)" == "$1" ]]
}

# Older gitlab/gitlab-ce images are ~4 GB each on the root disk: keep only the one running.
prune_gitlab_images() {
  local image
  while read -r image; do
    [[ -n "$image" && "$image" != "$1" ]] || continue
    if docker image rm "$image" >/dev/null 2>&1; then
      log "removed the unused image ${image}"
    else
      log "could not remove the unused image ${image} (docker image rm); it only takes disk space"
    fi
  done < <(docker image ls gitlab/gitlab-ce --format '{{.Repository}}:{{.Tag}}' 2>/dev/null || true)
}

# run_release IMAGE: make the data volume run IMAGE (one hop of an upgrade, or the steady state).
run_release() {
  local image="$1" version upgrading=0
  version="$(image_version "$image")"
  [[ -n "$previous_version" && "$previous_version" != "$version" ]] && upgrading=1

  # Everything that can refuse or fail comes before any file changes: a re-run finds the host as it was.
  pull_image "$image"
  if ((upgrading)); then
    check_postgresql "$version"
    wait_before_upgrade "$previous_version" "$version"
    run_pre_upgrade_hook "$previous_version" "$version"
  fi

  take_backup_lock
  write_files "$image"
  if ((upgrading || restart_needed)) || ! gitlab_runs "$image"; then
    # Set until the new version's background migrations have finished: a re-run waits for them.
    if ((upgrading)); then
      printf '%s %s\n' "$previous_version" "$version" >"$UPGRADE_MARKER"
    fi
    log "starting GitLab (${image})"
    systemctl restart gitlab.service
  else
    log "GitLab's configuration is unchanged"
    reload_stale_certificate
  fi
  # Held until GitLab answers: a new container's reconfigure writes the backup's credentials file
  # (/opt/gitlab/etc/gitlab-backup/env, in the image layer, not a volume), so a backup let in
  # earlier would find none.
  wait_for_gitlab 1800
  release_backup_lock
  ensure_certificate_served
  if [[ -f "$UPGRADE_MARKER" ]]; then
    local status=0
    wait_for_background_migrations 3600 "after the upgrade $(<"$UPGRADE_MARKER")" || status=$?
    ((status == 0)) || die "GitLab ${version} serves, but its database did not answer (docker exec gitlab gitlab-psql):" \
      "its background migrations cannot be checked; run pulumi up again, which waits for them"
    rm -f "$UPGRADE_MARKER"
  fi
  # The Rails VERSION file the container's reconfigure copies to the data volume
  # (omnibus-gitlab files/gitlab-cookbooks/gitlab/recipes/gitlab-rails.rb): the version now running.
  read_previous_version
  [[ "$previous_version" == "$version" ]] ||
    die "GitLab serves, but ${VERSION_FILE} says ${previous_version:-nothing}, not ${version}: the container did not" \
      "finish its reconfigure on ${image} (docker logs gitlab; ${MOUNT_POINT}/logs/reconfigure/). Run pulumi up again."
  prune_gitlab_images "$image"
}

# ---- main ------------------------------------------------------------------------------------
mount_data_volume
read_previous_version
plan_upgrade
for hop in "${hops[@]}"; do
  run_release "$hop"
done
rm -f "$CONFIG_DIR/pulumi_initial_root_password" "$CONFIG_DIR/initial_root_password"
log "GitLab ${GITLAB_VERSION} serves https://${host} (registry ${host}:5050, git over SSH on port 2222)"
