#!/usr/bin/env bash
# Step (first control-plane node, over SSH; controlPlaneCount 3): the API's stable name moves to the
# load balancer only once the load balancer forwards to a ready API server. Registering a target
# returns before the target is healthy (terraform-provider-aws internal/service/elbv2/
# target_group_attachment.go: RegisterTargets, no wait), and a network load balancer routes to a new
# target once it passes its initial health checks (AWS "Health checks for Network Load Balancer
# target groups"): on a running cluster going from 1 to 3 control-plane nodes, moving the name
# earlier would time out every new connection to it (kubelets, GitLab, this node's admin.conf) for
# that while. A request through each of its addresses proves the listener, the security groups and
# the route from a target back to its own load balancer (client IP preservation off); that a target
# answers (an NLB whose targets are all unhealthy sends to all of them, "fail-open").
# A node where kubeadm init has not run yet (a new stack) passes at once: nothing calls the name
# before that, and kubeadm init itself waits for the name.
# Changes nothing. Parameters: API_HOST (api.<cluster>.internal), API_PORT, LOAD_BALANCER_HOST (its
# DNS name), WAIT_SECONDS.
# Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail
require_env API_HOST API_PORT LOAD_BALANCER_HOST WAIT_SECONDS
k8s="${FS_ROOT:-}/etc/kubernetes"

if [[ ! -f "${k8s}/admin.conf" ]]; then
  log "kubeadm init has not run on this node yet: no client of ${API_HOST} exists, the name can move now"
  exit 0
fi

# The API server's certificate names API_HOST (kubeadm's controlPlaneEndpoint): TLS is checked
# against the cluster CA, with the connection sent to one of the load balancer's addresses instead of
# the name (curl --connect-to leaves SNI and certificate checks on API_HOST). Every address the load
# balancer's name returns (one per zone) must forward: a client may be given any of them.
through_every_address() {
  local addresses address
  addresses="$(getent ahostsv4 "$LOAD_BALANCER_HOST" | awk '{ print $1 }' | sort -u)" || return 1
  [[ -n "$addresses" ]] || return 1
  for address in $addresses; do
    curl --silent --show-error --fail --max-time 5 --output /dev/null \
      --cacert "${k8s}/pki/ca.crt" \
      --connect-to "${API_HOST}:${API_PORT}:${address}:${API_PORT}" \
      "https://${API_HOST}:${API_PORT}/readyz" || return 1
  done
}
wait_until "$WAIT_SECONDS" "the API server through every address of the load balancer ${LOAD_BALANCER_HOST} (its target's health: 'aws elbv2 describe-target-health'; its security groups)" through_every_address
log "the load balancer forwards ${API_HOST}:${API_PORT} to a ready API server: the name can move to it"
