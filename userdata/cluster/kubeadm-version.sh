#!/usr/bin/env bash
# Step (control plane, over SSH): wait for the boot script, then print the installed kubeadm
# version (e.g. v1.36.5) on stdout. components/cluster_bootstrap.py renders the
# ClusterConfiguration's kubernetesVersion from it, so `kubeadm init` runs exactly the patch the
# packages installed. Takes no parameter on purpose: it runs once per control-plane instance and
# never again when kubernetesVersion changes later (that is the upgrade step's business).
# Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail
stdout_is_the_result
wait_for_cloud_init

version="$(kubeadm version -o short)"
[[ "$version" =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "kubeadm reports ${version}, not an exact version"
systemctl is-active --quiet containerd || die "containerd is not running: journalctl -u containerd"
log "kubeadm ${version} and containerd ready"
result "$version"
