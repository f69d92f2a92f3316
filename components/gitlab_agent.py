"""GitLab's agent for Kubernetes as data: names, the agent's configuration file, agentk's chart values.

Pure functions over plain values, tested without Pulumi; ``components/gitlab_integration.py`` feeds
them Outputs. Upstream sources of every value: REFERENCE.md section 5 (the agent) and section 1 (pins).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import yaml

from components import versions

# The tutorial's cluster name in GitLab ("k8s cluster"), as an agent name: agent names are RFC 1123
# DNS labels, unique in their project (gitlabhq doc/user/clusters/agent/install/_index.md).
AGENT_NAME = "k8s-cluster"
# The agent is registered in the app project itself: its jobs are the only ones that deploy, the
# configuration file lives next to the code it deploys, and nothing else needs a second project.
AGENT_CONFIG_PATH = f".gitlab/agents/{AGENT_NAME}/config.yaml"
# agentk runs as the tutorial's ServiceAccount, which a pod can only use in its own namespace: the
# chart's release, its token Secret, its CA ConfigMap and its leader-election Lease live there too.
SERVICE_ACCOUNT = "gitlab-admin"
NAMESPACE = "kube-system"
RELEASE = "gitlab-agent"  # contains the chart's name: the chart's fullname is the release name
TOKEN_SECRET = "gitlab-agent-token"  # config.secretName: the chart mounts it, agentk reads key `token`
TOKEN_SECRET_KEY = "token"
# agentk's pods, by the chart's selector labels (templates/_helpers.tpl gitlab-agent.selectorLabels).
POD_SELECTOR = f"app.kubernetes.io/name={versions.GITLAB_AGENT_CHART},app.kubernetes.io/instance={RELEASE}"
# A new agent token restarts agentk's pods (agentk reads --token-file when it starts; with
# config.secretName the chart adds no checksum of its own): the rollout step sets this pod-template
# annotation to the token's id (userdata/agent/agentk-rollout.sh). Not a chart value: the id of a
# token being replaced is unknown during preview, and helm.v4.Chart registers no children at all
# when a value is unknown (pulumi-kubernetes provider/pkg/provider/helm/v4/chart.go Construct).
TOKEN_ID_ANNOTATION = "gitops/agent-token-id"
# The push pipeline's deployment job (apps/shark-app/ci/push-agent.gitlab-ci.yml): only it gets the
# agent's context in CI, and only on protected branches.
DEPLOY_ENVIRONMENT = "test"
# A file variable with GitLab's CA: the deployment job trusts GitLab's Kubernetes API proxy with it
# (the KUBECONFIG GitLab injects carries no CA: gitlabhq Ci::GenerateKubeconfigService).
CA_VARIABLE = "GITLAB_CA_PEM_FILE"
# agentk's resources. GitLab's chart sets none; these are the ones a hardened example of the chart's
# values uses (REFERENCE.md section 5); limits also make agentk set GOMAXPROCS/GOMEMLIMIT.
RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}}
# The chart's own suggested container securityContext (values.yaml comment), with what the policy
# pack asks of every pod: no privilege escalation, the runtime's seccomp profile.
SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def kas_address(hostname: str) -> str:
    """Where agentk dials KAS in an Omnibus GitLab: the external URL's host under /-/kubernetes-agent/.

    The trailing slash matters: nginx matches `location = /-/kubernetes-agent/` exactly, and without
    it agentk gets "expected handshake response status code 101 but got 301".
    """
    if not hostname or "/" in hostname or ":" in hostname:
        raise ValueError(f"{hostname!r} is not a host name")
    return f"wss://{hostname}/-/kubernetes-agent/"


def kube_context(project_path: str) -> str:
    """The context CI jobs get for this agent: `<agent project full path>:<agent name>`."""
    return f"{project_path}:{AGENT_NAME}"


def agent_config(project_path: str, operators_project_path: str | None = None) -> str:
    """`.gitlab/agents/<name>/config.yaml`: who may use the agent, read by KAS from the default branch.

    ci_access: the app project's jobs in the environment `test` on a protected branch (the push
    pipeline's `deployment` job), as the agent's own identity (`access_as: agent`, the only mode GitLab
    CE keeps: it drops ci_job/impersonate entries). An explicit entry for the agent's own project
    replaces GitLab's implicit access for that project's jobs (Authorizations::CiAccess::Finder), so
    no other job of the project (unit tests, builds) sees the cluster.

    user_access (kubernetesDashboard only, ``operators_project_path``): GitLab's dashboard for
    Kubernetes and its Kubernetes API proxy, for Developer+ members of that private project only, as
    the agent's identity (CE has no other). GitLab allows a proxied request when the user may
    `use_k8s_proxies` on any listed project (Clusters::Agents::AuthorizeProxyUserService), which
    instance admins may on every project. Without the block it refuses every user, admins included.
    """
    document: dict[str, Any] = {
        "ci_access": {
            "projects": [
                {
                    "id": project_path,
                    "access_as": {"agent": {}},
                    "environments": [DEPLOY_ENVIRONMENT],
                    "protected_branches_only": True,
                }
            ]
        },
    }
    if operators_project_path is not None:
        document["user_access"] = {"access_as": {"agent": {}}, "projects": [{"id": operators_project_path}]}
    header = (
        "# GitLab agent for Kubernetes: who may use the agent (written by Pulumi, components/gitlab_agent.py;\n"
        "# a `pulumi up` puts this file back as it is here). It acts as kube-system/gitlab-admin (cluster-admin).\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False)


def chart_values(*, hostname: str, ca_pem: str, agentk_tag: str) -> dict[str, Any]:
    """Values of GitLab's gitlab-agent chart: agentk as gitlab-admin, no RBAC of the chart's own.

    `serviceAccount.create: false` + `name` runs the pod as the tutorial's ServiceAccount;
    `rbac.create: false` drops the chart's ClusterRoleBinding to cluster-admin (gitlab-admin already has
    the tutorial's); operational container scanning is off, or the chart adds its own ServiceAccount,
    ClusterRole (get/list of every Secret), ClusterRoleBinding, Role and RoleBinding regardless of
    `rbac.create`. The token comes from the Secret this program creates (`config.secretName`), never
    a chart value (the chart would store it in its release); `config.kasCaCert` (not the removed
    `config.caCert`) makes agentk trust GitLab's CA. Every value is known during a preview once GitLab's
    host exists: nothing here depends on the agent's token (see TOKEN_ID_ANNOTATION).
    """
    if not ca_pem.strip().startswith("-----BEGIN CERTIFICATE-----"):
        raise ValueError("kasCaCert must be a PEM certificate (GitLab's CA)")
    return {
        "image": {"repository": versions.AGENTK_IMAGE_REPOSITORY, "tag": agentk_tag},
        "serviceAccount": {"create": False, "name": SERVICE_ACCOUNT},
        "rbac": {"create": False},
        "config": {
            "kasAddress": kas_address(hostname),
            "kasCaCert": ca_pem,
            "secretName": TOKEN_SECRET,
            "operational_container_scanning": {"enabled": False},
        },
        "securityContext": SECURITY_CONTEXT,
        "resources": RESOURCES,
    }


def agentk_image(agentk_tag: str) -> str:
    """The image the chart runs (`image.repository`:`image.tag`), as the rollout step compares it."""
    return f"{versions.AGENTK_IMAGE_REPOSITORY}:{agentk_tag}"


# Pod names: RFC 1123 subdomains (a Deployment's pods: <deployment>-<hash>-<suffix>).
_POD_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_PROJECT_PATH = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+$")
_AGENT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_AGENTK_TAG = re.compile(r"^v\d+\.\d+\.\d+$")


def agentk_pods(rollout_stdout: str) -> list[str]:
    """The pods the rollout step found running now (its stdout: names, comma-separated)."""
    pods = [pod for pod in rollout_stdout.strip().split(",") if pod]
    if not pods or not all(_POD_NAME.match(pod) for pod in pods):
        raise ValueError(
            f"the agentk rollout step printed {rollout_stdout.strip()!r}, not its pods' names; "
            "re-run it with `pulumi up --replace <its URN>` and read its output"
        )
    return pods


def connection_program(
    *,
    agent_id: int,
    token_id: int,
    project_path: str,
    agent_name: str,
    agentk_tag: str,
    pods: Sequence[str],
    timeout_seconds: int,
    poll_seconds: int = 5,
    heartbeat_seconds: int = 60,
) -> str:
    """The Ruby program the connection step pipes into `gitlab-rails runner -` on the GitLab host.

    It asks GitLab's agent server (KAS) for the agent's live connections the way GitLab's own API does
    (Resolvers::Kas::AgentConnectionsResolver: Gitlab::Kas::Client#get_connected_agentks_by_agent_ids,
    named get_connected_agents_by_agent_ids before GitLab renamed it), with no token at all: it runs
    inside GitLab, which signs its call to KAS itself. It waits (bounded) for a connection from one of
    ``pods``, the agentk pods that run now (the rollout step's answer: they read the current token and
    run ``agentk_tag``), whose reported agentk version, when it has one, is ``agentk_tag``: a connection
    of a pod that is gone (KAS keeps it until its stream closes) or of another version proves nothing.
    What no waiting changes ends it at once: the agent or its token is gone, the token is revoked
    (Clusters::AgentToken#active?), KAS is not configured (Gitlab::Kas::Client::ConfigurationError).
    KAS not answering (GRPC::BadStatus, e.g. while it restarts) is waited out.

    Prints one verdict line on stdout: `connected <details>`, `refused <why>` or `timeout <last state>`;
    progress goes to stderr.
    """
    problems = []
    if agent_id < 1 or token_id < 1:
        problems.append(f"agent id {agent_id} and token id {token_id} must be positive")
    if not _PROJECT_PATH.match(project_path):
        problems.append(f"{project_path!r} is not a project path")
    if not _AGENT_NAME.match(agent_name):
        problems.append(f"{agent_name!r} is not an agent name")
    if not _AGENTK_TAG.match(agentk_tag):
        problems.append(f"{agentk_tag!r} is not an agentk tag such as v19.4.1")
    if not pods or not all(_POD_NAME.match(pod) for pod in pods):
        problems.append(f"{list(pods)!r} are not pod names")
    if problems:
        raise ValueError("; ".join(problems))
    params = json.dumps(
        {
            "agent_id": agent_id,
            "token_id": token_id,
            "project_path": project_path,
            "agent_name": agent_name,
            "agentk_version": agentk_tag.removeprefix("v"),
            "pods": list(pods),
            "timeout_seconds": timeout_seconds,
            "poll_seconds": poll_seconds,
            "heartbeat_seconds": heartbeat_seconds,
        }
    )
    return _CONNECTION_PROGRAM.replace("@PARAMS@", params)


# Validated values only (connection_program), inside a quoted heredoc: nothing is interpolated.
_CONNECTION_PROGRAM = r"""# Waits (bounded) until GitLab's agent server reports a connection
# from the agentk pods that run now (components/gitlab_agent.py connection_program;
# userdata/agent/wait-connected.sh runs it).
require 'json'

params = JSON.parse(<<~'PARAMS')
  @PARAMS@
PARAMS
$stdout.sync = true
$stderr.sync = true
wanted = "#{params['project_path']}:#{params['agent_name']}"
pods = params['pods']
verdict = nil

agent = Clusters::Agent.find_by(id: params['agent_id'])
if agent.nil?
  verdict = "refused GitLab has no agent with id #{params['agent_id']} (#{wanted}): it was deleted; " \
            '`pulumi up --refresh` registers it again'
elsif "#{agent.project.full_path}:#{agent.name}" != wanted
  verdict = "refused agent #{agent.id} is #{agent.project.full_path}:#{agent.name}, not #{wanted}"
else
  token = agent.agent_tokens.find_by(id: params['token_id'])
  if token.nil?
    verdict = "refused the agent #{wanted} has no token #{params['token_id']} (deleted?): " \
              '`pulumi up --refresh` creates a new one'
  elsif !token.active?
    verdict = "refused the agent token #{params['token_id']} of #{wanted} is revoked, so agentk cannot connect: " \
              'README, Troubleshooting: a revoked agent token'
  end
end

unless verdict
  begin
    client = Gitlab::Kas::Client.new
  rescue Gitlab::Kas::Client::ConfigurationError => e
    verdict = "refused GitLab's agent server (KAS) is not usable: #{e.message}"
  end
end

unless verdict
  lookup = if client.respond_to?(:get_connected_agentks_by_agent_ids)
             :get_connected_agentks_by_agent_ids
           else
             :get_connected_agents_by_agent_ids
           end
  clock = -> { Process.clock_gettime(Process::CLOCK_MONOTONIC) }
  started = clock.call
  deadline = started + params['timeout_seconds']
  heartbeat = started + params['heartbeat_seconds']
  state = 'not asked yet'
  loop do
    begin
      seen = client.public_send(lookup, agent_ids: [agent.id]).map do |connection|
        # agent_meta: what agentk says about itself (the ConnectedAgent GraphQL type reads the same).
        # Without it a connection cannot be told apart from an old pod's: it never counts.
        meta = connection.respond_to?(:agent_meta) ? connection.agent_meta : nil
        [meta&.pod_name.to_s, meta&.version.to_s]
      end
      current = seen.select do |pod, version|
        reported = version[/\d+\.\d+\.\d+/]
        pods.include?(pod) && (reported.nil? || reported == params['agentk_version'])
      end
      described = seen.map do |pod, version|
        "#{pod.empty? ? 'a pod that does not say its name' : pod} (#{version.empty? ? 'version unknown' : version})"
      end
      unless current.empty?
        verdict = "connected #{current.size} connection(s) from the agentk pods that run now: " +
                  current.map { |pod, version| "#{pod} (#{version.empty? ? 'version unknown' : version})" }.join(', ')
        break
      end
      state = if seen.empty?
                "no agentk is connected to GitLab's agent server yet"
              else
                "GitLab's agent server reports only #{described.join(', ')}, not the pods that run now " \
                  "(#{pods.join(', ')}) with agentk v#{params['agentk_version']}"
              end
    rescue GRPC::BadStatus => e
      state = "GitLab cannot reach its agent server (KAS): #{e.class}"
    end
    now = clock.call
    if now >= deadline
      verdict = "timeout #{state}"
      break
    end
    if now >= heartbeat
      warn "still waiting (#{(now - started).round}s of #{params['timeout_seconds']}s): #{state}"
      heartbeat = now + params['heartbeat_seconds']
    end
    sleep params['poll_seconds']
  end
end

puts verdict
"""
