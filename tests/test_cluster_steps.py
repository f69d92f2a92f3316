"""Behaviour of the cluster's shell steps, run under bash with stub commands (tests/stub_host.py).

Each test is a statement about what the step does on a host: the order of the commands it runs
(drain before upgrade, uncordon once Ready), what it refuses before changing anything, and that a
second run does nothing.
"""

from __future__ import annotations

import base64
import fcntl
import json
import re
import shlex
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from components import kubeadm
from components.remote import step_script
from tests.stub_host import CRICTL, StubHost

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ROOT = Path(__file__).resolve().parent.parent
TOKEN = "abc123.0123456789abcdef"
PACKAGES = ["cluster/packages.sh"]
COMMON = (ROOT / "userdata/lib/common.sh").read_text()


@pytest.fixture
def host(tmp_path: Path) -> StubHost:
    return StubHost(tmp_path)


def positions(calls: list[str], *prefixes: str) -> list[int]:
    """Index of the first call starting with each prefix (fails if one never happened)."""
    found = []
    for prefix in prefixes:
        matches = [index for index, call in enumerate(calls) if call.startswith(prefix)]
        assert matches, f"no call {prefix!r} in {calls}"
        found.append(matches[0])
    return found


# ------------------------------------------------------------------------------------------------
# common.sh: cloud-init status, heartbeats
# ------------------------------------------------------------------------------------------------
def test_cloud_init_degraded_exit_2_is_accepted_and_reported(host: StubHost) -> None:
    host.stub("cloud-init", '[ "$2" = --wait ] && exit 2\necho "status: done (recoverable errors)"\n')
    result = host.run("x", program=COMMON + "\nwait_for_cloud_init\n")
    assert result.returncode == 0, result.stderr
    assert "recoverable errors (exit 2, degraded): continuing" in result.stderr
    assert host.calls("cloud-init") == ["cloud-init status --wait", "cloud-init status --long"]


def test_cloud_init_failure_stops_the_step_with_its_report(host: StubHost) -> None:
    host.stub("cloud-init", '[ "$2" = --wait ] && exit 1\nexit 0\n')
    result = host.run("x", program=COMMON + "\nwait_for_cloud_init\necho after\n")
    assert result.returncode == 1
    assert "cloud-init did not succeed (exit 1)" in result.stderr
    assert "after" not in result.stdout


def test_long_waits_print_a_heartbeat_at_least_every_interval(tmp_path: Path) -> None:
    host = StubHost(tmp_path)
    (tmp_path / "bin" / "sleep").unlink()  # real time passes here
    program = COMMON + '\nwith_heartbeat "testing" sleep 3.5\necho done\n'
    result = host.run("heartbeat", {"HEARTBEAT_SECONDS": "1"}, program=program)
    assert result.returncode == 0, result.stderr
    beats = re.findall(r"\[heartbeat\] still testing \((\d+)s\)", result.stderr)
    assert len(beats) >= 3, result.stderr
    assert result.stdout == "done\n"
    # wait_until too, while its condition keeps failing.
    program = COMMON + '\nwait_until 3 "a door" false\n'
    result = host.run("heartbeat", {"HEARTBEAT_SECONDS": "1", "POLL_SECONDS": "0.2"}, program=program)
    assert result.returncode == 1
    assert "still waiting for a door" in result.stderr
    assert "timed out after 3s waiting for a door" in result.stderr


# ------------------------------------------------------------------------------------------------
# Steps whose stdout the program reads: the value alone, whatever the commands print
# ------------------------------------------------------------------------------------------------
def test_every_step_whose_stdout_the_program_reads_sends_everything_else_to_stderr(dev, prod) -> None:
    """pulumi-command keeps stdout as it is, and the program parses it strictly (a version, a date)."""
    reading = {
        shlex.split(step.plain_inputs["create"])[2].removeprefix("STEP_NAME=")
        for run in (dev, prod)
        for step in run.all("command:remote:Command")
        if step.state.get("stdout")  # the harness answers only the steps whose stdout is read
    }
    assert reading == {
        "cluster/kubeadm-version.sh",
        "cluster/control-plane-init.sh",
        "cluster/control-plane-upgrade.sh",
        "cluster/certificates.sh",
        "gitlab/seed-admin-token.sh",
        "agent/agentk-rollout.sh",
    }
    for script in [*reading, "cluster/renew-certificates.sh"]:
        body = (ROOT / "userdata" / script).read_text()
        commands = [line for line in body.splitlines() if line.strip() and not line.startswith("#")]
        assert commands[:2] == ["set -euo pipefail", "stdout_is_the_result"], script


def test_apt_and_kubeadm_output_never_reaches_the_upgrade_steps_stdout(host: StubHost) -> None:
    """The stubs print what apt-get, dpkg, kubeadm and kubectl print; stdout is the version alone."""
    host.kubernetes(server="v1.36.5").packages("1.36.5-1.1", "1.36.9-1.1", "1.37.2-1.1")
    patch = upgrade(host, TARGET_MINOR="1.36", TARGET_VERSION="1.36.9")
    assert patch.returncode == 0, patch.stderr
    assert patch.stdout == "v1.36.9\n"
    assert "Setting up kubeadm (1.36.9-1.1)" in patch.stderr and "[upgrade/successful]" in patch.stderr
    minor = upgrade(host, TARGET_MINOR="1.37")
    assert minor.returncode == 0, minor.stderr
    assert minor.stdout == "v1.37.2\n"
    assert kubeadm.kubernetes_version(minor.stdout, "the upgrade step") == "v1.37.2"


def test_the_kubeadm_version_step_prints_the_version_alone(host: StubHost) -> None:
    host.kubernetes(server="v1.36.5")
    host.stub("cloud-init", 'echo "status: done"\n')
    result = host.run("cluster/kubeadm-version.sh")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "v1.36.5\n"


# ------------------------------------------------------------------------------------------------
# node-bootstrap.sh and packages.sh: pinned, held, kubernetes-cni checked
# ------------------------------------------------------------------------------------------------
def boot(host: StubHost, **env: str) -> None:
    etc = host.root / "etc"
    (etc / "gitops").mkdir(parents=True)
    (etc / "gitops/cluster-node.env").write_text(
        "".join(f"{key}={value}\n" for key, value in {"KUBERNETES_PATCH": "", **env}.items())
    )
    (etc / "fstab").write_text("UUID=1 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n")
    (etc / "os-release").write_text("VERSION_CODENAME=bookworm\n")
    for name in ("swapoff", "modprobe", "sysctl", "timeout", "containerd"):
        host.stub(name)
    host.stub("dpkg", "echo amd64\n")


def run_boot(host: StubHost) -> subprocess.CompletedProcess[str]:
    program = (ROOT / "userdata/cluster/node-bootstrap.sh").read_text()
    # node-bootstrap.sh sources its neighbours from its own directory, as installed by cloud-init.
    install = host.root / "usr/local/lib/gitops"
    (install / "cluster").mkdir(parents=True, exist_ok=True)
    (install / "lib").mkdir(parents=True, exist_ok=True)
    (install / "lib/common.sh").write_text((ROOT / "userdata/lib/common.sh").read_text())
    (install / "cluster/packages.sh").write_text((ROOT / "userdata/cluster/packages.sh").read_text())
    (install / "cluster/node-bootstrap.sh").write_text(program)
    return subprocess.run(
        ["bash", str(install / "cluster/node-bootstrap.sh")],
        env={
            "PATH": f"{host.bin}:/usr/bin:/bin",
            "FS_ROOT": str(host.root),
            "STATE": str(host.state),
            "CALLS": str(host.calls_file),
            "POLL_SECONDS": "0",
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


MADISON_BY_PACKAGE = r"""
if [ "$2" = containerd.io ]; then
  for v in 2.1.5-1~debian.12~bookworm 2.2.1-1~debian.12~bookworm 2.2.5-1~debian.12~bookworm 2.3.0-1~debian.12~bookworm; do
    echo "containerd.io | $v | https://download.docker.com/linux/debian bookworm/stable amd64 Packages"
  done
else
  cat "$STATE/madison"
fi
"""


def test_boot_installs_containerd_of_one_series_and_the_kubernetes_packages_held(host: StubHost) -> None:
    host.kubernetes(server="v0.0.0", kubelet="v0.0.0", kubeadm="v0.0.0").packages("1.36.4-1.1", "1.36.5-1.1")
    # Docker's repository lists other series too; the newest of the pinned one is installed.
    host.stub("apt-cache", MADISON_BY_PACKAGE)
    boot(host, KUBERNETES_MINOR="1.36", CONTAINERD_SERIES="2.2")
    result = run_boot(host)
    assert result.returncode == 0, result.stderr
    apt = host.calls("apt-get", "apt-mark")
    containerd = "apt-get -o DPkg::Lock::Timeout=300 -q install -y --no-install-recommends containerd.io=2.2.5-1~debian.12~bookworm"
    kubernetes = (
        "apt-get -o DPkg::Lock::Timeout=300 -q install -y --no-install-recommends --allow-downgrades "
        "--allow-change-held-packages kubelet=1.36.5-1.1 kubeadm=1.36.5-1.1 kubectl=1.36.5-1.1 kubernetes-cni"
    )
    first, hold_containerd, second, hold_kubernetes = positions(
        apt,
        containerd,
        "apt-mark hold containerd.io",
        kubernetes,
        "apt-mark hold kubelet kubeadm kubectl kubernetes-cni",
    )
    assert first < hold_containerd < second < hold_kubernetes
    sources = (host.root / "etc/apt/sources.list.d/kubernetes.list").read_text()
    assert "https://pkgs.k8s.io/core:/stable:/v1.36/deb/ /" in sources
    assert "# off for the kubelet: /swapfile" in (host.root / "etc/fstab").read_text()


def test_boot_installs_the_configured_patch_when_one_is_pinned(host: StubHost) -> None:
    host.kubernetes(server="v0.0.0").packages("1.36.4-1.1", "1.36.5-1.1")
    host.stub("apt-cache", MADISON_BY_PACKAGE)
    boot(host, KUBERNETES_MINOR="1.36", KUBERNETES_PATCH="1.36.4", CONTAINERD_SERIES="2.2")
    assert run_boot(host).returncode == 0
    assert any("kubeadm=1.36.4-1.1" in call for call in host.calls("apt-get"))


def test_boot_fails_clearly_when_kubernetes_cni_brings_no_bridge_plugin(host: StubHost) -> None:
    host.kubernetes(server="v0.0.0").packages("1.36.5-1.1").set(**{"no-cni": "1"})
    host.stub("apt-cache", MADISON_BY_PACKAGE)
    boot(host, KUBERNETES_MINOR="1.36", CONTAINERD_SERIES="2.2")
    result = run_boot(host)
    assert result.returncode == 1
    assert "/opt/cni/bin/bridge is missing: is kubernetes-cni published for this minor?" in result.stderr


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [("1.36", "1.36.10-1.1"), ("1.36.9", "1.36.9-1.2"), ("1.36.1", "1.36.1-1.1")],
)
def test_the_package_version_is_the_newest_of_what_was_asked(host: StubHost, wanted: str, expected: str) -> None:
    host.kubernetes(server="v1.36.1").packages("1.36.1-1.1", "1.36.9-1.1", "1.36.9-1.2", "1.36.10-1.1", "1.37.0-1.1")
    program = step_script("cluster/packages.sh") + f'\nkubernetes_deb_version "{wanted}"\n'
    result = host.run("x", program=program)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected + "\n"
    missing = host.run("x", program=step_script("cluster/packages.sh") + '\nkubernetes_deb_version "1.38"\n')
    assert missing.returncode == 1
    assert "no kubeadm 1.38 package in the configured repositories" in missing.stderr


# ------------------------------------------------------------------------------------------------
# node-config.sh: the material applied without a reboot, once per digest
# ------------------------------------------------------------------------------------------------
def material_env(host: StubHost, *, registry: str, key: str = "") -> dict[str, str]:
    env = kubeadm.node_material(
        registry_host=registry, registry_ca_pem="CA FOR " + registry, operator_ssh_public_key=key
    )
    return {**env, "SSH_USER": "op"}


@pytest.fixture
def node(tmp_path: Path) -> StubHost:
    host = StubHost(tmp_path)
    default = (FIXTURES / "containerd-2.1-default.toml").read_text()
    (tmp_path / "default.toml").write_text(default)
    host.stub("containerd", f'[ "$1 $2" = "config default" ] && cat "{tmp_path / "default.toml"}"\nexit 0\n')
    host.stub("getent", 'echo "op:x:1000:1000::/home/op:/bin/bash"\n')
    ssh = host.root / "home/op/.ssh"
    ssh.mkdir(parents=True)
    (ssh / "authorized_keys").write_text("ssh-ed25519 AAAApulumi pulumi-made\n")
    # containerd's socket, which the step waits for after a restart.
    run = host.root / "run/containerd"
    run.mkdir(parents=True)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(run / "containerd.sock"))
    return host


OPERATOR_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorA laptop"
OPERATOR_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorB desktop"


def test_node_material_is_applied_then_a_second_run_does_nothing(node: StubHost) -> None:
    env = material_env(node, registry="gitlab.example.com:5050", key=OPERATOR_A)
    result = node.run("cluster/node-config.sh", env, libs=["lib/operator-key.sh"])
    assert result.returncode == 0, result.stderr
    certs = node.root / "etc/containerd/certs.d/gitlab.example.com:5050"
    assert (certs / "ca.crt").read_text() == "CA FOR gitlab.example.com:5050"
    assert (certs / "hosts.toml").read_text() == kubeadm.registry_hosts_toml("gitlab.example.com:5050")
    config = (node.root / "etc/containerd/config.toml").read_text()
    assert "SystemdCgroup = true" in config and 'config_path = "/etc/containerd/certs.d"' in config
    assert node.calls("systemctl") == ["systemctl restart containerd"]
    keys = (node.root / "home/op/.ssh/authorized_keys").read_text().splitlines()
    assert keys == ["ssh-ed25519 AAAApulumi pulumi-made", OPERATOR_A]

    node.clear_calls()
    again = node.run("cluster/node-config.sh", env, libs=["lib/operator-key.sh"])
    assert again.returncode == 0, again.stderr
    assert "is applied already: nothing to do" in again.stderr
    assert node.calls("systemctl", "containerd") == []


def test_a_new_registry_and_key_replace_the_old_ones_without_restarting_containerd(node: StubHost) -> None:
    node.run(
        "cluster/node-config.sh",
        material_env(node, registry="old.example.com:5050", key=OPERATOR_A),
        libs=["lib/operator-key.sh"],
    )
    node.clear_calls()
    env = material_env(node, registry="gitlab.example.com:5050", key=OPERATOR_B)
    result = node.run("cluster/node-config.sh", env, libs=["lib/operator-key.sh"])
    assert result.returncode == 0, result.stderr
    certs = node.root / "etc/containerd/certs.d"
    assert sorted(path.name for path in certs.iterdir()) == ["gitlab.example.com:5050"]
    assert node.calls("systemctl") == []  # containerd reads certs.d at pull time
    keys = (node.root / "home/op/.ssh/authorized_keys").read_text().splitlines()
    assert keys == ["ssh-ed25519 AAAApulumi pulumi-made", OPERATOR_B]


def test_an_emptied_operator_key_is_removed_and_other_keys_stay(node: StubHost) -> None:
    step = dict(libs=["lib/operator-key.sh"])
    assert (
        node.run(
            "hosts/operator-ssh-key.sh", {"SSH_USER": "op", "OPERATOR_SSH_PUBLIC_KEY": OPERATOR_A}, **step
        ).returncode
        == 0
    )
    result = node.run("hosts/operator-ssh-key.sh", {"SSH_USER": "op", "OPERATOR_SSH_PUBLIC_KEY": ""}, **step)
    assert result.returncode == 0, result.stderr
    assert (node.root / "home/op/.ssh/authorized_keys").read_text() == "ssh-ed25519 AAAApulumi pulumi-made\n"
    assert "operator SSH key of op removed" in result.stderr


# ------------------------------------------------------------------------------------------------
# control-plane-init.sh: no destructive advice
# ------------------------------------------------------------------------------------------------
SHARED = {name: f"PULUMI {name}\n" for name in kubeadm.SHARED_PKI_FILES}
ENDPOINT = "api.gitops-k8s.internal:6443"
INIT = {"NODE_NAME": "master", "CONTROL_PLANE_ENDPOINT": ENDPOINT}


def init_bundle() -> str:
    shared = [SHARED[name] for name in kubeadm.SHARED_PKI_FILES]
    return kubeadm.stdin_bundle(["CA CERT\n", "CA KEY\n", "kind: InitConfiguration\n", *shared[2:]])


def initialised(host: StubHost) -> None:
    pki = host.root / "etc/kubernetes/pki"
    pki.mkdir(parents=True)
    (pki / "ca.crt").write_text("CA CERT\n")
    (host.root / "etc/kubernetes/admin.conf").write_text("apiVersion: v1\n")
    host.kubernetes(server="v1.36.5").set(endpoint=ENDPOINT)


def test_a_slow_api_server_after_a_reboot_is_waited_for_and_never_reset(host: StubHost) -> None:
    initialised(host)
    host.set(api="down", nodes="master\nworker1\n")
    result = host.run("cluster/control-plane-init.sh", {**INIT, "API_TIMEOUT_SECONDS": "1"}, stdin=init_bundle())
    assert result.returncode == 1
    assert "does not answer: it may still be starting" in result.stderr
    assert "Do not run 'kubeadm reset'" in result.stderr
    assert "reset --force" not in result.stderr
    assert host.calls("kubeadm") == []
    # Once it answers, a registered control plane means nothing to do.
    host.set(api="up")
    result = host.run("cluster/control-plane-init.sh", INIT, stdin=init_bundle())
    assert result.returncode == 0, result.stderr
    assert "already ran and master is registered: nothing to do" in result.stderr
    assert result.stdout == ENDPOINT + "\n"


def test_a_cluster_with_nodes_but_no_control_plane_node_is_told_to_restart_the_kubelet(host: StubHost) -> None:
    initialised(host)
    host.set(nodes="worker1\n")
    result = host.run("cluster/control-plane-init.sh", INIT, stdin=init_bundle())
    assert result.returncode == 1
    assert "restart its kubelet" in result.stderr
    assert "reset" not in result.stderr.replace("Do not run 'kubeadm reset'", "")


# ------------------------------------------------------------------------------------------------
# Workers: admission (token), removal (drain), join
# ------------------------------------------------------------------------------------------------
TOKEN_LIB = ["cluster/bootstrap-token.sh"]
ADMIT = {
    "NODE_NAME": "worker1",
    "TOKEN_TTL_HOURS": "24",
    "TOKEN_GROUP": kubeadm.BOOTSTRAP_TOKEN_GROUP,
    "TIMEOUT_SECONDS": "5",
}


def test_admission_renews_the_token_by_server_side_apply_and_waits_for_the_node(host: StubHost) -> None:
    host.kubernetes(server="v1.36.5")
    result = host.run("cluster/admit-worker.sh", ADMIT, libs=TOKEN_LIB, stdin=TOKEN + "\n")
    assert result.returncode == 0, result.stderr
    assert "0123456789abcdef" not in result.stdout + result.stderr + host.calls_file.read_text()
    (apply,) = [call for call in host.calls("kubectl") if call.startswith("kubectl apply")]
    assert "--server-side" in apply
    secret = yaml.safe_load(host.get("applied"))
    assert secret["metadata"] == {"name": "bootstrap-token-abc123", "namespace": "kube-system"}
    assert secret["type"] == "bootstrap.kubernetes.io/token"
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert (data["token-id"], data["token-secret"]) == ("abc123", "0123456789abcdef")
    assert data["auth-extra-groups"] == kubeadm.BOOTSTRAP_TOKEN_GROUP
    assert data["usage-bootstrap-authentication"] == data["usage-bootstrap-signing"] == "true"
    assert "worker worker1 is Ready" in result.stderr
    # A worker that never becomes Ready fails the step: the next `pulumi up` renews the token again.
    host.set(ready="False")
    result = host.run("cluster/admit-worker.sh", {**ADMIT, "TIMEOUT_SECONDS": "1"}, libs=TOKEN_LIB, stdin=TOKEN + "\n")
    assert result.returncode == 1
    assert "timed out after 1s waiting for worker worker1 to join and be Ready" in result.stderr


def test_a_retried_token_renewal_sends_the_whole_manifest_each_time(host: StubHost) -> None:
    host.kubernetes(server="v1.36.5").set(apply_fails="2")
    result = host.run("cluster/admit-worker.sh", ADMIT, libs=TOKEN_LIB, stdin=TOKEN + "\n")
    assert result.returncode == 0, result.stderr
    applies = [call for call in host.calls("kubectl") if call.startswith("kubectl apply")]
    assert len(applies) == 3
    assert yaml.safe_load(host.get("applied"))["metadata"]["name"] == "bootstrap-token-abc123"
    assert host.get("applied_mode").strip() == "600", "only root reads the file that holds the token"
    manifest = applies[-1].rsplit(" ", 1)[1]
    assert not Path(manifest).exists(), "the file holding the token is removed"


def test_admission_rejects_a_malformed_token_without_printing_it(host: StubHost) -> None:
    host.kubernetes(server="v1.36.5")
    result = host.run("cluster/admit-worker.sh", ADMIT, libs=TOKEN_LIB, stdin="ABC123.0123456789abcdef\n")
    assert result.returncode == 1
    assert "is not [a-z0-9]{6}.[a-z0-9]{16}" in result.stderr
    assert "0123456789abcdef" not in result.stderr
    assert host.calls("kubectl") == []


def test_removal_drains_then_deletes_the_node_and_then_does_nothing(host: StubHost) -> None:
    host.kubernetes(server="v1.36.5").set(nodes="master\nworker3\n")
    env = {"NODE_NAME": "worker3", "DRAIN_TIMEOUT_SECONDS": "600"}
    result = host.run("cluster/remove-worker.sh", env)
    assert result.returncode == 0, result.stderr
    calls = host.calls("kubectl")
    drain, delete = positions(calls, "kubectl drain worker3", "kubectl delete node worker3")
    assert drain < delete
    assert "--ignore-daemonsets --delete-emptydir-data --force --timeout=600s" in calls[drain]
    assert host.get("nodes") == "master\n"
    host.clear_calls()
    again = host.run("cluster/remove-worker.sh", env)
    assert again.returncode == 0
    assert "no Node worker3: nothing to drain" in again.stderr
    assert [call for call in host.calls("kubectl") if "drain" in call or "delete" in call] == []


def test_an_api_server_that_does_not_answer_fails_the_removal_and_keeps_the_instance(host: StubHost) -> None:
    """A control plane that just rebooted answers within minutes: never let a worker go undrained."""
    host.kubernetes(server="v1.36.5").set(nodes="worker3\n", api="down")
    result = host.run(
        "cluster/remove-worker.sh", {"NODE_NAME": "worker3", "DRAIN_TIMEOUT_SECONDS": "5", "API_TIMEOUT_SECONDS": "1"}
    )
    assert result.returncode == 1
    assert "can be neither drained nor deleted from the cluster; its instance is left alone" in result.stderr
    assert "When the control plane cannot be reached" in result.stderr
    assert not [call for call in host.calls("kubectl") if call.startswith(("kubectl drain", "kubectl delete"))]


@pytest.mark.parametrize("ready", ["Unknown", "False", ""])
def test_a_dead_worker_is_not_drained_its_node_is_deleted(host: StubHost, ready: str) -> None:
    """No kubelet confirms a pod's deletion there: a drain would wait on Terminating pods for ever."""
    host.kubernetes(server="v1.36.5").set(nodes="master\nworker3\n", ready=ready)
    env = {"NODE_NAME": "worker3", "DRAIN_TIMEOUT_SECONDS": "600", "NOT_READY_GRACE_SECONDS": "1"}
    result = host.run("cluster/remove-worker.sh", env)
    assert result.returncode == 0, result.stderr
    assert "is not Ready (its kubelet does not report)" in result.stderr
    assert not [call for call in host.calls("kubectl") if call.startswith("kubectl drain")]
    assert "kubectl delete node worker3 --ignore-not-found" in host.calls("kubectl")
    assert host.get("nodes") == "master\n"


def test_a_drain_that_cannot_finish_keeps_the_node_and_fails(host: StubHost) -> None:
    host.kubernetes(server="v1.36.5").set(nodes="worker3\n", drain="fail")
    result = host.run("cluster/remove-worker.sh", {"NODE_NAME": "worker3", "DRAIN_TIMEOUT_SECONDS": "5"})
    assert result.returncode == 1
    assert "could not drain worker3 within 5s" in result.stderr
    assert not [call for call in host.calls("kubectl") if call.startswith("kubectl delete")]
    assert host.get("nodes") == "worker3\n"


def join_bundle() -> str:
    document = kubeadm.render_documents(
        [
            kubeadm.join_configuration(
                node_name="worker1",
                node_ip="10.42.1.10",
                api_server_endpoint="10.42.0.10:6443",
                bootstrap_token=TOKEN,
                ca_cert_hashes=["sha256:" + "0" * 64],
            )
        ]
    )
    return kubeadm.stdin_bundle([document, "CLUSTER CA\n"])


def api_stub(host: StubHost, version: str, signed: bool = True) -> None:
    cluster_info = json.dumps({"data": {"jws-kubeconfig-abc123": "sig"} if signed else {}})
    host.stub(
        "curl",
        f'case "$*" in *"/version"*) echo \'{{"gitVersion": "{version}"}}\' ;; *cluster-info*) echo \'{cluster_info}\' ;; '
        '*) while [ $# -gt 0 ]; do [ "$1" = -o ] && { echo stub >"$2"; shift; }; shift; done ;; esac\n',
    )


def test_a_join_first_installs_the_version_the_cluster_runs_then_joins(host: StubHost) -> None:
    host.kubernetes(server="v1.37.2", kubelet="v1.37.5", kubeadm="v1.37.5").packages("1.37.2-1.1", "1.37.5-1.1")
    api_stub(host, "v1.37.2")
    result = host.run(
        "cluster/worker-join.sh", {"API_SERVER_ENDPOINT": "10.42.0.10:6443"}, libs=PACKAGES, stdin=join_bundle()
    )
    assert result.returncode == 0, result.stderr
    calls = host.calls("apt-get", "kubeadm")
    install, join = positions(calls, "apt-get -o DPkg::Lock::Timeout=300 -q install", "kubeadm join --config")
    assert install < join
    assert "kubelet=1.37.2-1.1 kubeadm=1.37.2-1.1 kubectl=1.37.2-1.1" in calls[install]
    assert TOKEN not in result.stderr + host.calls_file.read_text()


def test_a_join_waits_for_a_valid_token_and_a_joined_node_does_nothing(host: StubHost) -> None:
    host.kubernetes(server="v1.36.5")
    api_stub(host, "v1.36.5", signed=False)
    env = {"API_SERVER_ENDPOINT": "10.42.0.10:6443"}
    program = step_script("cluster/worker-join.sh", PACKAGES).replace("wait_until 900 ", "wait_until 1 ")
    result = host.run("cluster/worker-join.sh", env, program=program, stdin=join_bundle())
    assert result.returncode == 1
    assert "waiting for bootstrap token abc123 to be valid" in result.stderr
    assert not [call for call in host.calls("kubeadm") if call.startswith("kubeadm join")]
    conf = host.root / "etc/kubernetes/kubelet.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("server: https://10.42.0.10:6443\n")
    host.clear_calls()
    result = host.run("cluster/worker-join.sh", env, libs=PACKAGES, stdin=join_bundle())
    assert result.returncode == 0
    assert "already joined to 10.42.0.10:6443: nothing to do" in result.stderr
    assert host.calls("kubeadm", "apt-get") == []


def test_a_node_joined_to_a_former_control_plane_is_reset_and_its_cni_state_cleaned(host: StubHost) -> None:
    host.kubernetes(server="v1.36.5")
    api_stub(host, "v1.36.5")
    host.stub("ip", '[ "$1 $2" = "link show" ] && exit 0\nexit 0\n')
    conf = host.root / "etc/kubernetes/kubelet.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("server: https://10.42.9.9:6443\n")
    cni = host.root / "etc/cni/net.d"
    cni.mkdir(parents=True)
    (cni / "10-flannel.conflist").write_text("{}")
    result = host.run(
        "cluster/worker-join.sh", {"API_SERVER_ENDPOINT": "10.42.0.10:6443"}, libs=PACKAGES, stdin=join_bundle()
    )
    assert result.returncode == 0, result.stderr
    calls = host.calls("kubeadm", "ip")
    reset, cni0, flannel, join = positions(
        calls, "kubeadm reset --force", "ip link delete cni0", "ip link delete flannel.1", "kubeadm join"
    )
    assert reset < cni0 < flannel < join
    assert not cni.exists()


@pytest.mark.parametrize("leftover", ["etc/kubernetes/pki/ca.crt", "etc/kubernetes/bootstrap-kubelet.conf"])
def test_a_join_that_failed_half_way_is_reset_before_the_next_attempt(host: StubHost, leftover: str) -> None:
    """A join cut after its TLS bootstrap left files the next join's preflight refuses."""
    host.kubernetes(server="v1.36.5")
    api_stub(host, "v1.36.5")
    host.stub("ip", '[ "$1 $2" = "link show" ] && exit 0\nexit 0\n')
    (host.root / leftover).parent.mkdir(parents=True, exist_ok=True)
    (host.root / leftover).write_text("left by the failed join\n")
    result = host.run(
        "cluster/worker-join.sh", {"API_SERVER_ENDPOINT": "10.42.0.10:6443"}, libs=PACKAGES, stdin=join_bundle()
    )
    assert result.returncode == 0, result.stderr
    assert "an earlier join did not finish" in result.stderr
    reset, cni0, join = positions(
        host.calls("kubeadm", "ip"), "kubeadm reset --force", "ip link delete cni0", "kubeadm join"
    )
    assert reset < cni0 < join


# ------------------------------------------------------------------------------------------------
# Upgrades
# ------------------------------------------------------------------------------------------------
UPGRADE = {"NODE_NAME": "master", "DRAIN_TIMEOUT_SECONDS": "600", "TIMEOUT_SECONDS": "5", "TARGET_VERSION": ""}


def upgrade(host: StubHost, **env: str) -> subprocess.CompletedProcess[str]:
    return host.run("cluster/control-plane-upgrade.sh", {**UPGRADE, **env}, libs=PACKAGES)


def test_the_gate_lets_the_running_version_through_untouched(host: StubHost) -> None:
    host.kubernetes(server="v1.36.5").packages("1.36.5-1.1", "1.36.9-1.1")
    result = upgrade(host, TARGET_MINOR="1.36")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "v1.36.5\n"
    # No patch chase: a newer 1.36.9 in the repository changes nothing until kubernetesPatch asks.
    assert not [
        call for call in host.calls() if call.startswith(("apt-get", "kubeadm upgrade", "systemctl", "kubectl drain"))
    ]


@pytest.mark.parametrize(
    ("running", "minor", "message"),
    [
        (
            "v1.35.8",
            "1.37",
            "kubeadm upgrades one minor at a time. Set kubernetesVersion to 1.36, run 'pulumi up', then set 1.37",
        ),
        ("v1.37.1", "1.36", "Kubernetes cannot be downgraded. Set kubernetesVersion back to 1.37"),
    ],
)
def test_the_gate_refuses_a_skipped_minor_or_a_downgrade_before_changing_anything(
    host: StubHost, running: str, minor: str, message: str
) -> None:
    host.kubernetes(server=running).packages("1.36.2-1.1", "1.37.2-1.1")
    result = upgrade(host, TARGET_MINOR=minor)
    assert result.returncode == 1
    assert f"refusing kubernetesVersion {minor}: the cluster runs {running}" in result.stderr
    assert message in result.stderr
    assert [call for call in host.calls() if not call.startswith(("kubectl version", "cloud-init"))] == []


def test_the_gate_refuses_a_lower_patch(host: StubHost) -> None:
    host.kubernetes(server="v1.36.5")
    result = upgrade(host, TARGET_MINOR="1.36", TARGET_VERSION="1.36.3")
    assert result.returncode == 1
    assert "Set kubernetesPatch to 1.36.5 or empty" in result.stderr


def test_the_control_plane_upgrades_in_kubeadms_order_then_a_second_run_does_nothing(host: StubHost) -> None:
    host.kubernetes(server="v1.36.5").packages("1.37.0-1.1", "1.37.2-1.1")
    result = upgrade(host, TARGET_MINOR="1.37")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "v1.37.2\n"
    calls = host.calls("apt-get", "kubeadm", "kubectl", "systemctl", "curl")
    order = positions(
        calls,
        "curl -fsSL --max-time 60 -o",  # the v1.37 repository's key
        "apt-get -o DPkg::Lock::Timeout=300 -q install -y --no-install-recommends --allow-downgrades --allow-change-held-packages kubeadm=1.37.2-1.1",
        "kubeadm upgrade plan v1.37.2",
        "kubeadm upgrade apply v1.37.2 --yes",
        "kubectl drain master --ignore-daemonsets --delete-emptydir-data",
        "apt-get -o DPkg::Lock::Timeout=300 -q install -y --no-install-recommends --allow-downgrades --allow-change-held-packages kubeadm=1.37.2-1.1 kubelet=1.37.2-1.1 kubectl=1.37.2-1.1",
        "systemctl restart kubelet",
        "kubectl uncordon master",
    )
    assert order == sorted(order), calls
    assert "pkgs.k8s.io/core:/stable:/v1.37/deb/" in (host.root / "etc/apt/sources.list.d/kubernetes.list").read_text()
    assert host.get("unschedulable") == "" and host.get("annotation") == ""

    host.clear_calls()
    again = upgrade(host, TARGET_MINOR="1.37")
    assert again.returncode == 0, again.stderr
    assert again.stdout == "v1.37.2\n"
    assert not [
        call for call in host.calls() if call.startswith(("apt-get", "kubeadm upgrade", "kubectl drain", "systemctl"))
    ]


def test_an_interrupted_upgrade_resumes_with_the_kubelet(host: StubHost) -> None:
    """kubeadm upgrade apply went through, the kubelet did not: the next run finishes the job."""
    host.kubernetes(server="v1.37.2", kubelet="v1.36.5", kubeadm="v1.37.2").packages("1.37.2-1.1")
    result = upgrade(host, TARGET_MINOR="1.37")
    assert result.returncode == 0, result.stderr
    calls = host.calls("kubeadm", "kubectl", "systemctl")
    assert not [call for call in calls if call.startswith("kubeadm upgrade")]
    drain, restart, uncordon = positions(
        calls, "kubectl drain master", "systemctl restart kubelet", "kubectl uncordon master"
    )
    assert drain < restart < uncordon


def test_an_apply_cut_after_the_api_server_was_swapped_is_applied_again(host: StubHost) -> None:
    """The API server runs the target, the rest of the control plane may not: the marker decides."""
    host.kubernetes(server="v1.36.5").packages("1.37.2-1.1").set(apply="cut")
    cut = upgrade(host, TARGET_MINOR="1.37")
    assert cut.returncode == 1
    assert host.get("server").strip() == "v1.37.2"  # what `kubectl version` now says
    marker = host.root / "etc/gitops/kubernetes-upgrade-to"
    assert marker.read_text() == "v1.37.2\n"

    host.clear_calls()
    resumed = upgrade(host, TARGET_MINOR="1.37")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == "v1.37.2\n"
    assert "finishing the interrupted upgrade of the control plane to v1.37.2" in resumed.stderr
    applies = [call for call in host.calls("kubeadm") if call.startswith("kubeadm upgrade")]
    assert applies == ["kubeadm upgrade apply v1.37.2 --yes"]
    apply, restart = positions(host.calls("kubeadm", "systemctl"), "kubeadm upgrade apply", "systemctl restart kubelet")
    assert apply < restart
    assert not marker.exists()

    host.clear_calls()
    assert upgrade(host, TARGET_MINOR="1.37").returncode == 0
    assert not [call for call in host.calls("kubeadm") if call.startswith("kubeadm upgrade")]


def test_an_interrupted_upgrade_is_finished_to_its_own_target_before_another_is_started(host: StubHost) -> None:
    host.kubernetes(server="v1.36.5", kubeadm="v1.37.2").packages("1.37.2-1.1", "1.37.3-1.1")
    marker = host.root / "etc/gitops/kubernetes-upgrade-to"
    marker.parent.mkdir(parents=True)
    marker.write_text("v1.37.2\n")
    # A newer patch was published since: the interrupted apply still finishes at v1.37.2.
    result = upgrade(host, TARGET_MINOR="1.37")
    assert result.returncode == 0, result.stderr
    assert "kubeadm upgrade apply v1.37.2 --yes" in host.calls("kubeadm")
    # Another target while one is unfinished is refused before anything changes.
    marker.write_text("v1.37.2\n")
    host.clear_calls()
    refused = upgrade(host, TARGET_MINOR="1.38")
    assert refused.returncode == 1
    assert "an upgrade of master to v1.37.2 was interrupted and must be finished first" in refused.stderr
    assert "set kubernetesVersion to 1.37 and kubernetesPatch to 1.37.2" in refused.stderr
    assert [call for call in host.calls() if call.startswith(("apt-get", "kubeadm", "kubectl drain"))] == []


def test_a_version_missing_from_the_repository_fails_by_name_before_any_install(host: StubHost) -> None:
    host.kubernetes(server="v1.36.5").packages("1.36.5-1.1")
    result = upgrade(host, TARGET_MINOR="1.36", TARGET_VERSION="1.36.9")
    assert result.returncode == 1
    assert "no kubeadm 1.36.9 package in the configured repositories" in result.stderr
    assert not [call for call in host.calls("apt-get") if " install " in call]
    # A joining worker, likewise, when the cluster runs a version the repository no longer lists.
    host.clear_calls()
    api_stub(host, "v1.36.9")
    result = host.run(
        "cluster/worker-join.sh", {"API_SERVER_ENDPOINT": "10.42.0.10:6443"}, libs=PACKAGES, stdin=join_bundle()
    )
    assert result.returncode == 1
    assert "no kubeadm 1.36.9 package in the configured repositories" in result.stderr
    assert not [call for call in host.calls("apt-get") if " install " in call]


def test_a_node_an_operator_cordoned_stays_cordoned(host: StubHost) -> None:
    host.kubernetes(server="v1.36.5").packages("1.36.8-1.1").set(unschedulable="true")
    result = upgrade(host, TARGET_MINOR="1.36", TARGET_VERSION="1.36.8")
    assert result.returncode == 0, result.stderr
    assert not [call for call in host.calls("kubectl") if call.startswith("kubectl uncordon")]
    assert host.get("unschedulable") == "true"


WORKER = {"NODE_NAME": "worker1", "KUBERNETES_VERSION": "v1.37.2"}


def test_a_worker_is_drained_upgraded_then_uncordoned_once_ready_at_the_new_version(host: StubHost) -> None:
    host.kubernetes(server="v1.37.2", kubelet="v1.36.5", kubeadm="v1.36.5").packages("1.37.2-1.1")
    steps = [
        ("cluster/worker-upgrade-drain.sh", {**WORKER, "DRAIN_TIMEOUT_SECONDS": "600"}, []),
        ("cluster/worker-upgrade.sh", WORKER, PACKAGES),
        ("cluster/worker-upgrade-uncordon.sh", {**WORKER, "TIMEOUT_SECONDS": "5"}, []),
    ]
    for script, env, libs in steps:
        result = host.run(script, env, libs=libs)
        assert result.returncode == 0, script + result.stderr
    calls = host.calls("kubectl", "kubeadm", "apt-get", "systemctl")
    order = positions(
        calls,
        "kubectl annotate node worker1 gitops/drained-for-upgrade=v1.37.2",
        "kubectl drain worker1 --ignore-daemonsets --delete-emptydir-data",
        "apt-get -o DPkg::Lock::Timeout=300 -q install -y --no-install-recommends --allow-downgrades --allow-change-held-packages kubeadm=1.37.2-1.1 kubernetes-cni",
        "kubeadm upgrade node",
        "apt-get -o DPkg::Lock::Timeout=300 -q install -y --no-install-recommends --allow-downgrades --allow-change-held-packages kubeadm=1.37.2-1.1 kubelet=1.37.2-1.1",
        "systemctl restart kubelet",
        "kubectl uncordon worker1",
        "kubectl annotate node worker1 gitops/drained-for-upgrade-",
    )
    assert order == sorted(order), calls

    host.clear_calls()
    for script, env, libs in steps:
        assert host.run(script, env, libs=libs).returncode == 0
    assert not [
        call
        for call in host.calls()
        if call.startswith(("kubectl drain", "kubectl uncordon", "apt-get", "kubeadm upgrade"))
    ]


def test_a_run_cut_between_the_kubelet_install_and_its_restart_restarts_it(host: StubHost) -> None:
    """The new kubelet is on disk, the old one still runs (the Node reports it): restart it."""
    host.kubernetes(server="v1.37.2", kubelet="v1.37.2", kubeadm="v1.37.2").packages("1.37.2-1.1")
    host.set(node_kubelet="v1.36.5")
    result = host.run("cluster/worker-upgrade.sh", WORKER, libs=PACKAGES)
    assert result.returncode == 0, result.stderr
    assert "systemctl restart kubelet" in host.calls("systemctl")
    assert host.get("node_kubelet").strip() == "v1.37.2"
    # The control plane's own kubelet, likewise, then Ready at the target and uncordoned.
    host.set(node_kubelet="v1.36.5", annotation="v1.37.2", unschedulable="true")
    host.clear_calls()
    result = upgrade(host, TARGET_MINOR="1.37")
    assert result.returncode == 0, result.stderr
    restart, uncordon = positions(host.calls("systemctl", "kubectl"), "systemctl restart kubelet", "kubectl uncordon")
    assert restart < uncordon


def test_the_uncordon_waits_for_the_new_kubelet_to_be_ready(host: StubHost) -> None:
    host.kubernetes(server="v1.37.2", kubelet="v1.36.5").set(annotation="v1.37.2", unschedulable="true")
    result = host.run("cluster/worker-upgrade-uncordon.sh", {**WORKER, "TIMEOUT_SECONDS": "1"})
    assert result.returncode == 1
    assert "waiting for worker1 to be Ready at v1.37.2" in result.stderr
    assert not [call for call in host.calls("kubectl") if call.startswith("kubectl uncordon")]
    assert host.get("unschedulable") == "true"


# ------------------------------------------------------------------------------------------------
# Certificates
# ------------------------------------------------------------------------------------------------
def expiration(days_left: int, expiry: str) -> str:
    return json.dumps(
        {
            "kind": "CertificateExpirationInfo",
            "apiVersion": "output.kubeadm.k8s.io/v1alpha3",
            "certificates": [
                {
                    "name": "admin.conf",
                    "expirationDate": expiry,
                    "residualTime": days_left * 86400 + 60,
                    "externallyManaged": False,
                    "missing": False,
                },
                {
                    "name": "apiserver",
                    "expirationDate": "2030-01-01T00:00:00Z",
                    "residualTime": 999 * 86400,
                    "externallyManaged": False,
                    "missing": False,
                },
                {
                    "name": "external",
                    "expirationDate": "2020-01-01T00:00:00Z",
                    "residualTime": 0,
                    "externallyManaged": True,
                    "missing": False,
                },
            ],
            "certificateAuthorities": [],
        }
    )


def certificates(host: StubHost) -> subprocess.CompletedProcess[str]:
    env = {
        "RENEW_BEFORE_DAYS": "30",
        "RENEWAL_PROGRAM": step_script("cluster/renew-certificates.sh"),
        "FILE_CHECK_SECONDS": "0",
    }
    return host.run("cluster/certificates.sh", env)


@pytest.fixture
def control_plane(host: StubHost) -> StubHost:
    host.kubernetes(server="v1.36.5").stub("crictl")
    manifests = host.root / "etc/kubernetes/manifests"
    manifests.mkdir(parents=True)
    for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        (manifests / f"{component}.yaml").write_text(f"name: {component}\n")
    return host


def test_certificates_far_from_expiry_are_left_alone_and_the_timer_is_installed(control_plane: StubHost) -> None:
    control_plane.set(**{"expiration.json": expiration(200, "2027-06-18T10:00:00Z")})
    result = certificates(control_plane)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "2027-06-18T10:00:00Z\n"
    assert not [call for call in control_plane.calls("kubeadm") if "renew" in call]
    timer = (control_plane.root / "etc/systemd/system/gitops-kubeadm-certs.timer").read_text()
    assert "OnCalendar=daily" in timer and "Persistent=true" in timer
    service = (control_plane.root / "etc/systemd/system/gitops-kubeadm-certs.service").read_text()
    assert "ExecStart=/usr/local/lib/gitops/renew-kubeadm-certificates" in service
    assert "RENEW_BEFORE_DAYS=30" in service
    program = control_plane.root / "usr/local/lib/gitops/renew-kubeadm-certificates"
    assert program.read_text() == step_script("cluster/renew-certificates.sh") + "\n"
    assert "systemctl enable --now gitops-kubeadm-certs.timer" in control_plane.calls("systemctl")


def test_certificates_close_to_expiry_are_renewed_and_the_static_pods_restarted(control_plane: StubHost) -> None:
    control_plane.set(
        **{
            "expiration.json": expiration(20, "2026-12-20T10:00:00Z"),
            "renewed.json": expiration(364, "2027-11-29T10:00:00Z"),
        }
    )
    moves = control_plane.root / "moves"
    control_plane.stub("mv", f'echo "$*" >>"{moves}"\nexec /bin/mv "$@"\n')
    result = certificates(control_plane)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "2027-11-29T10:00:00Z\n"
    calls = control_plane.calls("kubeadm", "mv", "crictl", "kubectl")
    renew, park, stopped, restore, answers = positions(
        calls,
        "kubeadm certs renew all",
        "mv -f " + str(control_plane.root / "etc/kubernetes/manifests/etcd.yaml"),
        "crictl ps --quiet --name",
        "mv -f " + str(control_plane.root / "etc/kubernetes/manifests-restarting/etcd.yaml"),
        "kubectl get --raw /readyz",
    )
    assert renew < park < stopped < restore < answers
    manifests = sorted(path.name for path in (control_plane.root / "etc/kubernetes/manifests").iterdir())
    assert manifests == ["etcd.yaml", "kube-apiserver.yaml", "kube-controller-manager.yaml", "kube-scheduler.yaml"]
    # The next day's check renews nothing.
    control_plane.clear_calls()
    assert certificates(control_plane).returncode == 0
    assert not [call for call in control_plane.calls("kubeadm") if "renew" in call]


def test_manifests_parked_by_an_interrupted_renewal_are_put_back_first(control_plane: StubHost) -> None:
    parked = control_plane.root / "etc/kubernetes/manifests-restarting"
    parked.mkdir()
    (control_plane.root / "etc/kubernetes/manifests/etcd.yaml").rename(parked / "etcd.yaml")
    control_plane.set(**{"expiration.json": expiration(200, "2027-06-18T10:00:00Z")})
    result = certificates(control_plane)
    assert result.returncode == 0, result.stderr
    assert (control_plane.root / "etc/kubernetes/manifests/etcd.yaml").exists()
    assert "moved back" in result.stderr


@pytest.mark.parametrize(
    "check",
    [
        "echo 'error: unable to read the kubeadm configuration' >&2; exit 1",  # the check itself fails
        "echo '{}'",  # no certificate listed
        # A future output API that renamed a field: unknown, so nothing is assumed.
        """echo '{"certificates": [{"name": "apiserver", "expirationDate": "2027-01-01T00:00:00Z", "residualTimeSeconds": 5}]}'""",
    ],
)
def test_an_expiry_check_that_fails_renews_nothing_and_restarts_nothing(control_plane: StubHost, check: str) -> None:
    control_plane.stub("kubeadm", f'[ "$1 $2" = "certs check-expiration" ] && {{ {check}; }}\nexit 0\n')
    moves = control_plane.root / "moves"
    control_plane.stub("mv", f'echo "$*" >>"{moves}"\nexec /bin/mv "$@"\n')
    result = certificates(control_plane)
    assert result.returncode == 1
    assert "could not read the certificates' expiry" in result.stderr
    assert "nothing renewed, nothing restarted" in result.stderr
    assert result.stdout == ""
    assert not [call for call in control_plane.calls("kubeadm") if "renew" in call]
    assert control_plane.calls("mv", "crictl") == []
    assert len(list((control_plane.root / "etc/kubernetes/manifests").iterdir())) == 4


@pytest.fixture
def kubeadm_lock(host: StubHost) -> Iterator[None]:
    """Another kubeadm program (the renewal timer, an upgrade) holds the control plane's lock."""
    path = host.root / "run/gitops-kubeadm.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        yield


def test_a_renewal_waits_for_an_upgrade_in_progress_and_moves_nothing(control_plane: StubHost, kubeadm_lock) -> None:
    control_plane.set(**{"expiration.json": expiration(20, "2026-12-20T10:00:00Z")})
    parked = control_plane.root / "etc/kubernetes/manifests-restarting"
    parked.mkdir()
    (parked / "kube-apiserver.yaml").write_text("new manifest being written by kubeadm\n")
    result = control_plane.run(
        "cluster/renew-certificates.sh",
        {"RENEW_BEFORE_DAYS": "30", "LOCK_WAIT_SECONDS": "1", "FILE_CHECK_SECONDS": "0"},
    )
    assert result.returncode == 1
    assert "still holds" in result.stderr and "nothing was changed" in result.stderr
    assert control_plane.calls("kubeadm", "crictl") == []
    assert (parked / "kube-apiserver.yaml").exists()  # not moved over anything


def test_an_upgrade_waits_for_a_renewal_in_progress(host: StubHost, kubeadm_lock) -> None:
    host.kubernetes(server="v1.36.5").packages("1.37.2-1.1")
    result = upgrade(host, TARGET_MINOR="1.37", LOCK_WAIT_SECONDS="1")
    assert result.returncode == 1
    assert "the certificate renewal on this control plane" in result.stderr
    assert [call for call in host.calls() if call.startswith(("apt-get", "kubeadm", "kubectl"))] == []


# ------------------------------------------------------------------------------------------------
# A highly available control plane: init with the shared keys, the check, joins, member removal
# ------------------------------------------------------------------------------------------------
MEMBERS = (
    "8e9e05c52164694d, started, master, https://10.42.0.10:2380, https://10.42.0.10:2379, false\n"
    "91bc3c398fb3c146, started, master2, https://10.42.1.20:2380, https://10.42.1.20:2379, false\n"
    "fd422379fda50e48, started, master3, https://10.42.2.30:2380, https://10.42.2.30:2379, false\n"
)
MEMBER_LIBS = ["cluster/bootstrap-token.sh", "cluster/etcd-members.sh"]


def first_node(host: StubHost, *, members: str = MEMBERS, nodes: str = "master\nmaster2\nmaster3\n") -> StubHost:
    """The first control-plane node: kubectl with admin.conf, crictl in front of its etcd."""
    host.kubernetes(server="v1.36.5").set(members=members, nodes=nodes, endpoint=ENDPOINT)
    host.stub("crictl", CRICTL).stub("hostname", "echo master\n")
    return host


def test_init_places_every_shared_key_once_the_name_resolves_then_prints_the_endpoint(host: StubHost) -> None:
    host.kubernetes(server="v1.36.5").set(endpoint=ENDPOINT, nodes="master\n")
    host.stub("getent", f'[ "$1 $2" = "hosts {ENDPOINT[:-5]}" ] && echo "10.42.0.10 {ENDPOINT[:-5]}"\n')
    result = host.run("cluster/control-plane-init.sh", INIT, stdin=init_bundle())
    assert result.returncode == 0, result.stderr
    assert result.stdout == ENDPOINT + "\n", "stdout is the endpoint alone"
    calls = host.calls("getent", "kubeadm")
    resolve, init = positions(calls, "getent hosts api.gitops-k8s.internal", "kubeadm init --config")
    assert resolve < init and "--skip-token-print" in calls[init] and "--upload-certs" not in calls[init]
    pki = host.root / "etc/kubernetes/pki"
    assert (pki / "ca.crt").read_text() == "CA CERT\n" and (pki / "ca.key").read_text() == "CA KEY\n"
    for name in kubeadm.SHARED_PKI_FILES[2:]:
        assert (pki / name).read_text() == SHARED[name], name
        assert stat.S_IMODE((pki / name).stat().st_mode) == (0o600 if name.endswith(".key") else 0o644), name


def test_init_on_a_cluster_made_before_the_stable_endpoint_keeps_its_own_keys_and_reports_its_address(
    host: StubHost,
) -> None:
    initialised(host)
    pki = host.root / "etc/kubernetes/pki"
    (pki / "sa.pub").write_text("KUBEADM'S OWN\n")
    host.set(endpoint="10.42.0.10:6443", nodes="master\nworker1\n")
    result = host.run("cluster/control-plane-init.sh", INIT, stdin=init_bundle())
    assert result.returncode == 0, result.stderr
    assert result.stdout == "10.42.0.10:6443\n"
    assert "workers and GitLab keep using 10.42.0.10:6443" in result.stderr
    assert (pki / "sa.pub").read_text() == "KUBEADM'S OWN\n", "a running cluster's keys are never replaced"
    assert not (pki / "etcd").exists()
    assert host.calls("kubeadm") == []


def check_env(files: dict[str, str]) -> dict[str, str]:
    digests = kubeadm.shared_public_digests(files["sa.pub"], files["front-proxy-ca.crt"], files["etcd/ca.crt"])
    return {"CONTROL_PLANE_ENDPOINT": ENDPOINT, "SHARED_PUBLIC_SHA256": digests}


def pki_with(host: StubHost, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = host.root / "etc/kubernetes/pki" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_ha_check_passes_a_cluster_made_with_the_stable_endpoint_and_the_programs_keys(host: StubHost) -> None:
    first_node(host)
    pki_with(host, SHARED)
    result = host.run("cluster/control-plane-ha-check.sh", check_env(SHARED))
    assert result.returncode == 0, result.stderr
    assert "can take further control-plane nodes" in result.stderr


@pytest.mark.parametrize(
    ("endpoint", "kubeadm_made", "reason"),
    [
        ("10.42.0.10:6443", (), "its controlPlaneEndpoint is 10.42.0.10:6443, not the stable"),
        (ENDPOINT, ("sa.pub", "etcd/ca.crt"), "its sa.pub was made by kubeadm on this node"),
    ],
)
def test_the_ha_check_refuses_a_cluster_made_before_and_names_the_way_forward(
    host: StubHost, endpoint: str, kubeadm_made: tuple[str, ...], reason: str
) -> None:
    first_node(host).set(endpoint=endpoint)
    pki_with(host, {**SHARED, **{name: "KUBEADM'S OWN\n" for name in kubeadm_made}})
    result = host.run("cluster/control-plane-ha-check.sh", check_env(SHARED))
    assert result.returncode == 1
    assert "refusing controlPlaneCount 3" in result.stderr and reason in result.stderr
    assert "Set controlPlaneCount back to 1" in result.stderr and "'Highly available control plane'" in result.stderr
    assert [call for call in host.calls("kubectl") if "get configmap" not in call] == []  # changed nothing


JOIN_CP = {"NODE_NAME": "master2", "API_SERVER_ENDPOINT": ENDPOINT, "TIMEOUT_SECONDS": "5"}


def control_plane_join_bundle() -> str:
    document = kubeadm.render_documents(
        [
            kubeadm.join_configuration(
                node_name="master2",
                node_ip="10.42.1.20",
                api_server_endpoint=ENDPOINT,
                bootstrap_token=TOKEN,
                ca_cert_hashes=["sha256:" + "0" * 64],
                control_plane=True,
            )
        ]
    )
    return kubeadm.stdin_bundle([document, *(SHARED[name] for name in kubeadm.SHARED_PKI_FILES)])


def joined_control_plane(host: StubHost) -> None:
    """What kubeadm join --control-plane leaves on a node: admin.conf, kubelet.conf, static pods."""
    k8s = host.root / "etc/kubernetes"
    (k8s / "manifests").mkdir(parents=True, exist_ok=True)
    for name in ("admin.conf", "kubelet.conf", "manifests/etcd.yaml"):
        (k8s / name).write_text("written by kubeadm join\n")


def test_a_control_plane_join_places_exactly_the_shared_files_then_joins_and_waits_until_ready(
    host: StubHost,
) -> None:
    host.kubernetes(server="v1.37.2", kubelet="v1.37.5", kubeadm="v1.37.5").packages("1.37.2-1.1", "1.37.5-1.1")
    host.set(nodes="master\nmaster2\n")
    api_stub(host, "v1.37.2")
    result = host.run("cluster/control-plane-join.sh", JOIN_CP, libs=PACKAGES, stdin=control_plane_join_bundle())
    assert result.returncode == 0, result.stderr
    calls = host.calls("apt-get", "kubeadm", "kubectl")
    install, join, ready = positions(
        calls, "apt-get -o DPkg::Lock::Timeout=300 -q install", "kubeadm join --config", "kubectl get node master2"
    )
    assert install < join < ready
    assert "kubelet=1.37.2-1.1 kubeadm=1.37.2-1.1 kubectl=1.37.2-1.1" in calls[install]
    assert "control-plane node master2 is Ready" in result.stderr
    pki = host.root / "etc/kubernetes/pki"
    placed = sorted(str(path.relative_to(pki)) for path in pki.rglob("*") if path.is_file())
    assert placed == sorted(kubeadm.SHARED_PKI_FILES), "kubeadm makes the rest, with this node's names"
    assert all((pki / name).read_text() == SHARED[name] for name in kubeadm.SHARED_PKI_FILES)
    assert stat.S_IMODE((pki / "etcd/ca.key").stat().st_mode) == 0o600
    assert TOKEN not in result.stderr + host.calls_file.read_text()
    # Once joined, a second run only waits until Ready.
    joined_control_plane(host)
    host.clear_calls()
    again = host.run("cluster/control-plane-join.sh", JOIN_CP, libs=PACKAGES, stdin=control_plane_join_bundle())
    assert again.returncode == 0, again.stderr
    assert "already joined as a control-plane node" in again.stderr
    assert host.calls("kubeadm", "apt-get") == []


def test_a_control_plane_join_that_failed_half_way_leaves_the_cluster_before_joining_again(host: StubHost) -> None:
    """Its etcd mirror Pod would fail the next join's etcd check, and reset removes its member."""
    host.kubernetes(server="v1.36.5").set(nodes="master\nmaster2\n")
    api_stub(host, "v1.36.5")
    host.stub("ip", '[ "$1 $2" = "link show" ] && exit 0\nexit 0\n')
    k8s = host.root / "etc/kubernetes"
    (k8s / "pki").mkdir(parents=True)
    (k8s / "pki/ca.crt").write_text("left behind\n")
    (k8s / "admin.conf").write_text("left behind\n")
    host.set(ready="False")  # its Node exists but the join never finished
    program = step_script("cluster/control-plane-join.sh", PACKAGES).replace(
        'wait_until "$TIMEOUT', 'true || wait_until "$T'
    )
    result = host.run("cluster/control-plane-join.sh", JOIN_CP, program=program, stdin=control_plane_join_bundle())
    assert result.returncode == 0, result.stderr
    calls = host.calls("kubectl", "kubeadm", "ip")
    node, mirrors, reset, join = positions(
        calls,
        "kubectl delete node master2",
        "kubectl -n kube-system delete pod -l tier=control-plane --field-selector spec.nodeName=master2",
        "kubeadm reset --force",
        "kubeadm join --config",
    )
    assert node < mirrors < reset < join


def test_a_control_plane_join_refuses_a_join_configuration_without_its_control_plane_section(host: StubHost) -> None:
    host.kubernetes(server="v1.36.5")
    bundle = kubeadm.stdin_bundle([join_bundle_document(), *(SHARED[name] for name in kubeadm.SHARED_PKI_FILES)])
    result = host.run("cluster/control-plane-join.sh", JOIN_CP, libs=PACKAGES, stdin=bundle)
    assert result.returncode == 1
    assert "has no controlPlane section" in result.stderr
    assert host.calls("kubeadm") == []


def join_bundle_document() -> str:
    return base64.b64decode(join_bundle().splitlines()[0]).decode()


ADMIT_CP = {
    "NODE_NAME": "master2",
    "NODE_IP": "10.42.1.20",
    "TOKEN_TTL_HOURS": "24",
    "TOKEN_GROUP": kubeadm.BOOTSTRAP_TOKEN_GROUP,
}


def test_admitting_a_member_renews_the_token_and_touches_a_healthy_member_not_at_all(host: StubHost) -> None:
    first_node(host).set(node_ip="10.42.1.20")
    result = host.run("cluster/admit-control-plane.sh", ADMIT_CP, libs=MEMBER_LIBS, stdin=TOKEN + "\n")
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(host.get("applied"))["metadata"]["name"] == "bootstrap-token-abc123"
    assert host.get("members") == MEMBERS
    assert not [call for call in host.calls("kubectl") if call.startswith("kubectl delete")]
    assert "master2 (10.42.1.20) may join" in result.stderr


def test_admitting_a_replacement_removes_what_its_predecessor_left_behind(host: StubHost) -> None:
    """The predecessor was terminated outside Pulumi: its member and Node still name master2."""
    first_node(host).set(node_ip="10.42.1.20")
    result = host.run(
        "cluster/admit-control-plane.sh", {**ADMIT_CP, "NODE_IP": "10.42.1.99"}, libs=MEMBER_LIBS, stdin=TOKEN + "\n"
    )
    assert result.returncode == 0, result.stderr
    assert "91bc3c398fb3c146" not in host.get("members"), "the predecessor's etcd member is gone"
    assert "8e9e05c52164694d" in host.get("members") and "fd422379fda50e48" in host.get("members")
    calls = host.calls("crictl", "kubectl")
    remove, node = positions(calls, "crictl exec 3f2a9c1d0b7e etcdctl", "kubectl delete node master2")
    assert "member remove 91bc3c398fb3c146" in " ".join(c for c in calls if "member remove" in c)
    assert remove < node
    etcdctl = next(call for call in calls if "member remove" in call)
    assert "--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt" in etcdctl
    assert "--endpoints=https://127.0.0.1:2379" in etcdctl


def unstarted(members: str, *, instead_of: str, at: str) -> str:
    """MEMBERS with the line of member `instead_of` replaced by a learner added at `at` and never started."""
    learner = f"5d3c2b1a09f8e7d6, unstarted, , https://{at}:2380, , true"
    return "".join(learner + "\n" if f", {instead_of}, " in line else line + "\n" for line in members.splitlines())


def member_removals(host: StubHost) -> list[str]:
    return [call for call in host.calls("crictl") if "member remove" in call]


def test_admitting_a_member_removes_a_learner_a_failed_join_left_at_another_address_once(host: StubHost) -> None:
    """An instance whose join failed before its etcd started, replaced outside Pulumi: etcd admits one learner."""
    first_node(host, members=unstarted(MEMBERS, instead_of="master2", at="10.42.1.77"), nodes="master\nmaster3\n")
    result = host.run("cluster/admit-control-plane.sh", ADMIT_CP, libs=MEMBER_LIBS, stdin=TOKEN + "\n")
    assert result.returncode == 0, result.stderr
    assert [call.split()[-1] for call in member_removals(host)] == ["5d3c2b1a09f8e7d6"]
    assert [line.split(", ")[2] for line in host.get("members").splitlines()] == ["master", "master3"]
    assert "5d3c2b1a09f8e7d6 at https://10.42.1.77:2380 was added but never started" in result.stderr
    host.clear_calls()
    again = host.run("cluster/admit-control-plane.sh", ADMIT_CP, libs=MEMBER_LIBS, stdin=TOKEN + "\n")
    assert again.returncode == 0, again.stderr
    assert member_removals(host) == []


def test_admitting_a_member_keeps_its_own_unstarted_learner_and_every_started_member(host: StubHost) -> None:
    """kubeadm's join reuses a member at its own peer URL; the others hold etcd's quorum."""
    members = unstarted(MEMBERS, instead_of="master2", at="10.42.1.20")
    first_node(host, members=members, nodes="master\nmaster3\n")
    result = host.run("cluster/admit-control-plane.sh", ADMIT_CP, libs=MEMBER_LIBS, stdin=TOKEN + "\n")
    assert result.returncode == 0, result.stderr
    assert member_removals(host) == []
    assert host.get("members") == members


def test_admitting_a_member_never_removes_a_started_member_of_another_name(host: StubHost) -> None:
    """master3 at an address no Pulumi instance has any more is still a voter: only its own removal takes it."""
    members = MEMBERS.replace("10.42.2.30", "10.42.2.99")
    first_node(host, members=members)
    result = host.run("cluster/admit-control-plane.sh", ADMIT_CP, libs=MEMBER_LIBS, stdin=TOKEN + "\n")
    assert result.returncode == 0, result.stderr
    assert member_removals(host) == []
    assert host.get("members") == members


REMOVE_CP = {"NODE_NAME": "master2", "NODE_IP": "10.42.1.20", "DRAIN_TIMEOUT_SECONDS": "600"}


def test_removing_a_member_drains_it_removes_its_etcd_member_then_its_node_and_then_does_nothing(
    host: StubHost,
) -> None:
    first_node(host)
    result = host.run("cluster/remove-control-plane.sh", REMOVE_CP, libs=MEMBER_LIBS)
    assert result.returncode == 0, result.stderr
    calls = host.calls("kubectl", "crictl")
    drain, remove, node, mirrors = positions(
        calls,
        "kubectl drain master2",
        "crictl exec 3f2a9c1d0b7e etcdctl",
        "kubectl delete node master2",
        "kubectl -n kube-system delete pod -l tier=control-plane",
    )
    assert drain < remove < node < mirrors
    assert "--ignore-daemonsets --delete-emptydir-data --force --timeout=600s" in calls[drain]
    assert [line.split(", ")[2] for line in host.get("members").splitlines()] == ["master", "master3"]
    assert host.get("nodes") == "master\nmaster3\n"
    host.clear_calls()
    again = host.run("cluster/remove-control-plane.sh", REMOVE_CP, libs=MEMBER_LIBS)
    assert again.returncode == 0, again.stderr
    assert not [call for call in host.calls("crictl") if "member remove" in call]
    assert not [call for call in host.calls("kubectl") if call.startswith("kubectl drain")]


def test_a_dead_member_is_not_drained_but_still_leaves_etcd(host: StubHost) -> None:
    first_node(host).set(ready="Unknown")
    env = {**REMOVE_CP, "NOT_READY_GRACE_SECONDS": "1"}
    result = host.run("cluster/remove-control-plane.sh", env, libs=MEMBER_LIBS)
    assert result.returncode == 0, result.stderr
    assert "master2 is not Ready" in result.stderr
    assert not [call for call in host.calls("kubectl") if call.startswith("kubectl drain")]
    assert "master2" not in host.get("members")


def test_a_member_etcd_will_not_let_go_is_kept_with_its_node_and_instance(host: StubHost) -> None:
    """etcd refuses a removal that would cost its quorum (--strict-reconfig-check)."""
    first_node(host).set(remove_fails="yes")
    result = host.run("cluster/remove-control-plane.sh", REMOVE_CP, libs=MEMBER_LIBS)
    assert result.returncode == 1
    assert "etcd refused to remove member 91bc3c398fb3c146 (master2)" in result.stderr
    assert host.get("nodes") == "master\nmaster2\nmaster3\n"
    assert not [call for call in host.calls("kubectl") if call.startswith("kubectl delete")]


def test_removing_a_member_never_runs_on_the_member_itself(host: StubHost) -> None:
    first_node(host)
    result = host.run("cluster/remove-control-plane.sh", {**REMOVE_CP, "NODE_NAME": "master"}, libs=MEMBER_LIBS)
    assert result.returncode == 1
    assert "refusing to remove master from itself" in result.stderr
    assert host.get("members") == MEMBERS


UPGRADE_NODE = {
    "NODE_NAME": "master2",
    "KUBERNETES_VERSION": "v1.37.2",
    "DRAIN_TIMEOUT_SECONDS": "600",
    "TIMEOUT_SECONDS": "5",
}


def api_server_manifest(host: StubHost, version: str) -> None:
    manifests = host.root / "etc/kubernetes/manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    (manifests / "kube-apiserver.yaml").write_text(
        f"spec:\n  containers:\n  - image: registry.k8s.io/kube-apiserver:{version}\n"
    )


def test_a_further_control_plane_node_upgrades_with_kubeadm_upgrade_node_then_its_kubelet(host: StubHost) -> None:
    host.kubernetes(server="v1.37.2", kubelet="v1.36.5", kubeadm="v1.36.5").packages("1.37.2-1.1")
    api_server_manifest(host, "v1.36.5")
    host.stub("kubeadm", KUBEADM_UPGRADE_NODE)
    result = host.run("cluster/control-plane-upgrade-node.sh", UPGRADE_NODE, libs=PACKAGES)
    assert result.returncode == 0, result.stderr
    calls = host.calls("kubeadm", "kubectl", "apt-get", "systemctl")
    upgrade, drain, kubelet, restart, uncordon = positions(
        calls,
        "kubeadm upgrade node",
        "kubectl drain master2",
        "apt-get -o DPkg::Lock::Timeout=300 -q install -y --no-install-recommends --allow-downgrades "
        "--allow-change-held-packages kubeadm=1.37.2-1.1 kubelet=1.37.2-1.1",
        "systemctl restart kubelet",
        "kubectl uncordon master2",
    )
    assert upgrade < drain < kubelet < restart < uncordon
    assert not [call for call in calls if call.startswith("kubeadm upgrade apply")], "apply is the first node's"
    host.clear_calls()
    again = host.run("cluster/control-plane-upgrade-node.sh", UPGRADE_NODE, libs=PACKAGES)
    assert again.returncode == 0, again.stderr
    assert host.calls("kubeadm", "apt-get", "systemctl") == ["kubeadm version -o short"]


# `kubeadm upgrade node` on a control-plane node rewrites its static pod manifests at the new version.
KUBEADM_UPGRADE_NODE = r"""
case "$1 $2" in
  "version -o") cat "$STATE/kubeadm" ;;
  "upgrade node")
    sed -i "s|kube-apiserver:v[0-9.]*|kube-apiserver:$(cat "$STATE/kubeadm")|" "$FS_ROOT/etc/kubernetes/manifests/kube-apiserver.yaml"
    echo "[upgrade] The control plane instance for this node was successfully upgraded!" ;;
esac
"""


def test_coredns_is_spread_once_when_it_runs_on_a_single_node(host: StubHost) -> None:
    host.kubernetes(server="v1.36.5").set(dns_nodes="master\nmaster\n")
    result = host.run("cluster/spread-coredns.sh", {"TIMEOUT_SECONDS": "60"})
    assert result.returncode == 0, result.stderr
    restart, status = positions(
        host.calls("kubectl"),
        "kubectl -n kube-system rollout restart deployment coredns",
        "kubectl -n kube-system rollout status deployment coredns",
    )
    assert restart < status
    assert "CoreDNS runs on worker1 worker2" in result.stderr
    host.clear_calls()
    again = host.run("cluster/spread-coredns.sh", {"TIMEOUT_SECONDS": "60"})
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stderr
    assert not [call for call in host.calls("kubectl") if "rollout" in call]


FORWARDING = {
    "API_HOST": "api.gitops-k8s.internal",
    "API_PORT": "6443",
    "LOAD_BALANCER_HOST": "gitops-k8s-api-0123456789.elb.eu-west-3.amazonaws.com",
    "WAIT_SECONDS": "3",
}


def initialised_first_node(host: StubHost) -> StubHost:
    """A first node kubeadm init has run on (its admin.conf exists)."""
    (host.root / "etc/kubernetes").mkdir(parents=True, exist_ok=True)
    (host.root / "etc/kubernetes/admin.conf").write_text("apiVersion: v1\n")
    return first_node(host)


NLB_ADDRESSES = 'printf "10.42.0.200 STREAM %s\\n10.42.0.200 DGRAM\\n10.42.1.200 STREAM\\n" "$2"\n'


def test_the_name_waits_until_every_load_balancer_address_forwards_to_a_ready_api_server(host: StubHost) -> None:
    initialised_first_node(host).stub("getent", NLB_ADDRESSES)
    # The second zone's address forwards only from the third round (its target still in initial checks).
    host.stub(
        "curl",
        'n=$(cat "$STATE/curls" 2>/dev/null || echo 0); echo $((n + 1)) >"$STATE/curls"\n'
        'case "$*" in *10.42.1.200*) [ "$n" -ge 4 ] ;; esac\n',
    )
    result = host.run("cluster/api-through-load-balancer.sh", FORWARDING)
    assert result.returncode == 0, result.stderr
    calls = host.calls("curl")
    assert [call.count("10.42.1.200") for call in calls] == [0, 1, 0, 1, 0, 1]  # each address, every round
    assert "--connect-to api.gitops-k8s.internal:6443:10.42.0.200:6443" in calls[0]
    assert "https://api.gitops-k8s.internal:6443/readyz" in calls[0] and "/etc/kubernetes/pki/ca.crt" in calls[0]
    assert host.calls("getent")[0] == "getent ahostsv4 gitops-k8s-api-0123456789.elb.eu-west-3.amazonaws.com"
    assert "the name can move to it" in result.stderr


@pytest.mark.parametrize("getent", ["exit 2\n", NLB_ADDRESSES])
def test_the_name_move_fails_bounded_when_the_load_balancer_never_forwards(host: StubHost, getent: str) -> None:
    initialised_first_node(host).stub("getent", getent).stub("curl", "exit 28\n")  # or its name never resolves
    result = host.run("cluster/api-through-load-balancer.sh", {**FORWARDING, "WAIT_SECONDS": "0"})
    assert result.returncode == 1
    assert "timed out after 0s waiting for the API server through every address of the load balancer" in result.stderr
    assert "describe-target-health" in result.stderr


def test_a_new_cluster_moves_the_name_at_once_since_kubeadm_init_waits_for_it(host: StubHost) -> None:
    host.stub("curl", "exit 7\n")  # nothing answers yet
    result = host.run("cluster/api-through-load-balancer.sh", FORWARDING)
    assert result.returncode == 0, result.stderr
    assert host.calls("curl") == []
    assert "kubeadm init has not run on this node yet" in result.stderr
