"""The step that ends `pulumi up` only once GitLab reports the agent connected (agent/wait-connected.sh).

It runs as sent (common.sh, then the step) under bash with kubectl stubbed (tests/stub_host.py) and
real curl and python3 asking a fake of GitLab's GraphQL API on 127.0.0.1 over TLS from a test CA
(tests/loopback.py): the fake answers `project.clusterAgent(name).connections` the way GitLab's
schema shapes it (Types::Clusters::AgentType, Types::Kas::AgentConnectionType).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import system_tool
from tests.loopback import Request, Server, TestCa, json_reply, serve
from tests.stub_host import StubHost

TOKEN = "glpat-owner-token-0123456789"
PROJECT = "operator/shark-application"
KUBECTL = 'case "$*" in *" logs "*) echo "agentk: x509: certificate signed by unknown authority" ;; esac\n'


def connections(*pods: str) -> dict:
    nodes = [
        {
            "connectedAt": "2026-11-30T10:00:00Z",
            "metadata": {"version": "v19.4.1", "podName": pod, "podNamespace": "kube-system"},
        }
        for pod in pods
    ]
    agent = {"id": "gid://gitlab/Clusters::Agent/7", "connections": {"nodes": nodes}}
    return {"data": {"project": {"clusterAgent": agent}}}


@pytest.fixture(scope="module")
def ca() -> TestCa:
    return TestCa("gitops-dev GitLab CA")


@pytest.fixture
def gitlab(tmp_path: Path, ca: TestCa) -> Iterator[Server]:
    system_tool("curl", "apt-get install --no-install-recommends curl")
    with serve(tmp_path, tls=ca.issue("gitlab", server=True)) as server:
        yield server


@pytest.fixture
def host(tmp_path: Path) -> StubHost:
    return StubHost(tmp_path).stub("kubectl", KUBECTL)


def wait(host: StubHost, gitlab: Server, ca: TestCa, token: str = TOKEN, **env: str):
    values = {
        "GITLAB_URL": gitlab.base,
        "GITLAB_CA_PEM": ca.cert_pem,
        "PROJECT_PATH": PROJECT,
        "AGENT_NAME": "k8s-cluster",
        "AGENT_NAMESPACE": "kube-system",
        "POD_SELECTOR": "app.kubernetes.io/name=gitlab-agent,app.kubernetes.io/instance=gitlab-agent",
        "AGENTK_VERSION": "v19.4.1",
        "AGENT_TOKEN_ID": "798",
        "TIMEOUT_SECONDS": "60",
        **env,
    }
    return host.run("agent/wait-connected.sh", values, stdin=token + "\n")


def graphql(*replies: dict) -> tuple[list[Request], object]:
    """A route answering the replies in turn (the last one from then on), for the owner's token only."""
    seen: list[Request] = []

    def route(request: Request):
        seen.append(request)
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return json_reply(401, {"message": "401 Unauthorized"})
        return json_reply(200, replies[min(len(seen), len(replies)) - 1])

    return seen, route


def test_a_connected_agent_ends_the_step_at_once(host: StubHost, gitlab: Server, ca: TestCa) -> None:
    seen, gitlab.routes["POST /api/graphql"] = graphql(connections("gitlab-agent-v2-7d9f-abcde"))
    result = wait(host, gitlab, ca)
    assert result.returncode == 0, result.stderr
    assert "the agent is connected: 1 connection(s): gitlab-agent-v2-7d9f-abcde (v19.4.1)" in result.stderr
    [request] = seen
    body = json.loads(request.body)
    assert body["variables"] == {"project": PROJECT, "agent": "k8s-cluster"}
    assert "clusterAgent(name: $agent)" in body["query"] and "connections" in body["query"]
    assert request.headers["content-type"] == "application/json"
    assert host.calls("kubectl") == [], "no logs are read when all is well"
    assert TOKEN not in result.stderr + result.stdout


def test_it_waits_while_no_agentk_is_connected(host: StubHost, gitlab: Server, ca: TestCa) -> None:
    missing = {"data": {"project": {"clusterAgent": None}}}
    not_yet = connections()
    unavailable = {"errors": [{"message": "GRPC::Unavailable"}], "data": {"project": {"clusterAgent": None}}}
    seen, gitlab.routes["POST /api/graphql"] = graphql(missing, not_yet, unavailable, connections("pod-a", "pod-b"))
    result = wait(host, gitlab, ca)
    assert result.returncode == 0, result.stderr
    assert len(seen) == 4
    assert "2 connection(s): pod-a (v19.4.1), pod-b (v19.4.1)" in result.stderr


def test_a_timeout_fails_with_agentks_pods_and_logs(host: StubHost, gitlab: Server, ca: TestCa) -> None:
    _, gitlab.routes["POST /api/graphql"] = graphql(connections())
    result = wait(host, gitlab, ca, TIMEOUT_SECONDS="0")
    assert result.returncode == 1
    assert "GitLab did not report the agent connected within 0s" in result.stderr
    assert "no agentk is connected to GitLab's agent server" in result.stderr
    selector = "app.kubernetes.io/name=gitlab-agent,app.kubernetes.io/instance=gitlab-agent"
    assert host.calls("kubectl") == [
        f"kubectl -n kube-system get pods -l {selector} -o wide",
        f"kubectl -n kube-system logs -l {selector} --all-containers --prefix --tail=200",
    ]
    assert "agentk: x509: certificate signed by unknown authority" in result.stderr
    assert "/srv/gitlab/logs/gitlab-kas/current" in result.stderr


def test_a_refused_token_fails_at_once_without_waiting(host: StubHost, gitlab: Server, ca: TestCa) -> None:
    seen, gitlab.routes["POST /api/graphql"] = graphql(connections("pod-a"))
    result = wait(host, gitlab, ca, token="glpat-revoked-000000000000")
    assert result.returncode == 1
    assert "GitLab answered HTTP 401: the API token on stdin expired" in result.stderr
    assert len(seen) == 1


def test_a_gitlab_serving_another_certificate_is_never_trusted(
    host: StubHost, gitlab: Server, ca: TestCa, tmp_path: Path
) -> None:
    seen, gitlab.routes["POST /api/graphql"] = graphql(connections("pod-a"))
    result = wait(host, gitlab, ca, GITLAB_CA_PEM=TestCa("another CA").cert_pem, TIMEOUT_SECONDS="0")
    assert result.returncode == 1
    assert "GitLab did not answer" in result.stderr
    assert seen == [], "nothing was sent to a server the stack's CA does not vouch for"


@pytest.mark.parametrize(
    ("env", "stdin", "message"),
    [
        ({}, "", "stdin is empty"),
        ({"GITLAB_URL": "http://gitlab.example.com"}, TOKEN, "is not https://<host>"),
        ({"PROJECT_PATH": "shark-application"}, TOKEN, "is not a project path"),
        ({"AGENT_NAME": "K8s Cluster"}, TOKEN, "is not an agent name"),
    ],
)
def test_bad_parameters_stop_the_step_before_it_asks_anything(
    host: StubHost, gitlab: Server, ca: TestCa, env: dict, stdin: str, message: str
) -> None:
    seen, gitlab.routes["POST /api/graphql"] = graphql(connections("pod-a"))
    result = wait(host, gitlab, ca, token=stdin, **env)
    assert result.returncode == 1 and message in result.stderr
    assert seen == []
