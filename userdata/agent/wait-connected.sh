#!/usr/bin/env bash
# Step (control plane, over SSH): wait (bounded) until GitLab reports its agent for Kubernetes
# connected; on timeout fail with agentk's pods and logs and GitLab's last answer.
#
# A Ready agentk Deployment proves nothing (agentk's readiness probe does not check KAS), so the
# step asks GitLab itself: GraphQL `project.clusterAgent(name).connections`, which GitLab answers by
# asking KAS for the agent's live connections (Resolvers::Kas::AgentConnectionsResolver). Any
# connection means agentk reached KAS with its token and KAS reached GitLab's internal API, i.e.
# every TLS trust on the way (agentk -> KAS: kasCaCert; KAS -> GitLab: /etc/gitlab/trusted-certs) works.
# stdin (secret): a GitLab API token of a user who may administer the project's clusters (the
#   project's Owner): `admin_cluster` is what ClusterAgentType requires. Never on a command line:
#   curl reads it from a config file in a private directory, removed on exit.
# env (public): GITLAB_URL (https://<host>), GITLAB_CA_PEM, PROJECT_PATH, AGENT_NAME, AGENT_NAMESPACE,
#   POD_SELECTOR (agentk's pods), AGENTK_VERSION (the tag the chart runs), TIMEOUT_SECONDS;
#   AGENT_TOKEN_ID only makes a new token re-run the step.
# Idempotent: it only reads. Runs with userdata/lib/common.sh in front (components/remote.py).
set -euo pipefail

# Read the token first, before any other command can touch stdin.
owner_pat="$(cat)"
[[ -n "$owner_pat" ]] || die "stdin is empty: expected the GitLab API token that reads the agent's connections"
[[ "$owner_pat" =~ ^[A-Za-z0-9_.-]+$ ]] || die "the GitLab API token on stdin has unexpected characters"

require_env GITLAB_URL GITLAB_CA_PEM PROJECT_PATH AGENT_NAME AGENT_NAMESPACE POD_SELECTOR AGENTK_VERSION TIMEOUT_SECONDS
[[ "$GITLAB_URL" =~ ^https://[a-z0-9.-]+(:[0-9]+)?$ ]] || die "GITLAB_URL ${GITLAB_URL} is not https://<host>"
[[ "$PROJECT_PATH" =~ ^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+$ ]] || die "PROJECT_PATH ${PROJECT_PATH} is not a project path"
[[ "$AGENT_NAME" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || die "AGENT_NAME ${AGENT_NAME} is not an agent name"
[[ "$TIMEOUT_SECONDS" =~ ^[0-9]+$ ]] || die "TIMEOUT_SECONDS ${TIMEOUT_SECONDS} is not a number of seconds"
export KUBECONFIG=/etc/kubernetes/admin.conf

umask 077
workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
printf '%s\n' "$GITLAB_CA_PEM" >"$workdir/ca.crt"
# GraphQL takes a personal access token as a bearer token (docs.gitlab.com/api/graphql/getting_started).
printf 'header = "Authorization: Bearer %s"\n' "$owner_pat" >"$workdir/auth.conf"
unset owner_pat
# The query, with the project and agent as variables (no quoting of values into the query text).
python3 - "$PROJECT_PATH" "$AGENT_NAME" >"$workdir/query.json" <<'PY'
import json
import sys

query = (
    "query($project: ID!, $agent: String!) { project(fullPath: $project) { clusterAgent(name: $agent) "
    "{ id connections { nodes { connectedAt metadata { version podName podNamespace } } } } } }"
)
json.dump({"query": query, "variables": {"project": sys.argv[1], "agent": sys.argv[2]}}, sys.stdout)
PY

# agent_state: one line, `connected <details>`, `waiting <why>` or `refused <why>`, from GitLab's answer.
agent_state() {
  local status
  status="$(curl --silent --show-error --max-time 20 --cacert "$workdir/ca.crt" --config "$workdir/auth.conf" \
    --header 'Content-Type: application/json' --data-binary "@$workdir/query.json" \
    --output "$workdir/answer.json" --write-out '%{http_code}' "${GITLAB_URL}/api/graphql" 2>"$workdir/curl.err")" ||
    status=000
  python3 - "$status" "$workdir/answer.json" "$workdir/curl.err" <<'PY'
import json
import sys

status, answer, error = sys.argv[1], sys.argv[2], sys.argv[3]
if status == "000":
    print("waiting GitLab did not answer:", open(error).read().strip()[:300])
    sys.exit()
if status in ("401", "403"):
    print(f"refused GitLab answered HTTP {status}: the API token on stdin expired, was revoked or lacks the api scope")
    sys.exit()
try:
    document = json.load(open(answer))
except ValueError:
    print(f"waiting GitLab answered HTTP {status} without JSON (starting or restarting?)")
    sys.exit()
errors = [e.get("message", "?") for e in document.get("errors") or []]
project = (document.get("data") or {}).get("project")
agent = (project or {}).get("clusterAgent")
if errors:
    # KAS unreachable from GitLab: "resource not available" (AgentConnectionsResolver).
    print("waiting GitLab reports:", "; ".join(errors)[:300])
elif project is None:
    print("refused GitLab shows no project at this path to this token (a project Owner's token is needed)")
elif agent is None:
    print("waiting GitLab shows no agent of this name in the project yet")
else:
    nodes = (agent.get("connections") or {}).get("nodes") or []
    if nodes:
        pods = ", ".join(
            f"{(n.get('metadata') or {}).get('podName', '?')} ({(n.get('metadata') or {}).get('version', '?')})"
            for n in nodes
        )
        print(f"connected {len(nodes)} connection(s): {pods}")
    else:
        print("waiting the agent is registered, but no agentk is connected to GitLab's agent server")
PY
}

diagnose() {
  log "agentk's pods (kubectl -n ${AGENT_NAMESPACE} get pods -l ${POD_SELECTOR}):"
  kubectl -n "$AGENT_NAMESPACE" get pods -l "$POD_SELECTOR" -o wide >&2 || true
  log "agentk's logs (last 200 lines per pod):"
  kubectl -n "$AGENT_NAMESPACE" logs -l "$POD_SELECTOR" --all-containers --prefix --tail=200 >&2 || true
  log "what the messages mean: 'x509: certificate signed by unknown authority' from agentk: kasCaCert is not GitLab's CA;" \
    "'101 but got 301': the KAS address lacks its trailing slash; 'Decompressor is not installed' or" \
    "'Failed to register agent pod': agentk and GitLab versions differ too much. KAS's own log on the GitLab host:" \
    "/srv/gitlab/logs/gitlab-kas/current (an x509 error there: GitLab's CA is not in /srv/gitlab/config/trusted-certs)."
}

log "waiting up to ${TIMEOUT_SECONDS}s for GitLab to report the agent ${PROJECT_PATH}:${AGENT_NAME} connected (agentk ${AGENTK_VERSION})"
deadline=$((SECONDS + TIMEOUT_SECONDS))
next=$((SECONDS + HEARTBEAT_SECONDS))
until state="$(agent_state)" && [[ "$state" == connected* ]]; do
  if [[ "$state" == refused* ]]; then
    die "${state#refused }"
  fi
  if ((SECONDS >= deadline)); then
    diagnose
    die "GitLab did not report the agent connected within ${TIMEOUT_SECONDS}s; last answer: ${state#waiting }"
  fi
  if ((SECONDS >= next)); then
    log "still waiting: ${state#waiting }"
    next=$((SECONDS + HEARTBEAT_SECONDS))
  fi
  sleep "$POLL_SECONDS"
done
log "the agent is connected: ${state#connected }"
