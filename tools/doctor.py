"""Check a live stack after `pulumi up`: one line per check, a verdict, and the fix when it fails.

    python -m tools.doctor --stack dev            # reads `pulumi stack output --json --show-secrets`
    python -m tools.doctor --outputs outputs.json # the same JSON from a file (tests, CI)

Exit status: 0 when no check failed (warnings and skips allowed), 1 when one failed, 2 when the
outputs could not be read.

The contract of a check: a small function over the stack's outputs, listed in ``CHECKS`` with the
outputs it needs. When one of those outputs is absent (an older stack, a mode that does not export
it) the check is not run and is reported as ``skipped: <why>``, never as passed. A check may also
skip itself when it does not apply (Flux in push mode). Adding a check is one function and one
``Check(...)`` line; its outputs come from ``__main__.py``'s exports.

Everything goes over the network the way an operator's tools would, and trusts only the stack's own
CAs: GitLab and its registry through ``gitlabCaPem``, the Kubernetes API through the kubeconfig's CA
and admin client certificate. Verification is never turned off: a wrong CA is a failed check. Only
the standard library and ``PyYAML`` are used, so this runs in the deploy image as it is.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from cryptography import x509

TIMEOUT_SECONDS = 10.0
# The tutorial's home page sentence (SEED.md); the app's own CI test greps for the same one.
APP_SENTENCE = "Are you ready to learn about sharks?"
# kubeadm's certificates last one year (REFERENCE.md section 10); warn a month ahead.
CERT_WARNING_DAYS = 30
# Flux objects by their key in the `fluxObjects` output: (API group/version, plural, kind).
# API versions: components/flux.py (source and kustomize v1; image automation v1 since Flux 2.7).
FLUX_KINDS: dict[str, tuple[str, str, str]] = {
    "gitRepository": ("source.toolkit.fluxcd.io/v1", "gitrepositories", "GitRepository"),
    "kustomization": ("kustomize.toolkit.fluxcd.io/v1", "kustomizations", "Kustomization"),
    "imageRepository": ("image.toolkit.fluxcd.io/v1", "imagerepositories", "ImageRepository"),
    "imagePolicy": ("image.toolkit.fluxcd.io/v1", "imagepolicies", "ImagePolicy"),
    "imageUpdateAutomation": ("image.toolkit.fluxcd.io/v1", "imageupdateautomations", "ImageUpdateAutomation"),
}

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"


# --------------------------------------------------------------------------------------------
# Results and the check table
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Result:
    verdict: str  # PASS, WARN, FAIL or SKIP
    message: str
    fix: str = ""


def passed(message: str) -> Result:
    return Result(PASS, message)


def warned(message: str, fix: str) -> Result:
    return Result(WARN, message, fix)


def failed(message: str, fix: str) -> Result:
    return Result(FAIL, message, fix)


def skipped(why: str) -> Result:
    return Result(SKIP, f"skipped: {why}")


class CheckFailed(Exception):
    """Raised inside a check to end it with a failure (the message and the fix)."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


@dataclass
class Context:
    """What every check reads: the stack's outputs, the clock, the timeout, and cached clients."""

    outputs: Mapping[str, Any]
    now: datetime.datetime
    timeout: float = TIMEOUT_SECONDS
    _cache: dict[str, Any] = field(default_factory=dict)

    def gitlab_tls(self) -> ssl.SSLContext:
        if "gitlab_tls" not in self._cache:
            self._cache["gitlab_tls"] = ca_context(self.outputs["gitlabCaPem"])
        return self._cache["gitlab_tls"]

    def kubernetes(self) -> KubernetesApi:
        if "kubernetes" not in self._cache:
            self._cache["kubernetes"] = KubernetesApi.from_kubeconfig(self.outputs["kubeconfig"], self.timeout)
        return self._cache["kubernetes"]


@dataclass(frozen=True)
class Check:
    name: str
    needs: tuple[str, ...]  # outputs the check reads; absent -> "skipped"
    run: Callable[[Context], Result]


# --------------------------------------------------------------------------------------------
# HTTP over the stack's CAs
# --------------------------------------------------------------------------------------------
def ca_context(ca_pem: str) -> ssl.SSLContext:
    """A client TLS context that trusts only ``ca_pem`` and checks the host name."""
    try:
        context = ssl.create_default_context(cadata=ca_pem)
    except (ssl.SSLError, ValueError) as error:
        raise CheckFailed(
            f"the stack's CA is not a PEM certificate ({error})", "run `pulumi up` to restore the stack's outputs"
        ) from error
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


def http_get(
    url: str,
    *,
    timeout: float,
    context: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
    data: bytes | None = None,
) -> Response:
    """One request; an HTTP error status is a Response, a network or TLS failure raises CheckFailed."""
    if not url.startswith(("https://", "http://")):
        raise CheckFailed(f"{url!r} is not an http(s) URL", "check the stack's outputs (`pulumi stack output`)")
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))  # noqa: S310
    handlers: list[urllib.request.BaseHandler] = []
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=timeout) as response:
            return Response(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, dict(error.headers.items()), error.read())
    except urllib.error.URLError as error:
        raise _network_failure(url, error.reason) from error
    except (OSError, http.client.HTTPException) as error:  # timeouts, resets, TLS, non-HTTP answers
        raise _network_failure(url, error) from error


def _network_failure(url: str, reason: object) -> CheckFailed:
    host = urllib.parse.urlsplit(url).netloc
    if isinstance(reason, ssl.SSLCertVerificationError):
        return CheckFailed(
            f"{host}: TLS verification failed ({reason.verify_message or reason})",
            "the server's certificate is not the one this stack issued (or it expired): check that the "
            "output's host is this stack's, then `pulumi up` to restore the stack's certificate",
        )
    if isinstance(reason, TimeoutError):
        what = "timed out"
    else:
        what = str(reason)
    return CheckFailed(
        f"{host}: no answer ({what})",
        "is your public address in adminCidrs and is the instance running? (`pulumi stack output`, EC2 console)",
    )


# --------------------------------------------------------------------------------------------
# Kubernetes API through the kubeconfig output
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KubernetesApi:
    server: str
    context: ssl.SSLContext
    timeout: float

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str, timeout: float) -> KubernetesApi:
        """The current context's server, CA and client certificate, all embedded (`*-data` fields)."""
        document = yaml.safe_load(kubeconfig)
        try:
            current = document["current-context"]
            context = next(c["context"] for c in document["contexts"] if c["name"] == current)
            cluster = next(c["cluster"] for c in document["clusters"] if c["name"] == context["cluster"])
            user = next(u["user"] for u in document["users"] if u["name"] == context["user"])
            server = cluster["server"]
            ca_pem = base64.b64decode(cluster["certificate-authority-data"]).decode()
            cert_pem = base64.b64decode(user["client-certificate-data"]).decode()
            key_pem = base64.b64decode(user["client-key-data"]).decode()
        except (KeyError, TypeError, StopIteration) as error:
            raise CheckFailed(
                f"the kubeconfig output is not a kubeconfig with embedded CA and client certificate ({error!r})",
                "run `pulumi up` to restore the stack's outputs",
            ) from error
        tls = ca_context(ca_pem)
        # load_cert_chain reads files: the key lives in a private directory for the time of the call.
        with tempfile.TemporaryDirectory(prefix="doctor-") as directory:
            cert_file = os.path.join(directory, "client.crt")
            key_file = os.path.join(directory, "client.key")
            for path, text in ((cert_file, cert_pem), (key_file, key_pem)):
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(text)
            try:
                tls.load_cert_chain(cert_file, key_file)
            except ssl.SSLError as error:
                raise CheckFailed(
                    f"the kubeconfig's client certificate and key do not load ({error})",
                    "run `pulumi up` to restore the stack's outputs",
                ) from error
        return cls(server.rstrip("/"), tls, timeout)

    def get(self, path: str) -> Any:
        response = http_get(f"{self.server}{path}", timeout=self.timeout, context=self.context)
        if response.status == 404:
            return None
        if response.status in (401, 403):
            raise CheckFailed(
                f"the Kubernetes API refused the admin certificate on {path} (HTTP {response.status})",
                "the kubeconfig output is stale: `pulumi up` (or `pulumi refresh`) to restore it",
            )
        if response.status != 200:
            raise CheckFailed(
                f"the Kubernetes API answered HTTP {response.status} on {path}",
                "on the control plane: `sudo kubectl --kubeconfig /etc/kubernetes/admin.conf get --raw /readyz?verbose`",
            )
        return response.json()


# --------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------
def check_gitlab_api(ctx: Context) -> Result:
    """GET /api/v4/version with the admin token, over the stack's CA (GitLab doc/api/version.md)."""
    url = f"{ctx.outputs['gitlabUrl'].rstrip('/')}/api/v4/version"
    response = http_get(
        url, timeout=ctx.timeout, context=ctx.gitlab_tls(), headers={"PRIVATE-TOKEN": ctx.outputs["gitlabAdminToken"]}
    )
    if response.status == 401:
        expiry = ctx.outputs.get("gitlabAdminTokenExpiresAt", "see gitlabAdminTokenExpiresAt")
        return failed(
            f"GitLab refused the admin token (HTTP 401; token expiry: {expiry})",
            "rotate it: `pulumi config set adminTokenRotation <date> && make up` (README, Troubleshooting)",
        )
    if response.status in (502, 503, 504):
        return failed(
            f"GitLab answers HTTP {response.status}: it is starting or unhealthy",
            "wait a few minutes after a (re)start; on the host: `docker logs gitlab`, `/srv/gitlab/logs/`",
        )
    if response.status != 200:
        return failed(f"GET {url} answered HTTP {response.status}", "on the host: `docker logs gitlab`")
    version = (response.json() or {}).get("version", "?")
    return passed(f"GitLab {version} answers at {ctx.outputs['gitlabUrl']} (certificate from the stack's CA)")


def check_registry(ctx: Context) -> Result:
    """GET /v2/: 401 with a Bearer challenge is a healthy token-auth registry (distribution API spec)."""
    url = f"https://{ctx.outputs['gitlabRegistryHost']}/v2/"
    response = http_get(url, timeout=ctx.timeout, context=ctx.gitlab_tls())
    challenge = next((v for k, v in response.headers.items() if k.lower() == "www-authenticate"), "")
    if response.status == 401 and challenge.startswith("Bearer "):
        realm = re.search(r'realm="([^"]*)"', challenge)
        where = f" (token realm {realm.group(1)})" if realm else ""
        return passed(f"registry {ctx.outputs['gitlabRegistryHost']} answers /v2/ with a Bearer challenge{where}")
    if response.status == 200:
        return warned(
            f"registry {ctx.outputs['gitlabRegistryHost']} answers /v2/ without asking for a token",
            "GitLab's registry normally uses token authentication: check registry settings in gitlab.rb",
        )
    return failed(
        f"registry {ctx.outputs['gitlabRegistryHost']} answered /v2/ with HTTP {response.status}"
        f"{' and no Bearer challenge' if response.status == 401 else ''}",
        "on the host: `docker logs gitlab` (registry, nginx); port 5050 must be published and open to adminCidrs",
    )


def check_runner(ctx: Context) -> Result:
    """GET /api/v4/runners/:id: `status` is online, offline, stale, never_contacted or (deprecated) paused."""
    runner_id = str(ctx.outputs["gitlabRunnerId"])
    url = f"{ctx.outputs['gitlabUrl'].rstrip('/')}/api/v4/runners/{urllib.parse.quote(runner_id, safe='')}"
    response = http_get(
        url, timeout=ctx.timeout, context=ctx.gitlab_tls(), headers={"PRIVATE-TOKEN": ctx.outputs["gitlabAdminToken"]}
    )
    if response.status == 404:
        return failed(
            f"runner {runner_id} does not exist in GitLab",
            "`pulumi refresh` then `pulumi up` creates and registers it again",
        )
    if response.status != 200:
        return failed(f"GET {url} answered HTTP {response.status}", "check the GitLab API check above")
    runner = response.json() or {}
    status = runner.get("status", "?")
    contacted = runner.get("contacted_at") or "never"
    if runner.get("paused") is True or runner.get("active") is False:
        return failed(
            f"runner {runner_id} is paused (status {status})",
            "resume it: Admin area > CI/CD > Runners, or `PUT /api/v4/runners/:id paused=false`",
        )
    if status == "online":
        version = runner.get("version") or "?"
        return passed(f"runner {runner_id} is online (gitlab-runner {version}, last contact {contacted})")
    # The runner runs on the runner manager (components/runners.py), never on the GitLab host.
    manager = f"on the runner manager (`ssh admin@{ctx.outputs.get('runnerManagerIp') or '<runnerManagerIp>'}`)"
    fixes = {
        "never_contacted": "it was created but never configured: re-run the configure step "
        f"(`pulumi up --replace '<urn of runners-manager-configure>'`); {manager}: `journalctl -u gitlab-runner`",
        "offline": f"{manager}: `systemctl status gitlab-runner`, `journalctl -u gitlab-runner` "
        "(it must reach GitLab over 443 and trust the stack's CA)",
        "stale": f"it has not contacted GitLab for days: {manager} `journalctl -u gitlab-runner`, then "
        "`sudo systemctl restart gitlab-runner`",
    }
    return failed(
        f"runner {runner_id} is {status} (last contact {contacted})",
        fixes.get(status, f"{manager}: `journalctl -u gitlab-runner`"),
    )


def _minor(version: str) -> tuple[int, int, int] | None:
    match = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)(?:[-+].*)?", version.strip())
    return (int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None


def check_nodes(ctx: Context) -> Result:
    """Every node of the `nodes` output is Ready and runs the stack's Kubernetes version.

    Node facts from kubernetes/api core/v1/types.go: condition type `Ready` with status "True",
    `status.nodeInfo.kubeletVersion`. Nodes install the newest patch of the configured minor, so a
    newer patch on a node is fine, an older one is a warning (the version skew policy allows it),
    another minor is a failure.
    """
    expected = str(ctx.outputs["kubernetesVersion"])
    want = _minor(expected)
    if want is None:
        return failed(f"kubernetesVersion output {expected!r} is not vX.Y.Z", "run `pulumi up` to restore the outputs")
    api = ctx.kubernetes()
    server_version = (api.get("/version") or {}).get("gitVersion", "?")
    listed = api.get("/api/v1/nodes") or {}
    live = {item["metadata"]["name"]: item for item in listed.get("items", [])}
    expected_names = [str(node["name"]) for node in ctx.outputs["nodes"]]
    problems: list[str] = []
    notes: list[str] = []
    if _minor(server_version) != want:
        problems.append(f"the API server runs {server_version}, the stack says {expected}")
    for name in expected_names:
        node = live.get(name)
        if node is None:
            problems.append(f"{name} is not registered")
            continue
        ready = next(
            (c for c in node.get("status", {}).get("conditions", []) if c.get("type") == "Ready"),
            {"status": "Unknown", "reason": "no Ready condition"},
        )
        if ready.get("status") != "True":
            problems.append(f"{name} NotReady ({ready.get('reason') or ready.get('status')})")
        kubelet = node.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "?")
        have = _minor(kubelet)
        if have is None or have[:2] != want[:2]:
            problems.append(f"{name} runs kubelet {kubelet}, expected {expected}")
        elif have < want:  # same minor, older patch: allowed by the version skew policy, but behind
            notes.append(f"{name} runs kubelet {kubelet}, older than {expected}")
        if node.get("spec", {}).get("unschedulable"):
            notes.append(f"{name} is cordoned")
    extra = sorted(set(live) - set(expected_names))
    if extra:
        notes.append(f"not in the stack's outputs: {', '.join(extra)}")
    if problems:
        return failed(
            "; ".join(problems + notes),
            "on the node: `journalctl -u kubelet -u containerd`; a node on another version: `pulumi up` "
            "finishes the upgrade; a missing node: `pulumi up` (the join step re-runs when it failed)",
        )
    summary = f"{len(expected_names)} node(s) Ready on {expected} (API server {server_version})"
    if notes:
        return warned(
            f"{summary}; {'; '.join(notes)}",
            "`kubectl uncordon <node>`; `kubectl delete node <name>` for nodes Pulumi no longer manages; "
            "an older kubelet: upgrade that node's kubelet package to the control plane's patch",
        )
    return passed(summary)


def check_flux(ctx: Context) -> Result:
    """Each Flux object's `Ready` condition is True for its current generation (fluxcd/pkg apis/meta)."""
    if ctx.outputs["delivery"] != "pull":
        return skipped(f"delivery is {ctx.outputs['delivery']}: Flux is not installed")
    absent = absent_outputs(ctx, ("fluxNamespace", "fluxObjects", "kubeconfig"))
    if absent:
        return absent
    namespace = ctx.outputs["fluxNamespace"]
    api = ctx.kubernetes()
    problems: list[str] = []
    ready: list[str] = []
    for key, name in ctx.outputs["fluxObjects"].items():
        if key not in FLUX_KINDS:
            continue  # e.g. gitSecret: a plain Secret, not a Flux object
        api_version, plural, kind = FLUX_KINDS[key]
        obj = api.get(f"/apis/{api_version}/namespaces/{namespace}/{plural}/{name}")
        if obj is None:
            problems.append(f"{kind} {namespace}/{name} does not exist")
            continue
        if obj.get("spec", {}).get("suspend"):
            problems.append(f"{kind} {name} is suspended")
            continue
        status = obj.get("status", {})
        condition = next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), None)
        if condition is None:
            problems.append(f"{kind} {name} has no Ready condition yet")
        elif condition.get("status") != "True":
            problems.append(f"{kind} {name} not Ready ({condition.get('reason')}: {condition.get('message', '')})")
        elif status.get("observedGeneration", 0) < obj.get("metadata", {}).get("generation", 0):
            problems.append(f"{kind} {name} has not reconciled its latest change yet")
        else:
            ready.append(kind)
    if problems:
        return failed(
            "; ".join(problems),
            f"`kubectl -n {namespace} describe <kind> <name>` and the controllers' logs in flux-system "
            "(`kubectl -n flux-system logs deploy/source-controller`, image-reflector-controller, …)",
        )
    if not ready:
        return failed("the fluxObjects output names no Flux object", "run `pulumi up` to restore the outputs")
    return passed(f"{len(ready)} Flux objects Ready in {namespace}: {', '.join(ready)}")


# GitLab's agent: its live connections, which GitLab asks KAS for (gitlabhq app/graphql/types/
# clusters/agent_type.rb `connections`, resolvers/kas/agent_connections_resolver.rb); the caller needs
# admin_cluster on the project (the project's Owner: gitlabAdminUserToken).
AGENT_QUERY = (
    "query($project: ID!, $agent: String!) { project(fullPath: $project) { clusterAgent(name: $agent) "
    "{ id connections { nodes { connectedAt metadata { version podName } } } } } }"
)


def check_agent(ctx: Context) -> Result:
    """GitLab reports the agent connected: `project.clusterAgent(name).connections` is not empty."""
    if ctx.outputs["clusterIntegration"] != "agent":
        return skipped(f"clusterIntegration is {ctx.outputs['clusterIntegration']}: there is no agent")
    absent = absent_outputs(ctx, ("gitlabAgent", "gitlabUrl", "gitlabCaPem", "gitlabAdminUserToken"))
    if absent:
        return absent
    agent = ctx.outputs["gitlabAgent"]
    name, project = str(agent["name"]), str(agent["projectPath"])
    body = json.dumps({"query": AGENT_QUERY, "variables": {"project": project, "agent": name}}).encode()
    response = http_get(
        f"{ctx.outputs['gitlabUrl'].rstrip('/')}/api/graphql",
        timeout=ctx.timeout,
        context=ctx.gitlab_tls(),
        method="POST",
        data=body,
        headers={"Authorization": f"Bearer {ctx.outputs['gitlabAdminUserToken']}", "Content-Type": "application/json"},
    )
    if response.status == 401:
        return failed(
            "GitLab refused the daily admin's token (gitlabAdminUserToken, HTTP 401)",
            "a plain `pulumi up` renews an expired one; a revoked one: README, Troubleshooting",
        )
    if response.status != 200:
        return failed(f"GitLab's GraphQL API answered HTTP {response.status}", "check the gitlab-api check above")
    document = response.json() or {}
    logs = (
        "`kubectl -n kube-system logs -l app.kubernetes.io/name=gitlab-agent --tail=200`; on the GitLab host "
        "`/srv/gitlab/logs/gitlab-kas/current`"
    )
    errors = [str(error.get("message", "?")) for error in document.get("errors") or []]
    if errors:
        return failed(
            f"GitLab cannot tell whether {project}:{name} is connected: {'; '.join(errors)}",
            "GitLab's agent server (KAS) does not answer GitLab: on the host `docker exec gitlab gitlab-ctl status "
            "gitlab-kas`, then " + logs,
        )
    project_found = (document.get("data") or {}).get("project")
    if project_found is None:
        return failed(
            f"GitLab shows this token no project {project}",
            "the project was renamed or deleted, or gitlabAdminUserToken is not its Owner's: `pulumi up` "
            "restores the outputs and the project",
        )
    found = project_found.get("clusterAgent")
    if found is None:
        # ClusterAgentType is `authorize :admin_cluster`: an agent the token may not administer is null too.
        return failed(
            f"GitLab shows this token no agent {name} in {project}: it was deleted, or the token's user is not "
            "a Maintainer or Owner of the project",
            "`pulumi up --refresh` registers a deleted agent again; the token must be the project Owner's",
        )
    nodes = (found.get("connections") or {}).get("nodes") or []
    if not nodes:
        return failed(f"the agent {project}:{name} is registered but no agentk is connected", logs)
    pods = ", ".join(
        f"{(node.get('metadata') or {}).get('podName', '?')} ({(node.get('metadata') or {}).get('version', '?')})"
        for node in nodes
    )
    # The agentk the stack runs (gitlabAgent.agentkVersion; older stacks do not export it).
    expected = str(agent.get("agentkVersion") or "")
    versions = {str((node.get("metadata") or {}).get("version") or "").removeprefix("v") for node in nodes}
    if expected and expected.removeprefix("v") not in versions:
        return warned(
            f"agent {project}:{name} connected: {pods}, but none runs agentk {expected}",
            "the last `pulumi up` did not finish agentk's rollout, or an old pod is still connected: run "
            "`pulumi up` (it restarts agentk and waits for the new pods), then " + logs,
        )
    return passed(f"agent {project}:{name} connected: {pods}")


def check_app(ctx: Context) -> Result:
    """Every app URL serves the home page with the tutorial's sentence."""
    urls = list(ctx.outputs["appUrls"])
    if not urls:
        return failed("the appUrls output is empty", "the stack needs at least one worker (workerCount)")
    problems: list[str] = []
    for url in urls:
        try:
            response = http_get(url, timeout=ctx.timeout)
        except CheckFailed as error:
            problems.append(error.message)
            continue
        if response.status != 200:
            problems.append(f"{url} answered HTTP {response.status}")
        elif APP_SENTENCE not in response.body.decode("utf-8", "replace"):
            problems.append(f"{url} answered without {APP_SENTENCE!r}")
    if problems:
        return failed(
            "; ".join(problems),
            "right after `up` the first pipeline may still run (appProjectUrl > Build > Pipelines); then "
            "`kubectl get deploy,pods,svc -n default`; pull mode: fluxWatchCommand; your address must be in appCidrs",
        )
    return passed(f"the app answers with {APP_SENTENCE!r} on {len(urls)} URL(s)")


def check_api_certificate(ctx: Context) -> Result:
    """The API server's serving certificate, as a client sees it over TLS: days until notAfter."""
    api = ctx.kubernetes()
    parsed = urllib.parse.urlsplit(str(ctx.outputs["kubernetesApiUrl"]))
    host, port = parsed.hostname or "", parsed.port or 443
    try:
        with (
            socket.create_connection((host, port), timeout=ctx.timeout) as raw,
            api.context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError as error:
        if error.verify_code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
            return failed(
                f"the API server's certificate on {host}:{port} has expired",
                "on the control plane: `sudo kubeadm certs renew all`, then restart the static pods "
                "(move the manifests out of /etc/kubernetes/manifests and back); then `pulumi up`",
            )
        raise _network_failure(ctx.outputs["kubernetesApiUrl"], error) from error
    except (OSError, ssl.SSLError) as error:
        raise _network_failure(ctx.outputs["kubernetesApiUrl"], error) from error
    if not der:
        return failed(f"{host}:{port} presented no certificate", "check kubernetesApiUrl")
    not_after = x509.load_der_x509_certificate(der).not_valid_after_utc
    days = (not_after - ctx.now).days
    when = f"{not_after:%Y-%m-%d}"
    if days < CERT_WARNING_DAYS:
        return warned(
            f"the API server's certificate expires on {when}, in {days} day(s)",
            "on the control plane: `sudo kubeadm certs check-expiration`, then `sudo kubeadm certs renew all` "
            "and restart the static pods (a `kubeadm upgrade` also renews them)",
        )
    return passed(f"the API server's certificate is valid until {when} ({days} days)")


# --------------------------------------------------------------------------------------------
# Backups: the newest complete set in the bucket, read with the operator's own AWS credentials
# --------------------------------------------------------------------------------------------
# A set is complete once its SHA256SUMS is uploaded (components/backup_layout.py). The daily GitLab
# backup may start up to 10 min late and take a few hours; etcd snapshots run every
# etcdSnapshotIntervalMinutes: a set older than these is a missed run.
GITLAB_BACKUP_MAX_AGE = datetime.timedelta(hours=30)
ETCD_SNAPSHOT_SLACK = datetime.timedelta(minutes=20)
AWS_CLI_ENV = "AWS_CLI"  # the AWS CLI to run (default `aws` on PATH)
S3_ENDPOINT_ENV = "GITOPS_S3_ENDPOINT_URL"  # an S3-compatible endpoint instead of AWS (the tests' server)


class NoAwsCli(CheckFailed):
    """The operator's machine has no AWS CLI: a warning, not a verdict on the backups."""


def _complete_sets(ctx: Context, prefix: str) -> list[tuple[str, datetime.datetime]]:
    """(set key, upload time of its SHA256SUMS) under ``prefix``, listed with the operator's AWS CLI."""
    bucket, region = str(ctx.outputs["backupBucket"]), str(ctx.outputs["backupRegion"])
    command = [os.environ.get(AWS_CLI_ENV) or "aws", "s3api", "list-objects-v2", "--bucket", bucket]
    command += ["--prefix", prefix, "--region", region, "--output", "json"]
    if os.environ.get(S3_ENDPOINT_ENV):
        command += ["--endpoint-url", os.environ[S3_ENDPOINT_ENV]]
    fix = (
        "the doctor lists the bucket with your own AWS credentials (the ones `pulumi up` uses: AWS_PROFILE or "
        f"AWS_ACCESS_KEY_ID...), which need s3:ListBucket on {bucket}; install the AWS CLI if it is missing"
    )
    try:
        listed = subprocess.run(command, capture_output=True, text=True, check=False, timeout=ctx.timeout * 6)  # noqa: S603
    except FileNotFoundError as error:
        raise NoAwsCli(f"the AWS CLI ({command[0]}) is not installed, so the bucket cannot be read", fix) from error
    except (OSError, subprocess.TimeoutExpired) as error:
        raise CheckFailed(f"cannot run the AWS CLI ({error})", fix) from error
    if listed.returncode != 0:
        raise CheckFailed(f"cannot list s3://{bucket}/{prefix}: {listed.stderr.strip()[-300:]}", fix)
    objects = (json.loads(listed.stdout or "{}") or {}).get("Contents") or []
    return [
        (item["Key"].rsplit("/", 1)[0], datetime.datetime.fromisoformat(item["LastModified"].replace("Z", "+00:00")))
        for item in objects
        if item["Key"].endswith("/SHA256SUMS")
    ]


def snapshot_time(key: str, fallback: datetime.datetime) -> datetime.datetime:
    """When an etcd set was taken: the UTC stamp ending its key (etcd/<kind>/<node>/<YYYYmmddTHHMMSSZ>,
    userdata/backup/etcd-snapshot.sh), else ``fallback`` (its upload time)."""
    try:
        return datetime.datetime.strptime(key.rsplit("/", 1)[-1], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return fallback


def backed_up_since(times: Sequence[datetime.datetime], max_gap: datetime.timedelta) -> datetime.datetime | None:
    """The first of the newest run of ``times`` with no gap over ``max_gap`` between neighbours: since
    when backups have run without a break. Sets from before backups were turned off and on again
    (daily etcd sets stay 90 days) are behind a longer gap, so they do not count."""
    ordered = sorted(times, reverse=True)
    if not ordered:
        return None
    start = ordered[0]
    for earlier in ordered[1:]:
        if start - earlier > max_gap:
            break
        start = earlier
    return start


def _age(ctx: Context, when: datetime.datetime) -> str:
    minutes = int((ctx.now - when).total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60} min ago" if minutes >= 60 else f"{max(minutes, 0)} min ago"


def check_gitlab_backup(ctx: Context) -> Result:
    """The newest complete GitLab backup (daily or pre-upgrade) is at most a day and a bit old."""
    bucket = ctx.outputs["backupBucket"]
    try:
        sets = _complete_sets(ctx, "gitlab/")
    except NoAwsCli as error:
        return warned(error.message, error.fix)
    fix = (
        "on the GitLab host: `systemctl status gitops-gitlab-backup.timer` and `journalctl -u gitops-gitlab-backup`; "
        "run one now with `sudo systemctl start gitops-gitlab-backup`"
    )
    if not sets:
        # A new stack has none until the first daily run (backupHourUtc); an old one has missed them all.
        # How long backups have been on: the etcd sets without a break up to the newest (turning backups
        # on takes one at once). Between neighbouring sets of a running stack: at most a snapshot
        # interval, or a day and an interval between the daily sets once the frequent ones expired.
        interval = datetime.timedelta(minutes=int(ctx.outputs["etcdSnapshotIntervalMinutes"]))
        max_gap = datetime.timedelta(days=1) + 2 * interval + ETCD_SNAPSHOT_SLACK
        first = backed_up_since([snapshot_time(key, when) for key, when in _complete_sets(ctx, "etcd/")], max_gap)
        if first is not None and ctx.now - first > GITLAB_BACKUP_MAX_AGE:
            return failed(
                f"no complete GitLab backup in s3://{bucket}/gitlab/, though etcd has been backed up without a break "
                f"since {first:%Y-%m-%d %H:%M} UTC ({_age(ctx, first)}): every daily GitLab backup since has failed",
                fix,
            )
        return warned(f"no complete GitLab backup in s3://{bucket}/gitlab/ yet", fix)
    key, when = max(sets, key=lambda item: item[1])
    if ctx.now - when > GITLAB_BACKUP_MAX_AGE:
        return failed(f"the newest GitLab backup, {key}, is from {when:%Y-%m-%d %H:%M} UTC ({_age(ctx, when)})", fix)
    return passed(f"GitLab backed up {_age(ctx, when)}: s3://{bucket}/{key}/")


def check_etcd_backup(ctx: Context) -> Result:
    """Every control-plane node uploaded a complete snapshot within two of its intervals."""
    bucket = ctx.outputs["backupBucket"]
    interval = datetime.timedelta(minutes=int(ctx.outputs["etcdSnapshotIntervalMinutes"]))
    nodes = ctx.outputs.get("nodes") or []
    control_planes = [n["name"] for n in nodes if n.get("role") == "control-plane"] or ["master"]
    newest: dict[str, tuple[str, datetime.datetime]] = {}
    try:
        sets = _complete_sets(ctx, "etcd/frequent/")
    except NoAwsCli as error:
        return warned(error.message, error.fix)
    for key, when in sets:
        node = key.split("/")[2]
        if node not in newest or when > newest[node][1]:
            newest[node] = (key, when)
    fix = (
        "on that node: `systemctl status gitops-etcd-backup.timer` and `journalctl -u gitops-etcd-backup`; "
        "run one now with `sudo systemctl start gitops-etcd-backup`"
    )
    stale = [
        f"{node}: " + (f"newest {_age(ctx, newest[node][1])}" if node in newest else "none")
        for node in control_planes
        if node not in newest or ctx.now - newest[node][1] > 2 * interval + ETCD_SNAPSHOT_SLACK
    ]
    if stale:
        return failed(f"etcd snapshots in s3://{bucket}/etcd/frequent/ are missing or late ({'; '.join(stale)})", fix)
    ages = ", ".join(f"{node} {_age(ctx, newest[node][1])}" for node in control_planes)
    return passed(f"etcd snapshots every {int(interval.total_seconds() // 60)} min: {ages}")


KUBE = ("kubeconfig",)
# backupBucket is exported whether backups are on or off (the bucket is kept); etcdSnapshotIntervalMinutes
# only with backups on, so a stack with `backups: false` skips both checks.
BACKUPS = ("backupBucket", "backupRegion", "etcdSnapshotIntervalMinutes")
CHECKS: tuple[Check, ...] = (
    Check("gitlab-api", ("gitlabUrl", "gitlabCaPem", "gitlabAdminToken"), check_gitlab_api),
    Check("registry", ("gitlabRegistryHost", "gitlabCaPem"), check_registry),
    Check("runner", ("gitlabUrl", "gitlabCaPem", "gitlabAdminToken", "gitlabRunnerId"), check_runner),
    Check("nodes", (*KUBE, "nodes", "kubernetesVersion"), check_nodes),
    Check("flux", ("delivery",), check_flux),
    Check("agent", ("clusterIntegration",), check_agent),
    Check("app", ("appUrls",), check_app),
    Check("api-certificate", (*KUBE, "kubernetesApiUrl"), check_api_certificate),
    Check("gitlab-backup", BACKUPS, check_gitlab_backup),
    Check("etcd-backup", BACKUPS, check_etcd_backup),
)


# --------------------------------------------------------------------------------------------
# Running and reporting
# --------------------------------------------------------------------------------------------
def absent_outputs(ctx: Context, keys: Sequence[str]) -> Result | None:
    """The "skipped" result when one of ``keys`` is not among the stack's outputs, else None."""
    missing = [key for key in keys if ctx.outputs.get(key) in (None, "")]
    if missing:
        return skipped(f"output {', '.join(missing)} absent (not exported by this stack; run `pulumi up`)")
    return None


def run_check(check: Check, ctx: Context) -> Result:
    absent = absent_outputs(ctx, check.needs)
    if absent:
        return absent
    try:
        return check.run(ctx)
    except CheckFailed as error:
        return failed(error.message, error.fix)


def format_result(name: str, result: Result) -> str:
    line = f"{result.verdict:<4}  {name:<16} {result.message}"
    if result.fix and result.verdict in (FAIL, WARN):
        line += f" -> fix: {result.fix}"
    return line


def run(checks: Sequence[Check], ctx: Context, out: Any = sys.stdout) -> int:
    counts = {PASS: 0, WARN: 0, FAIL: 0, SKIP: 0}
    for check in checks:
        result = run_check(check, ctx)
        counts[result.verdict] += 1
        print(format_result(check.name, result), file=out, flush=True)
    print(
        f"doctor: {counts[PASS]} passed, {counts[WARN]} warning(s), {counts[FAIL]} failed, {counts[SKIP]} skipped",
        file=out,
    )
    return 1 if counts[FAIL] else 0


def read_outputs(stack: str | None, outputs_file: str | None) -> dict[str, Any]:
    if outputs_file:
        with open(outputs_file, encoding="utf-8") as handle:
            return json.load(handle)
    command = ["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", str(stack)]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    except FileNotFoundError as error:
        raise SystemExit("doctor: the Pulumi CLI is not on PATH (or pass --outputs FILE)") from error
    if completed.returncode != 0:
        raise SystemExit(
            f"doctor: `pulumi stack output --stack {stack}` failed: {completed.stderr.strip()}\n"
            "Log in to the stack's backend (`pulumi login`) and deploy it first (`make up`)."
        )
    return json.loads(completed.stdout or "{}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--stack", help="read the outputs of this stack with the Pulumi CLI")
    source.add_argument("--outputs", help="read the outputs from this JSON file (`pulumi stack output --json`)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_SECONDS, help="seconds per request")
    args = parser.parse_args(argv)
    try:
        outputs = read_outputs(args.stack, args.outputs)
    except (OSError, json.JSONDecodeError) as error:
        print(f"doctor: cannot read the outputs: {error}", file=sys.stderr)
        return 2
    except SystemExit as error:
        print(error, file=sys.stderr)
        return 2
    ctx = Context(outputs=outputs, now=datetime.datetime.now(datetime.UTC), timeout=args.timeout)
    return run(CHECKS, ctx)


if __name__ == "__main__":
    sys.exit(main())
