"""`make doctor` against a live system made of loopback servers (tests/loopback.py).

A fake GitLab API and registry serve TLS from a "GitLab CA", a fake Kubernetes API serves TLS from
a "cluster CA" and requires the admin client certificate, two fake app servers answer plain HTTP.
The outputs fed to the doctor have the exact shape the program exports (the kubeconfig is built by
components/kubeadm.py), and a test holds every output a check reads to the program's exports.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from components import kubeadm
from tests.loopback import NOW, Issued, Request, Server, TestCa, json_reply, serve, text_reply
from tools import doctor
from tools.harness import ProgramRun

TOKEN = "glpat-doctor-test-0001"
OWNER_TOKEN = "glpat-doctor-owner-0002"
AGENT = {
    "name": "k8s-cluster",
    "id": 7,
    "projectPath": "operator/shark-application",
    "kubeContext": "operator/shark-application:k8s-cluster",
    "agentkVersion": "v19.4.1",
}
RUNNER_ID = "7"
VERSION = "v1.36.5"
NODES = ["master", "worker1", "worker2"]
HOME_PAGE = "<h2>Are you ready to learn about sharks?</h2><p>This app is working</p>"
FLUX = {
    "gitRepository": "shark-app",
    "kustomization": "shark-app",
    "imageRepository": "shark-app",
    "imagePolicy": "shark-app",
    "imageUpdateAutomation": "shark-app",
    "gitSecret": "flux-git-deploy",
}


def node(name: str, *, ready: str = "True", version: str = VERSION, cordoned: bool = False) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"unschedulable": True} if cordoned else {},
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {
                    "type": "Ready",
                    "status": ready,
                    "reason": "KubeletReady" if ready == "True" else "NodeStatusUnknown",
                },
            ],
            "nodeInfo": {"kubeletVersion": version},
        },
    }


def flux_object(kind: str, *, ready: str = "True", generation: int = 1, observed: int = 1) -> dict[str, Any]:
    reason = "Succeeded" if ready == "True" else "AuthenticationFailed"
    return {
        "kind": kind,
        "metadata": {"name": "shark-app", "namespace": "flux", "generation": generation},
        "spec": {},
        "status": {
            "observedGeneration": observed,
            "conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": "ssh: handshake failed"}],
        },
    }


def agent_answer(
    *pods: str,
    errors: list[str] | None = None,
    registered: bool = True,
    version: str = "v19.4.1",
    project_visible: bool = True,
) -> dict[str, Any]:
    """GitLab's GraphQL answer for project.clusterAgent(name).connections (Types::Kas::AgentConnectionType)."""
    nodes = [{"connectedAt": "2026-11-30T10:00:00Z", "metadata": {"version": version, "podName": p}} for p in pods]
    agent = {"id": "gid://gitlab/Clusters::Agent/7", "connections": {"nodes": nodes}} if registered else None
    project = {"clusterAgent": agent} if project_visible else None
    document: dict[str, Any] = {"data": {"project": project}}
    if errors:
        document["errors"] = [{"message": message} for message in errors]
    return document


def graphql_route(reply: Any) -> Any:
    """GitLab's GraphQL endpoint: the Owner's token as a bearer token, the agent query with its variables."""

    def route(request: Request) -> Any:
        if request.headers.get("authorization") != f"Bearer {OWNER_TOKEN}":
            return json_reply(401, {"message": "401 Unauthorized"})
        body = json.loads(request.body)
        if body["variables"] != {"project": AGENT["projectPath"], "agent": AGENT["name"]}:
            return json_reply(200, {"data": {"project": None}})
        return reply

    return route


def runner(status: str = "online", *, paused: bool = False) -> dict[str, Any]:
    return {
        "id": int(RUNNER_ID),
        "status": status,
        "paused": paused,
        "active": not paused,
        "online": status == "online",
        "contacted_at": None if status == "never_contacted" else "2026-11-30T10:00:00.000Z",
        "version": "18.11.4",
    }


@dataclass
class LiveStack:
    gitlab_ca: TestCa
    cluster_ca: TestCa
    admin: Issued
    gitlab: Server
    registry: Server
    kube: Server
    apps: list[Server]
    outputs: dict[str, Any]

    def flux_path(self, plural: str, api: str) -> str:
        return f"/apis/{api}/namespaces/flux/{plural}/shark-app"


def gitlab_route(reply: Any) -> Any:
    """A GitLab endpoint that answers 401 unless the admin token is in PRIVATE-TOKEN."""

    def route(request: Request) -> Any:
        if request.headers.get("private-token") != TOKEN:
            return json_reply(401, {"message": "401 Unauthorized"})
        return reply

    return route


@pytest.fixture(scope="module")
def pki() -> tuple[TestCa, TestCa, Issued]:
    cluster_ca = TestCa("cluster CA")
    return TestCa("gitops-dev GitLab CA"), cluster_ca, cluster_ca.issue("gitops-k8s-admin", server=False)


def start(tmp: Path, pki: tuple[TestCa, TestCa, Issued], *, api_cert: Issued | None = None) -> Iterator[LiveStack]:
    gitlab_ca, cluster_ca, admin = pki
    with ExitStack() as stack:
        gitlab = stack.enter_context(serve(tmp, tls=gitlab_ca.issue("gitlab", server=True)))
        registry = stack.enter_context(serve(tmp, tls=gitlab_ca.issue("registry", server=True)))
        kube = stack.enter_context(
            serve(
                tmp,
                tls=api_cert or cluster_ca.issue("kube-apiserver", server=True),
                client_ca_pem=cluster_ca.cert_pem,
            )
        )
        apps = [stack.enter_context(serve(tmp)) for _ in range(2)]
        gitlab.routes["/api/v4/version"] = gitlab_route(json_reply(200, {"version": "18.11.12", "revision": "abc"}))
        gitlab.routes[f"/api/v4/runners/{RUNNER_ID}"] = gitlab_route(json_reply(200, runner()))
        gitlab.routes["POST /api/graphql"] = graphql_route(json_reply(200, agent_answer("gitlab-agent-v2-abc12")))
        registry.routes["/v2/"] = json_reply(
            401,
            {"errors": [{"code": "UNAUTHORIZED"}]},
            {"WWW-Authenticate": f'Bearer realm="{gitlab.base}/jwt/auth",service="container_registry"'},
        )
        kube.routes["/version"] = json_reply(200, {"gitVersion": VERSION})
        kube.routes["/api/v1/nodes"] = json_reply(200, {"kind": "NodeList", "items": [node(n) for n in NODES]})
        for key, (api, plural, kind) in doctor.FLUX_KINDS.items():
            kube.routes[f"/apis/{api}/namespaces/flux/{plural}/{FLUX[key]}"] = json_reply(200, flux_object(kind))
        for app in apps:
            app.routes["/"] = text_reply(200, HOME_PAGE)
        outputs = {
            "gitlabUrl": gitlab.base,
            "gitlabRegistryHost": f"127.0.0.1:{registry.port}",
            "gitlabCaPem": gitlab_ca.cert_pem,
            "gitlabAdminToken": TOKEN,
            "gitlabAdminTokenExpiresAt": "2027-11-30",
            "gitlabRunnerId": RUNNER_ID,
            "kubernetesApiUrl": kube.base,
            "kubeconfig": kubeadm.kubeconfig(
                cluster_name="gitops-k8s",
                server=kube.base,
                ca_pem=cluster_ca.cert_pem,
                client_cert_pem=admin.cert_pem,
                client_key_pem=admin.key_pem,
            ),
            "clusterCaPem": cluster_ca.cert_pem,
            "kubernetesVersion": VERSION,
            "nodes": [
                {"name": n, "role": "control-plane" if n == "master" else "worker", "privateIp": "10.42.0.1"}
                for n in NODES
            ],
            "appUrls": [f"{app.base}" for app in apps],
            "delivery": "pull",
            "clusterIntegration": "agent",
            "gitlabAgent": AGENT,
            "gitlabAdminUserToken": OWNER_TOKEN,
            "fluxNamespace": "flux",
            "fluxObjects": FLUX,
        }
        yield LiveStack(gitlab_ca, cluster_ca, admin, gitlab, registry, kube, apps, outputs)


@pytest.fixture
def live(tmp_path: Path, pki: tuple[TestCa, TestCa, Issued]) -> Iterator[LiveStack]:
    yield from start(tmp_path, pki)


def run_doctor(outputs: dict[str, Any]) -> tuple[int, dict[str, str], str]:
    """Run every check; return the exit code, each check's line by name, and the whole output."""
    out = io.StringIO()
    code = doctor.run(doctor.CHECKS, doctor.Context(outputs=outputs, now=NOW, timeout=5), out)
    text = out.getvalue()
    lines = {}
    for line in text.splitlines()[:-1]:
        name = line.split()[1]
        lines[name] = line
    return code, lines, text


def verdict(line: str) -> str:
    return line.split()[0]


# --------------------------------------------------------------------------------------------
# A healthy stack, and the contract with the program's outputs
# --------------------------------------------------------------------------------------------
def test_a_healthy_stack_passes_every_check(live: LiveStack) -> None:
    code, lines, text = run_doctor(live.outputs)
    assert code == 0, text
    assert list(lines) == [check.name for check in doctor.CHECKS]
    # The backup checks read an S3 bucket: tests/test_backup_s3.py runs them against one.
    assert {verdict(line) for name, line in lines.items() if not name.endswith("-backup")} == {"PASS"}, text
    assert "GitLab 18.11.12 answers" in lines["gitlab-api"]
    assert "Bearer challenge" in lines["registry"] and "/jwt/auth" in lines["registry"]
    assert "runner 7 is online" in lines["runner"]
    assert "3 node(s) Ready on v1.36.5" in lines["nodes"]
    assert "5 Flux objects Ready in flux" in lines["flux"]
    assert "agent operator/shark-application:k8s-cluster connected: gitlab-agent-v2-abc12 (v19.4.1)" in lines["agent"]
    assert "on 2 URL(s)" in lines["app"]
    assert "valid until" in lines["api-certificate"]
    assert text.splitlines()[-1] == "doctor: 8 passed, 0 warning(s), 0 failed, 2 skipped"
    # The tokens went to GitLab only in headers, and never into the report.
    assert TOKEN not in text and OWNER_TOKEN not in text
    rest = [r for r in live.gitlab.requests if r.path.startswith("/api/v4/")]
    assert rest and all(r.headers.get("private-token") == TOKEN for r in rest)
    [graphql] = [r for r in live.gitlab.requests if r.path == "/api/graphql"]
    assert graphql.headers["authorization"] == f"Bearer {OWNER_TOKEN}" and "private-token" not in graphql.headers
    # The Kubernetes API saw the admin client certificate on every request.
    assert live.kube.requests and all(r.client_cert for r in live.kube.requests)


def test_every_output_a_check_reads_is_exported_by_the_program(dev: ProgramRun) -> None:
    needed = {key for check in doctor.CHECKS for key in check.needs} | {
        "fluxNamespace",
        "fluxObjects",
        "gitlabAgent",
        "gitlabAdminUserToken",
    }
    assert needed <= set(dev.outputs), needed - set(dev.outputs)
    assert dev.outputs["delivery"] == "pull"
    assert set(dev.outputs["fluxObjects"]) - set(doctor.FLUX_KINDS) == {"gitSecret"}
    # The doctor parses the kubeconfig the program exports (server, CA, client certificate).
    api = doctor.KubernetesApi.from_kubeconfig(dev.outputs["kubeconfig"], timeout=1)
    assert api.server == dev.outputs["kubernetesApiUrl"]
    # The agent check reads the agent's name and project as the program exports them.
    assert dev.outputs["clusterIntegration"] == "agent"
    assert set(dev.outputs["gitlabAgent"]) == set(AGENT)


@pytest.mark.parametrize(
    ("answer", "expected", "fix"),
    [
        (
            agent_answer(),
            "the agent operator/shark-application:k8s-cluster is registered but no agentk is connected",
            "logs -l app.kubernetes.io/name=gitlab-agent",
        ),
        (
            agent_answer(registered=False),
            "GitLab shows this token no agent k8s-cluster in operator/shark-application: it was deleted, or the "
            "token's user is not a Maintainer or Owner of the project",
            "`pulumi up --refresh`",
        ),
        (
            agent_answer(project_visible=False),
            "GitLab shows this token no project operator/shark-application",
            "gitlabAdminUserToken",
        ),
        (
            agent_answer(errors=["GRPC::Unavailable"]),
            "cannot tell whether operator/shark-application:k8s-cluster is connected: GRPC::Unavailable",
            "gitlab-ctl status gitlab-kas",
        ),
    ],
)
def test_an_agent_that_is_not_connected_fails(live: LiveStack, answer: dict[str, Any], expected: str, fix: str) -> None:
    live.gitlab.routes["POST /api/graphql"] = graphql_route(json_reply(200, answer))
    code, lines, text = run_doctor(live.outputs)
    assert code == 1
    assert verdict(lines["agent"]) == "FAIL" and expected in lines["agent"], text
    assert fix in lines["agent"].split("-> fix: ", 1)[1]


def test_an_agentk_of_another_version_is_a_warning(live: LiveStack) -> None:
    """The agentk that answers is not the one the stack runs: the last `pulumi up` did not finish its
    rollout, or an old pod is still connected."""
    answer = agent_answer("gitlab-agent-v2-old01", version="v19.2.4")
    live.gitlab.routes["POST /api/graphql"] = graphql_route(json_reply(200, answer))
    code, lines, text = run_doctor(live.outputs)
    assert code == 0, text
    assert verdict(lines["agent"]) == "WARN"
    assert "connected: gitlab-agent-v2-old01 (v19.2.4), but none runs agentk v19.4.1" in lines["agent"]
    assert "`pulumi up`" in lines["agent"].split("-> fix: ", 1)[1]


def test_an_older_stack_without_the_agentk_version_is_not_judged_by_it(live: LiveStack) -> None:
    agent = {key: value for key, value in AGENT.items() if key != "agentkVersion"}
    answer = agent_answer("gitlab-agent-v2-old01", version="v19.2.4")
    live.gitlab.routes["POST /api/graphql"] = graphql_route(json_reply(200, answer))
    code, lines, text = run_doctor({**live.outputs, "gitlabAgent": agent})
    assert code == 0 and verdict(lines["agent"]) == "PASS", text


def test_a_refused_owner_token_fails_the_agent_check(live: LiveStack) -> None:
    code, lines, _ = run_doctor({**live.outputs, "gitlabAdminUserToken": "glpat-revoked-00000000"})
    assert code == 1
    assert "GitLab refused the daily admin's token (gitlabAdminUserToken, HTTP 401)" in lines["agent"]
    assert verdict(lines["gitlab-api"]) == "PASS"


def test_certificate_mode_skips_the_agent_check(live: LiveStack) -> None:
    outputs = {k: v for k, v in live.outputs.items() if k != "gitlabAgent"}
    code, lines, _ = run_doctor({**outputs, "clusterIntegration": "certificate"})
    assert code == 0
    assert lines["agent"].split(None, 2)[2] == "skipped: clusterIntegration is certificate: there is no agent"
    assert not [r for r in live.gitlab.requests if r.path == "/api/graphql"]


def test_an_agent_check_without_the_agent_output_is_skipped_not_passed(live: LiveStack) -> None:
    outputs = {k: v for k, v in live.outputs.items() if k != "gitlabAgent"}
    code, lines, _ = run_doctor(outputs)
    assert code == 0 and verdict(lines["agent"]) == "SKIP"
    assert "output gitlabAgent absent" in lines["agent"]


# --------------------------------------------------------------------------------------------
# Failures, each with its line and the exit code
# --------------------------------------------------------------------------------------------
def test_a_wrong_gitlab_ca_fails_the_gitlab_checks(live: LiveStack) -> None:
    outputs = {**live.outputs, "gitlabCaPem": TestCa("another stack's CA").cert_pem}
    code, lines, text = run_doctor(outputs)
    assert code == 1
    for name in ("gitlab-api", "registry", "runner"):
        assert verdict(lines[name]) == "FAIL", text
        assert "TLS verification failed (unable to get local issuer certificate)" in lines[name]
        assert "-> fix: " in lines[name]
    assert verdict(lines["nodes"]) == "PASS"
    assert not live.gitlab.requests  # nothing was sent to a server the stack's CA does not vouch for


def test_a_ca_output_that_is_not_a_certificate_fails_instead_of_crashing(live: LiveStack) -> None:
    code, lines, _ = run_doctor({**live.outputs, "gitlabCaPem": "-----BEGIN CERTIFICATE-----\nnope\n"})
    assert code == 1
    assert "the stack's CA is not a PEM certificate" in lines["gitlab-api"]
    assert verdict(lines["registry"]) == verdict(lines["runner"]) == "FAIL"


def test_an_expired_admin_token_says_how_to_rotate_it(live: LiveStack) -> None:
    code, lines, _ = run_doctor({**live.outputs, "gitlabAdminToken": "glpat-expired-000000"})
    assert code == 1
    assert "refused the admin token (HTTP 401; token expiry: 2027-11-30)" in lines["gitlab-api"]
    assert "adminTokenRotation" in lines["gitlab-api"]


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (runner("offline"), "runner 7 is offline (last contact 2026-11-30T10:00:00.000Z)"),
        (runner("never_contacted"), "runner 7 is never_contacted (last contact never)"),
        (runner("stale"), "runner 7 is stale"),
        (runner("online", paused=True), "runner 7 is paused"),
    ],
)
def test_a_runner_that_is_not_online_fails(live: LiveStack, state: dict[str, Any], expected: str) -> None:
    live.gitlab.routes[f"/api/v4/runners/{RUNNER_ID}"] = gitlab_route(json_reply(200, state))
    code, lines, text = run_doctor(live.outputs)
    assert code == 1
    assert verdict(lines["runner"]) == "FAIL" and expected in lines["runner"], text
    assert "-> fix: " in lines["runner"]


def test_a_deleted_runner_fails(live: LiveStack) -> None:
    del live.gitlab.routes[f"/api/v4/runners/{RUNNER_ID}"]
    code, lines, _ = run_doctor(live.outputs)
    assert code == 1 and "runner 7 does not exist in GitLab" in lines["runner"]


def test_a_registry_without_a_bearer_challenge_fails(live: LiveStack) -> None:
    live.registry.routes["/v2/"] = json_reply(502, {})
    code, lines, _ = run_doctor(live.outputs)
    assert code == 1 and "answered /v2/ with HTTP 502" in lines["registry"]


def test_a_not_ready_node_fails(live: LiveStack) -> None:
    items = [node("master"), node("worker1", ready="Unknown"), node("worker2")]
    live.kube.routes["/api/v1/nodes"] = json_reply(200, {"items": items})
    code, lines, text = run_doctor(live.outputs)
    assert code == 1
    assert verdict(lines["nodes"]) == "FAIL"
    assert "worker1 NotReady (NodeStatusUnknown)" in lines["nodes"], text
    assert "journalctl -u kubelet" in lines["nodes"]


def test_a_node_on_an_old_minor_fails(live: LiveStack) -> None:
    items = [node("master"), node("worker1"), node("worker2", version="v1.35.9")]
    live.kube.routes["/api/v1/nodes"] = json_reply(200, {"items": items})
    code, lines, _ = run_doctor(live.outputs)
    assert code == 1
    assert "worker2 runs kubelet v1.35.9, expected v1.36.5" in lines["nodes"]


def test_a_node_on_an_older_patch_or_cordoned_is_a_warning(live: LiveStack) -> None:
    items = [node("master"), node("worker1", version="v1.36.3"), node("worker2", cordoned=True), node("worker9")]
    live.kube.routes["/api/v1/nodes"] = json_reply(200, {"items": items})
    code, lines, text = run_doctor(live.outputs)
    assert code == 0, text
    assert verdict(lines["nodes"]) == "WARN"
    assert "worker1 runs kubelet v1.36.3, older than v1.36.5" in lines["nodes"]
    assert "worker2 is cordoned" in lines["nodes"]
    assert "not in the stack's outputs: worker9" in lines["nodes"]


def test_a_missing_node_and_an_api_server_on_another_version_fail(live: LiveStack) -> None:
    live.kube.routes["/api/v1/nodes"] = json_reply(200, {"items": [node("master"), node("worker1")]})
    live.kube.routes["/version"] = json_reply(200, {"gitVersion": "v1.35.2"})
    code, lines, _ = run_doctor(live.outputs)
    assert code == 1
    assert "the API server runs v1.35.2, the stack says v1.36.5" in lines["nodes"]
    assert "worker2 is not registered" in lines["nodes"]


def test_a_client_certificate_from_another_ca_is_refused(live: LiveStack, tmp_path: Path) -> None:
    stranger = TestCa("stranger").issue("intruder", server=False)
    kubeconfig = kubeadm.kubeconfig(
        cluster_name="gitops-k8s",
        server=live.kube.base,
        ca_pem=live.cluster_ca.cert_pem,
        client_cert_pem=stranger.cert_pem,
        client_key_pem=stranger.key_pem,
    )
    code, lines, _ = run_doctor({**live.outputs, "kubeconfig": kubeconfig})
    assert code == 1
    assert verdict(lines["nodes"]) == "FAIL" and "no answer" in lines["nodes"]
    assert not live.kube.requests  # the TLS handshake refused it before any request


@pytest.mark.parametrize(
    ("key", "state", "expected"),
    [
        ("gitRepository", {"ready": "False"}, "GitRepository shark-app not Ready (AuthenticationFailed: ssh:"),
        ("imagePolicy", {"generation": 3, "observed": 2}, "ImagePolicy shark-app has not reconciled its latest change"),
    ],
)
def test_a_flux_object_not_ready_fails(live: LiveStack, key: str, state: dict[str, Any], expected: str) -> None:
    api, plural, kind = doctor.FLUX_KINDS[key]
    live.kube.routes[live.flux_path(plural, api)] = json_reply(200, flux_object(kind, **state))
    code, lines, text = run_doctor(live.outputs)
    assert code == 1
    assert verdict(lines["flux"]) == "FAIL" and expected in lines["flux"], text
    assert "kubectl -n flux describe" in lines["flux"]


def test_a_missing_or_suspended_flux_object_fails(live: LiveStack) -> None:
    api, plural, kind = doctor.FLUX_KINDS["kustomization"]
    del live.kube.routes[live.flux_path(plural, api)]
    api, plural, kind = doctor.FLUX_KINDS["imageUpdateAutomation"]
    suspended = flux_object(kind)
    suspended["spec"]["suspend"] = True
    live.kube.routes[live.flux_path(plural, api)] = json_reply(200, suspended)
    code, lines, _ = run_doctor(live.outputs)
    assert code == 1
    assert "Kustomization flux/shark-app does not exist" in lines["flux"]
    assert "ImageUpdateAutomation shark-app is suspended" in lines["flux"]


def test_push_mode_skips_flux(live: LiveStack) -> None:
    outputs = {k: v for k, v in live.outputs.items() if not k.startswith("flux")}
    code, lines, _ = run_doctor({**outputs, "delivery": "push"})
    assert code == 0
    assert lines["flux"].split(None, 2)[2] == "skipped: delivery is push: Flux is not installed"


def test_an_app_without_the_sentence_fails(live: LiveStack) -> None:
    live.apps[1].routes["/"] = text_reply(200, "<p>Welcome to nginx!</p>")
    code, lines, text = run_doctor(live.outputs)
    assert code == 1
    assert verdict(lines["app"]) == "FAIL", text
    assert f"{live.apps[1].base} answered without 'Are you ready to learn about sharks?'" in lines["app"]
    assert live.apps[0].base + " " not in lines["app"]  # the healthy URL is not blamed


def test_an_app_url_that_does_not_answer_fails(live: LiveStack) -> None:
    outputs = {**live.outputs, "appUrls": [*live.outputs["appUrls"], "http://127.0.0.1:9"]}
    code, lines, _ = run_doctor(outputs)
    assert code == 1 and "127.0.0.1:9: no answer" in lines["app"]


def test_an_api_certificate_inside_30_days_is_a_warning(tmp_path: Path, pki: tuple[TestCa, TestCa, Issued]) -> None:
    soon = pki[1].issue("kube-apiserver", server=True, days=12.5)
    for stack in start(tmp_path, pki, api_cert=soon):
        code, lines, text = run_doctor(stack.outputs)
        assert code == 0, text
        assert verdict(lines["api-certificate"]) == "WARN"
        expiry = NOW + datetime.timedelta(days=12.5)
        assert f"expires on {expiry:%Y-%m-%d}, in 12 day(s)" in lines["api-certificate"]
        assert "kubeadm certs renew all" in lines["api-certificate"]


def test_an_expired_api_certificate_fails(tmp_path: Path, pki: tuple[TestCa, TestCa, Issued]) -> None:
    expired = pki[1].issue("kube-apiserver", server=True, expired=True)
    for stack in start(tmp_path, pki, api_cert=expired):
        code, lines, _ = run_doctor(stack.outputs)
        assert code == 1
        assert "the API server's certificate on 127.0.0.1" in lines["api-certificate"]
        assert "has expired" in lines["api-certificate"]


def test_an_absent_output_skips_its_check_never_passes_it(live: LiveStack) -> None:
    outputs = {k: v for k, v in live.outputs.items() if k not in ("gitlabRunnerId", "kubeconfig")}
    code, lines, text = run_doctor(outputs)
    assert code == 0
    assert verdict(lines["runner"]) == "SKIP"
    assert "skipped: output gitlabRunnerId absent" in lines["runner"]
    assert "skipped: output kubeconfig absent" in lines["nodes"]
    assert "skipped: output kubeconfig absent" in lines["flux"]
    assert text.splitlines()[-1] == "doctor: 4 passed, 0 warning(s), 0 failed, 6 skipped"


# --------------------------------------------------------------------------------------------
# The command line: outputs from a file or from the Pulumi CLI
# --------------------------------------------------------------------------------------------
def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.doctor", *args, "--timeout", "5"],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )


def test_the_command_reads_outputs_from_a_file(live: LiveStack, tmp_path: Path) -> None:
    live.apps[0].routes["/"] = text_reply(200, "nothing here")
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(live.outputs))
    result = cli("--outputs", str(outputs))
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines()[-1] == "doctor: 7 passed, 0 warning(s), 1 failed, 2 skipped"


def test_the_command_reads_outputs_with_the_pulumi_cli(live: LiveStack, tmp_path: Path) -> None:
    (tmp_path / "outputs.json").write_text(json.dumps(live.outputs))
    stub = tmp_path / "bin" / "pulumi"
    stub.parent.mkdir()
    stub.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$*" >>"{tmp_path}/calls"\ncat "{tmp_path}/outputs.json"\n')
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    result = cli("--stack", "dev", env={"PATH": f"{stub.parent}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "calls").read_text() == "stack output --json --show-secrets --stack dev\n"


def test_unreadable_outputs_exit_2_with_the_reason(tmp_path: Path) -> None:
    stub = tmp_path / "pulumi"
    stub.write_text("#!/usr/bin/env bash\necho \"error: no stack named 'nope' found\" >&2\nexit 255\n")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    result = cli("--stack", "nope", env={"PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert result.returncode == 2
    assert "no stack named 'nope' found" in result.stderr and "pulumi login" in result.stderr


def test_backups_count_as_running_since_the_first_set_after_the_last_break() -> None:
    at = datetime.datetime(2026, 11, 30, 12, tzinfo=datetime.UTC)
    hour, gap = datetime.timedelta(hours=1), datetime.timedelta(hours=26)
    # Daily sets a day apart are no break; 40 days without any are (backups were off).
    times = [at - 40 * 24 * hour, at - 39 * 24 * hour, at - 25 * hour, at - 2 * hour, at]
    assert doctor.backed_up_since(times, gap) == at - 25 * hour
    assert doctor.backed_up_since(times[:2], gap) == at - 40 * 24 * hour
    assert doctor.backed_up_since([], gap) is None
    # The time an etcd set was taken is its key's stamp; a key without one falls back.
    assert doctor.snapshot_time("etcd/daily/master/20261130T110000Z", at) == at - hour
    assert doctor.snapshot_time("etcd/daily/master/unnamed", at) == at
