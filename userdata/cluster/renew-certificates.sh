#!/usr/bin/env bash
# Renew kubeadm's certificates on this control plane when the first of them expires in less than
# RENEW_BEFORE_DAYS days, then print the earliest expiry (RFC 3339) on stdout.
# kubeadm's certificates last one year (certificateValidityPeriod); `kubeadm certs renew all`
# renews them with the existing CA, and the control-plane static pods must then be restarted,
# which kubectl cannot do: the documented way is to move each manifest out of
# /etc/kubernetes/manifests, wait for the kubelet's fileCheckFrequency (20 s) to stop the pod, and
# move it back (kubernetes.io "Certificate Management with kubeadm", manual certificate renewal).
# Installed by certificates.sh as /usr/local/lib/gitops/renew-kubeadm-certificates (common.sh in
# front); run daily by gitops-kubeadm-certs.timer and by each run of that step. Idempotent.
# Parameters: RENEW_BEFORE_DAYS. stdout: the expiry alone; kubeadm's output goes to stderr.
set -euo pipefail
stdout_is_the_result
require_env RENEW_BEFORE_DAYS
ROOT="${FS_ROOT:-}"
MANIFESTS="${ROOT}/etc/kubernetes/manifests"
PARKED="${ROOT}/etc/kubernetes/manifests-restarting" # outside the directory the kubelet watches
FILE_CHECK_SECONDS="${FILE_CHECK_SECONDS:-20}"       # KubeletConfiguration fileCheckFrequency default
export KUBECONFIG=/etc/kubernetes/admin.conf
# One kubeadm at a time on this host: the daily timer, the certificates step and the upgrade step
# (control-plane-upgrade.sh) all move or rewrite the static pod manifests.
hold_lock "${ROOT}/run/gitops-kubeadm.lock" "another kubeadm run on this control plane (an upgrade or a renewal)"

# A run interrupted while the static pods were parked put them back first.
unpark() {
  if compgen -G "${PARKED}/*.yaml" >/dev/null; then
    mv -f "$PARKED"/*.yaml "$MANIFESTS"/
    log "control-plane static pod manifests moved back to ${MANIFESTS}"
  fi
}
unpark

# earliest: "<seconds left> <expiry> <name>" of the kubeadm-managed certificate that expires first.
# CAs are not in the list (10 years; the cluster CA is Pulumi's). Fails on anything it does not
# recognise (output.kubeadm.k8s.io/v1alpha3: residualTime in whole seconds, expirationDate RFC 3339).
earliest() {
  kubeadm certs check-expiration -o json | python3 -c '
import datetime, json, sys
certificates = [c for c in json.load(sys.stdin).get("certificates", []) if not c.get("externallyManaged") and not c.get("missing")]
if not certificates:
    sys.exit("kubeadm certs check-expiration lists no kubeadm-managed certificate")
first = min(certificates, key=lambda c: int(c["residualTime"]))
expiry = datetime.datetime.fromisoformat(first["expirationDate"]).astimezone(datetime.UTC)
print(int(first["residualTime"]), expiry.strftime("%Y-%m-%dT%H:%M:%SZ"), first["name"])
'
}

# check_expiry: sets left, expiry and name, or stops the program before anything is renewed or
# restarted. A failing check must never read as "expires now": that would renew the certificates
# and restart etcd and the API server on every run.
check_expiry() {
  local info
  info="$(earliest)" ||
    die "could not read the certificates' expiry (kubeadm certs check-expiration -o json failed or printed an unknown format): nothing renewed, nothing restarted"
  read -r left expiry name <<<"$info"
  [[ "$left" =~ ^-?[0-9]+$ && "$expiry" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$ && -n "$name" ]] ||
    die "unexpected expiry check result '${info}': nothing renewed, nothing restarted"
}
control_plane_stopped() { [[ -z "$(crictl ps --quiet --name 'kube-apiserver|kube-controller-manager|kube-scheduler|etcd')" ]]; }
api_answers() { kubectl get --raw /readyz >/dev/null 2>&1; }

restart_static_pods() {
  trap unpark EXIT
  install -d -m 0700 "$PARKED"
  mv -f "$MANIFESTS"/*.yaml "$PARKED"/
  log "control-plane static pods parked; waiting for the kubelet to stop them"
  sleep "$FILE_CHECK_SECONDS"
  wait_until 180 "the control-plane containers to stop" control_plane_stopped
  unpark
  trap - EXIT
  wait_until 300 "the API server to answer again" api_answers
}

check_expiry
if ((left < RENEW_BEFORE_DAYS * 86400)); then
  log "${name} expires ${expiry}, in less than ${RENEW_BEFORE_DAYS} days: renewing kubeadm's certificates"
  with_heartbeat "renewing certificates" kubeadm certs renew all >&2
  restart_static_pods
  check_expiry
fi
log "first certificate to expire: ${name}, ${expiry} ($((left / 86400)) days)"
result "$expiry"
