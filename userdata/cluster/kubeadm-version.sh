#!/usr/bin/env bash
# Step (control plane, over SSH): wait for the boot script, then print the installed kubeadm
# version (e.g. v1.36.5) on stdout. components/cluster.py renders the ClusterConfiguration's
# kubernetesVersion from it, so the control plane runs exactly the patch the packages installed.
# Parameters: KUBERNETES_MINOR. Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail
require_env KUBERNETES_MINOR
wait_for_cloud_init

version="$(kubeadm version -o short)"
[[ "$version" == "v${KUBERNETES_MINOR}."* ]] ||
  die "kubeadm ${version} is installed, but the configured minor is ${KUBERNETES_MINOR}"
systemctl is-active --quiet containerd || die "containerd is not running: journalctl -u containerd"
log "kubeadm ${version} and containerd ready"
printf '%s\n' "$version"
