#!/usr/bin/env bash
# Step (GitLab host, over SSH): mount the data volume; place TLS, SSH host keys and the root password
# seed; write GitLab's configuration and systemd unit; (re)start GitLab when any of it changed; wait
# until it serves HTTPS, the registry and the API; delete the root password seed.
# stdin (secret): `<name> <base64>` lines (components/gitlab_config.py secret_bundle): tls_key,
#   ssh_host_ed25519_key, ssh_host_ecdsa_key, ssh_host_rsa_key (OpenSSH format), root_password.
# env (public): GITLAB_HOSTNAME, GITLAB_IMAGE, DATA_VOLUME_ID, GITLAB_CA_PEM, GITLAB_TLS_CERT
#   (server certificate then CA), GITLAB_OMNIBUS_CONFIG (Ruby, components/gitlab_config.py).
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

require_env GITLAB_HOSTNAME GITLAB_IMAGE DATA_VOLUME_ID GITLAB_CA_PEM GITLAB_TLS_CERT GITLAB_OMNIBUS_CONFIG
[[ "$GITLAB_HOSTNAME" =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$ ]] || die "GITLAB_HOSTNAME ${GITLAB_HOSTNAME} is not a DNS name"
[[ "$DATA_VOLUME_ID" =~ ^vol-[0-9a-f]+$ ]] || die "DATA_VOLUME_ID ${DATA_VOLUME_ID} is not an EBS volume id"
[[ "$GITLAB_IMAGE" =~ ^gitlab/gitlab-ce:[0-9A-Za-z._-]+$ ]] || die "GITLAB_IMAGE ${GITLAB_IMAGE} is not a gitlab/gitlab-ce tag"
host="$GITLAB_HOSTNAME"

wait_for_cloud_init
command -v docker >/dev/null || die "Docker is not installed: see /var/log/cloud-init-output.log (install-docker)"

# Host paths. Container paths: /srv/gitlab/config = /etc/gitlab, logs = /var/log/gitlab, data = /var/opt/gitlab.
MOUNT=/srv/gitlab
CONFIG_DIR="$MOUNT/config"
OMNIBUS_CONFIG=/etc/gitops/gitlab-omnibus.rb
HOST_CA=/etc/gitops/gitlab-ca.crt
CONTAINER_CA=/etc/gitlab/trusted-certs/gitops-gitlab-ca.crt

# ---- the data volume -------------------------------------------------------------------------
# On Nitro instances an EBS volume is an NVMe device whose serial is the volume id without its dash;
# udev links it as /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol… (AWS "Amazon EBS and NVMe").
# Xen instance types show the attachment's /dev/sdf as /dev/xvdf.
data_device() {
  local candidate
  for candidate in "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${DATA_VOLUME_ID/-/}" /dev/xvdf; do
    if [[ -b "$candidate" ]]; then
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
  line="UUID=${uuid} ${MOUNT} ext4 defaults,nofail,x-systemd.device-timeout=30s 0 2"
  if ! grep -qxF "$line" /etc/fstab; then
    sed -i "\\|[[:space:]]${MOUNT}[[:space:]]|d" /etc/fstab
    printf '%s\n' "$line" >>/etc/fstab
    systemctl daemon-reload
  fi
  mkdir -p "$MOUNT"
  mountpoint -q "$MOUNT" || mount "$MOUNT"
  [[ "$(findmnt -n -o SOURCE --mountpoint "$MOUNT")" == "$device" ]] ||
    die "${MOUNT} is mounted from $(findmnt -n -o SOURCE --mountpoint "$MOUNT"), not from ${DATA_VOLUME_ID} (${device})"
  mkdir -p "$MOUNT/config" "$MOUNT/logs" "$MOUNT/data"
  log "${DATA_VOLUME_ID} (${device}) is mounted on ${MOUNT}"
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
  put /etc/systemd/system/gitlab.service 0644 <<'UNIT'
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
  log "more: journalctl -u gitlab; ${MOUNT}/logs/reconfigure/ (first start), ${MOUNT}/logs/gitlab-rails/, ${MOUNT}/logs/nginx/"
}

wait_for_gitlab() {
  local timeout="$1" deadline=$((SECONDS + $1))
  log "waiting up to ${timeout}s for https://${host} (a first start runs migrations: ~5-10 minutes)"
  until gitlab_serving; do
    if ((SECONDS >= deadline)); then
      diagnose
      die "GitLab did not become ready within ${timeout}s"
    fi
    sleep 10
  done
}

# ---- main ------------------------------------------------------------------------------------
mount_data_volume

# Read by the Omnibus configuration only at the database's first seed; deleted once GitLab is up.
put "$CONFIG_DIR/pulumi_initial_root_password" 0600 <"$workdir/root_password"

changed=0
cert_path="$CONFIG_DIR/ssl/${host}.crt"
put_text "$cert_path" 0644 "$GITLAB_TLS_CERT"
put "$CONFIG_DIR/ssl/${host}.key" 0600 <"$workdir/tls_key"
put_text "$CONFIG_DIR/trusted-certs/gitops-gitlab-ca.crt" 0644 "$GITLAB_CA_PEM"
# The image generates only missing host keys (omnibus-gitlab docker/assets/wrapper) and sshd_config
# names exactly these files: placed before the first start, they fix the identity in known_hosts.
for type in ed25519 ecdsa rsa; do
  key="$CONFIG_DIR/ssh_host_${type}_key"
  put "$key" 0600 <"$workdir/ssh_host_${type}_key"
  put "${key}.pub" 0644 < <(ssh-keygen -y -f "$key")
done
put_text /etc/gitops/gitlab.env 0644 "GITLAB_IMAGE=${GITLAB_IMAGE}
"
put_text "$OMNIBUS_CONFIG" 0644 "$GITLAB_OMNIBUS_CONFIG"
write_unit
restart_needed="$changed"

# Trust for the host: its own curl checks, and dockerd pulling job images from the registry
# (Docker reads /etc/docker/certs.d/<host>:<port>/ca.crt at each pull, no restart).
put_text "$HOST_CA" 0644 "$GITLAB_CA_PEM"
put_text "/etc/docker/certs.d/${host}:5050/ca.crt" 0644 "$GITLAB_CA_PEM"

if ! docker image inspect "$GITLAB_IMAGE" >/dev/null 2>&1; then
  log "pulling ${GITLAB_IMAGE}"
  retry 3 timeout 1800 docker pull --quiet "$GITLAB_IMAGE"
fi

systemctl daemon-reload
systemctl enable --quiet gitlab.service
if ((restart_needed)) || ! systemctl is-active --quiet gitlab.service; then
  log "starting GitLab (${GITLAB_IMAGE})"
  systemctl restart gitlab.service
else
  log "GitLab's configuration is unchanged"
fi

wait_for_gitlab 1800
rm -f "$CONFIG_DIR/pulumi_initial_root_password" "$CONFIG_DIR/initial_root_password"
log "GitLab serves https://${host} (registry ${host}:5050, git over SSH on port 2222)"
