#!/usr/bin/env bash
# Step (control plane, over SSH): keep kubeadm's certificates renewed without a human. Installs the
# renewal program and a systemd timer that runs it daily (Persistent: a day missed while the host
# was off runs at boot), then runs it once now and prints the earliest expiry on stdout (the
# clusterCertificatesExpireAt output). The day is one of the step's triggers: the first `pulumi up`
# of a day checks again. Idempotent: files are rewritten only when they differ.
# Parameters: RENEW_BEFORE_DAYS, RENEWAL_PROGRAM (common.sh + renew-certificates.sh).
# stdout: the expiry alone (the program parses it strictly); everything else goes to stderr.
# Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail
stdout_is_the_result
require_env RENEW_BEFORE_DAYS RENEWAL_PROGRAM
ROOT="${FS_ROOT:-}"
PROGRAM=/usr/local/lib/gitops/renew-kubeadm-certificates
UNIT=gitops-kubeadm-certs

install_file() { # install_file PATH MODE CONTENT
  install -d -m 0755 "$(dirname "${ROOT}$1")"
  if [[ "$(cat "${ROOT}$1" 2>/dev/null || true)" != "$3" ]]; then
    printf '%s\n' "$3" >"${ROOT}$1"
    chmod "$2" "${ROOT}$1"
  fi
}

install_file "$PROGRAM" 0755 "$RENEWAL_PROGRAM"
install_file "/etc/systemd/system/${UNIT}.service" 0644 "[Unit]
Description=Renew kubeadm certificates that expire within ${RENEW_BEFORE_DAYS} days
After=kubelet.service

[Service]
Type=oneshot
Environment=STEP_NAME=${UNIT} RENEW_BEFORE_DAYS=${RENEW_BEFORE_DAYS}
ExecStart=${PROGRAM}"
install_file "/etc/systemd/system/${UNIT}.timer" 0644 "[Unit]
Description=Daily check of kubeadm's certificates

[Timer]
OnCalendar=daily
RandomizedDelaySec=1h
Persistent=true

[Install]
WantedBy=timers.target"
systemctl daemon-reload
systemctl enable --now "${UNIT}.timer" >&2
log "timer ${UNIT}.timer active; checking now"
expiry="$(RENEW_BEFORE_DAYS="$RENEW_BEFORE_DAYS" "${ROOT}${PROGRAM}")"
result "$expiry"
