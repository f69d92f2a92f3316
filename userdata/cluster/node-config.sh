#!/usr/bin/env bash
# Step (every node, over SSH): apply the node material, everything that may change after boot,
# without a reboot: GitLab registry trust for containerd, containerd's settings, crictl's
# endpoints, the operator's SSH key. User data ran once, at first boot; this step runs whenever the
# material changes (components/kubeadm.py node_material).
# Idempotent: the digest of the material applied last is kept in /etc/gitops/node-material.sha256;
# the same digest means nothing to do. containerd restarts only when its config.toml changes
# (running containers survive: their shims are separate processes); registry trust needs no
# restart (containerd reads certs.d at pull time, containerd docs/hosts.md).
# Parameters: MATERIAL_DIGEST, REGISTRY_HOST, REGISTRY_CA_PEM, REGISTRY_HOSTS_TOML,
# CONTAINERD_CONFIG_PY, CRICTL_YAML, SSH_USER, OPERATOR_SSH_PUBLIC_KEY (may be empty).
# Runs with userdata/lib/common.sh and userdata/lib/operator-key.sh in front (components/remote.py).
set -euo pipefail
require_env MATERIAL_DIGEST REGISTRY_HOST REGISTRY_CA_PEM REGISTRY_HOSTS_TOML CONTAINERD_CONFIG_PY CRICTL_YAML SSH_USER
ROOT="${FS_ROOT:-}"
CERTS_D="${ROOT}/etc/containerd/certs.d"
STATE="${ROOT}/etc/gitops"
[[ "$REGISTRY_HOST" =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?:[0-9]{1,5}$ ]] || die "REGISTRY_HOST ${REGISTRY_HOST} is not <host>:<port>"

wait_for_cloud_init
stamp="${STATE}/node-material.sha256"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$MATERIAL_DIGEST" ]]; then
  log "node material ${MATERIAL_DIGEST:0:12} is applied already: nothing to do"
  exit 0
fi

# write_if_changed FILE MODE CONTENT: 0 if FILE changed.
write_if_changed() {
  local tmp
  install -d -m 0755 "$(dirname "$1")"
  tmp="$(mktemp "$1.XXXXXX")"
  printf '%s' "$3" >"$tmp"
  if cmp -s "$tmp" "$1"; then
    rm -f "$tmp"
    return 1
  fi
  chmod "$2" "$tmp"
  mv -f "$tmp" "$1"
}

log "registry trust for ${REGISTRY_HOST}"
write_if_changed "${CERTS_D}/${REGISTRY_HOST}/ca.crt" 0644 "$REGISTRY_CA_PEM" || true
write_if_changed "${CERTS_D}/${REGISTRY_HOST}/hosts.toml" 0644 "$REGISTRY_HOSTS_TOML" || true
previous="$(cat "${STATE}/registry-host" 2>/dev/null || true)"
if [[ -n "$previous" && "$previous" != "$REGISTRY_HOST" && "$previous" =~ ^[a-z0-9.-]+:[0-9]+$ ]]; then
  log "removing the trust of the former registry ${previous}"
  rm -rf "${CERTS_D:?}/${previous}"
fi
install -d -m 0755 "$STATE"
printf '%s' "$REGISTRY_HOST" >"${STATE}/registry-host"

write_if_changed "${ROOT}/etc/crictl.yaml" 0644 "$CRICTL_YAML" || true

# containerd's config.toml from its own defaults, edited by the script sent with this step.
write_if_changed "${ROOT}/usr/local/lib/gitops/cluster/containerd_config.py" 0755 "$CONTAINERD_CONFIG_PY" || true
config="$(containerd config default | python3 "${ROOT}/usr/local/lib/gitops/cluster/containerd_config.py")" ||
  die "containerd_config.py could not edit containerd's default configuration"
if write_if_changed "${ROOT}/etc/containerd/config.toml" 0644 "$config"$'\n'; then
  log "containerd's configuration changed: restarting containerd (running containers keep running)"
  systemctl restart containerd
  wait_until 60 "containerd's socket" test -S "${ROOT}/run/containerd/containerd.sock"
fi

sync_operator_ssh_key "$SSH_USER" "${OPERATOR_SSH_PUBLIC_KEY:-}"
printf '%s' "$MATERIAL_DIGEST" >"$stamp"
log "node material ${MATERIAL_DIGEST:0:12} applied"
