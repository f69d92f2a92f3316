"""GitLab's agent for Kubernetes as data: names, the agent's configuration file, agentk's chart values.

Pure functions over plain values, tested without Pulumi; ``components/gitlab_integration.py`` feeds
them Outputs. Upstream sources of every value: REFERENCE.md section 5 (the agent) and section 1 (pins).
"""

from __future__ import annotations

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
# A new agent token rolls agentk's pods: with config.secretName the chart adds no checksum of its own.
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


def agent_config(project_path: str) -> str:
    """`.gitlab/agents/<name>/config.yaml`: who may use the agent, read by KAS from the default branch.

    ci_access: the app project's jobs in the environment `test` on a protected branch (the push
    pipeline's `deployment` job), as the agent's own identity (`access_as: agent`, the only mode GitLab
    CE keeps: it drops ci_job/impersonate entries). An explicit entry for the agent's own project
    replaces GitLab's implicit access for that project's jobs (Authorizations::CiAccess::Finder), so
    no other job of the project (unit tests, builds) sees the cluster.
    user_access: members (Developer and above) of the app project see the cluster in GitLab's
    dashboard for Kubernetes, also as the agent's identity.
    """
    document = {
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
        "user_access": {"access_as": {"agent": {}}, "projects": [{"id": project_path}]},
    }
    header = (
        "# GitLab agent for Kubernetes: who may use the agent (written by Pulumi, components/gitlab_agent.py;\n"
        "# a `pulumi up` puts this file back as it is here). It acts as kube-system/gitlab-admin (cluster-admin).\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False)


def chart_values(*, hostname: str, ca_pem: str, agentk_tag: str, token_id: str) -> dict[str, Any]:
    """Values of GitLab's gitlab-agent chart: agentk as gitlab-admin, no RBAC of the chart's own.

    `serviceAccount.create: false` + `name` runs the pod as the tutorial's ServiceAccount;
    `rbac.create: false` drops the chart's ClusterRoleBinding to cluster-admin (gitlab-admin already has
    the tutorial's); operational container scanning is off, or the chart adds its own ServiceAccount,
    ClusterRole (get/list of every Secret), ClusterRoleBinding, Role and RoleBinding regardless of
    `rbac.create`. The token comes from the Secret this program creates (`config.secretName`), never
    a chart value (the chart would store it in its release); `config.kasCaCert` (not the removed
    `config.caCert`) makes agentk trust GitLab's CA.
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
        "podAnnotations": {TOKEN_ID_ANNOTATION: str(token_id)},
        "securityContext": SECURITY_CONTEXT,
        "resources": RESOURCES,
    }
