#!/usr/bin/env bash
# Step (control plane, over SSH): the upgrade gate, then this control plane's upgrade to the
# configured Kubernetes version; prints the version the control plane runs afterwards (stdout).
# Gate, before anything changes: kubeadm upgrades one minor at a time and Kubernetes has no
# downgrade (kubeadm cmd/kubeadm/app/phases/upgrade/policy.go; kubernetes.io "Upgrading kubeadm
# clusters"), so a skipped minor or a lower version is refused, naming the allowed next step.
# Target: TARGET_VERSION (kubernetesPatch) if set; otherwise, for the next minor, its newest patch;
# for the running minor, the running patch (nothing upgrades by itself).
# Upgrade, per kubernetes.io "Upgrading kubeadm clusters": repository to the target minor, kubeadm
# to the target, `kubeadm upgrade plan`, `kubeadm upgrade apply` (which also renews this node's
# certificates), drain, kubelet/kubectl, restart the kubelet, Ready, uncordon.
# Idempotent and resumable: each phase checks what already runs (kubelet, cordon). `kubeadm
# upgrade apply` swaps etcd and the API server before the controller manager, the scheduler, the
# kubeadm-config ConfigMap and the add-ons (kube-proxy, CoreDNS), so the API server's version cannot
# tell a finished apply from an interrupted one: a marker (/etc/gitops/kubernetes-upgrade-to, the
# target) is written before it and removed after it succeeded, and while it is there the next run
# applies that target again, which kubeadm documents as the way back from an interrupted upgrade
# (kubernetes.io "Upgrading kubeadm clusters", "Recovering from a failure state": idempotent).
# stdout: the version alone (the kubernetesVersion output, parsed strictly); apt's and kubeadm's
# progress goes to stderr.
# Parameters: NODE_NAME, TARGET_MINOR, TARGET_VERSION (may be empty), DRAIN_TIMEOUT_SECONDS,
# TIMEOUT_SECONDS. Runs with userdata/lib/common.sh and userdata/cluster/packages.sh in front.
set -euo pipefail
stdout_is_the_result
require_env NODE_NAME TARGET_MINOR DRAIN_TIMEOUT_SECONDS TIMEOUT_SECONDS
export KUBECONFIG=/etc/kubernetes/admin.conf
DRAINED_FOR=gitops/drained-for-upgrade # annotation: we cordoned this node, we uncordon it
MARKER="${FS_ROOT:-}/etc/gitops/kubernetes-upgrade-to" # an apply that started, and its target

server_version() { kubectl version -o json 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'; }
node_field() { kubectl get node "$NODE_NAME" -o "jsonpath=$1"; }
node_ready() { [[ "$(node_field '{.status.conditions[?(@.type=="Ready")].status}')" == "True" ]]; }
kubelet_at() { [[ "$(node_field '{.status.nodeInfo.kubeletVersion}')" == "$1" ]]; }
ready_at_target() { node_ready && kubelet_at "$target"; }

# One kubeadm at a time on this host: the certificate renewal (its daily timer) parks and restores
# the static pod manifests that `kubeadm upgrade apply` replaces.
hold_lock "${FS_ROOT:-}/run/gitops-kubeadm.lock" "the certificate renewal on this control plane"
wait_until "$TIMEOUT_SECONDS" "the API server" server_version >/dev/null
running="$(server_version)"
IFS=. read -r run_major run_minor run_patch <<<"${running#v}"
IFS=. read -r want_major want_minor <<<"$TARGET_MINOR"
IFS=. read -r _ _ want_patch <<<"${TARGET_VERSION:-0.0.0}"
started="$(cat "$MARKER" 2>/dev/null || true)"
if [[ -n "$started" ]]; then
  # It passed this gate when it started: finish it, to that version, before anything else.
  started_minor="${started#v}"
  started_minor="${started_minor%.*}"
  if [[ "$started_minor" != "$TARGET_MINOR" || (-n "${TARGET_VERSION:-}" && "v${TARGET_VERSION}" != "$started") ]]; then
    die "an upgrade of ${NODE_NAME} to ${started} was interrupted and must be finished first: set kubernetesVersion to ${started_minor} and kubernetesPatch to ${started#v} (or leave it empty), run 'pulumi up', then change them"
  fi
  target="$started"
else
  if ((want_major != run_major || want_minor < run_minor)); then
    die "refusing kubernetesVersion ${TARGET_MINOR}: the cluster runs ${running} and Kubernetes cannot be downgraded. Set kubernetesVersion back to ${run_major}.${run_minor}"
  fi
  if ((want_minor > run_minor + 1)); then
    die "refusing kubernetesVersion ${TARGET_MINOR}: the cluster runs ${running} and kubeadm upgrades one minor at a time. Set kubernetesVersion to ${run_major}.$((run_minor + 1)), run 'pulumi up', then set ${TARGET_MINOR}"
  fi
  if ((want_minor == run_minor)) && [[ -n "${TARGET_VERSION:-}" ]] && ((want_patch < run_patch)); then
    die "refusing kubernetesPatch ${TARGET_VERSION}: the cluster runs ${running} and Kubernetes cannot be downgraded. Set kubernetesPatch to ${running#v} or empty"
  fi
  if [[ -n "${TARGET_VERSION:-}" ]]; then
    target="v${TARGET_VERSION}"
  elif ((want_minor == run_minor)); then
    target="$running"
  else
    use_kubernetes_minor "$TARGET_MINOR"
    newest="$(kubernetes_deb_version "$TARGET_MINOR")"
    target="v${newest%%-*}"
  fi
fi

packages() { # packages PACKAGE...: at the target version, from the target's repository
  local version="${target#v}" deb
  use_kubernetes_minor "${version%.*}"
  # Not inside the argument list: there a missing package's `die` would end only the substitution.
  deb="$(kubernetes_deb_version "$version")"
  install_kubernetes "$deb" "$@"
}

drain_for_upgrade() {
  if [[ "$(node_field '{.spec.unschedulable}')" != "true" ]]; then
    kubectl annotate node "$NODE_NAME" "${DRAINED_FOR}=${target}" --overwrite >&2
  fi
  with_heartbeat "draining ${NODE_NAME}" kubectl drain "$NODE_NAME" --ignore-daemonsets --delete-emptydir-data \
    --timeout="${DRAIN_TIMEOUT_SECONDS}s" >&2 || die "could not drain ${NODE_NAME} within ${DRAIN_TIMEOUT_SECONDS}s"
}

if [[ "$running" != "$target" || -n "$started" ]]; then
  if [[ -n "$started" ]]; then
    log "finishing the interrupted upgrade of the control plane to ${target} (the API server runs ${running})"
  else
    log "upgrading the control plane from ${running} to ${target}"
  fi
  packages kubeadm
  [[ "$(installed_version kubeadm)" == "$target" ]] || die "kubeadm $(installed_version kubeadm) installed, ${target} wanted"
  if [[ -z "$started" ]]; then
    with_heartbeat "checking the upgrade plan" kubeadm upgrade plan "$target" >&2
    install -d -m 0755 "$(dirname "$MARKER")"
    printf '%s\n' "$target" >"$MARKER"
  fi
  with_heartbeat "upgrading the control plane to ${target}" kubeadm upgrade apply "$target" --yes >&2
  rm -f "$MARKER"
fi
# The running kubelet decides, not the installed package: a run cut between the install and the
# restart leaves the new binary on disk under the old process.
if [[ "$(installed_version kubelet)" != "$target" ]] || ! kubelet_at "$target"; then
  drain_for_upgrade
  log "kubelet and kubectl to ${target}"
  packages kubeadm kubelet kubectl
  systemctl daemon-reload
  systemctl restart kubelet
fi
if [[ -n "$(node_field "{.metadata.annotations.${DRAINED_FOR}}")" ]]; then
  wait_until "$TIMEOUT_SECONDS" "${NODE_NAME} Ready at ${target}" ready_at_target
  kubectl uncordon "$NODE_NAME" >&2
  kubectl annotate node "$NODE_NAME" "${DRAINED_FOR}-" >&2
fi
log "the control plane runs ${target}"
result "$target"
