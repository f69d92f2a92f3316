"""A stand-in host for behaviour tests of the shell steps: stub commands first on PATH, a scratch root.

A step runs exactly as components/remote.py sends it (common.sh, its libraries, the step) under
bash, with ``FS_ROOT`` pointing the files it writes into a scratch directory. Every stub appends
``<command> <arguments>`` to a call log, so a test asserts which commands ran and in what order;
the Kubernetes and apt stubs keep a little state in files (the API server's version, the kubelet's,
a node's cordon) so a second run sees what the first one did, as on a real host.

The stubs print what the real commands print on stdout (apt-get's and dpkg's progress, kubeadm's
phases, kubectl's "node/x cordoned"): a step whose stdout the program reads must keep all of it off
its own stdout (userdata/lib/common.sh ``stdout_is_the_result``), and the tests see when it does not.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from components.remote import step_script

LOG_CALL = 'printf \'%s\\n\' "$(basename "$0") $*" >>"$CALLS"\n'

# What the cluster's hosts answer, kept in $STATE/<name> files. Versions are vX.Y.Z.
KUBECTL = r"""
state() { cat "$STATE/$1" 2>/dev/null || true; }
case "$*" in
  "version -o json") printf '{"serverVersion": {"gitVersion": "%s"}}\n' "$(state server)" ;;
  "get --raw /readyz") [ "$(state api)" != "down" ] ;;
  "-n kube-system get configmap kubeadm-config "*) printf 'apiServer: {}\ncontrolPlaneEndpoint: %s\nkind: ClusterConfiguration\n' "$(state endpoint)" ;;
  "-n kube-system get pods -l k8s-app=kube-dns "*) state dns_nodes ;;
  "-n kube-system rollout restart deployment coredns") printf 'worker1\nworker2\n' >"$STATE/dns_nodes"; echo "deployment.apps/coredns restarted" ;;
  "-n kube-system rollout status "*) echo 'deployment "coredns" successfully rolled out' ;;
  "-n kube-system delete pod "*) echo "pod deleted" ;;
  "get node "*"InternalIP"*) state node_ip ;;
  "get node "*"kubeletVersion"*) state node_kubelet ;;
  "get node "*"unschedulable"*) state unschedulable ;;
  "get node "*"annotations"*) state annotation ;;
  "get node "*"Ready"*) printf '%s' "$(state ready)" ;;
  "get node "*) grep -qx "$3" "$STATE/nodes" 2>/dev/null ;;
  "get nodes -o name") sed 's|^|node/|' "$STATE/nodes" 2>/dev/null || true ;;
  "annotate node "*"-") rm -f "$STATE/annotation"; echo "node/$3 annotated" ;;
  "annotate node "*) printf '%s' "${4#*=}" >"$STATE/annotation"; echo "node/$3 annotated" ;;
  "drain "*)
    echo "node/$2 cordoned"
    [ "$(state drain)" != "fail" ] || { echo "error: cannot evict pod as it would violate the pod's disruption budget." >&2; exit 1; }
    printf true >"$STATE/unschedulable"
    echo "node/$2 drained" ;;
  "uncordon "*) rm -f "$STATE/unschedulable"; echo "node/$2 uncordoned" ;;
  "delete node "*) sed -i "/^$3\$/d" "$STATE/nodes"; echo "node \"$3\" deleted" ;;
  "apply "*)
    file=-; previous=""
    for arg in "$@"; do [ "$previous" = -f ] && file="$arg"; previous="$arg"; done
    if [ "$file" = - ]; then cat >"$STATE/applied"; else cat "$file" >"$STATE/applied"; stat -c %a "$file" >"$STATE/applied_mode"; fi
    # apply_fails=N: the first N attempts fail (an API server that is restarting)
    fails="$(state apply_fails)"
    if [ -n "$fails" ] && [ "$fails" -gt 0 ]; then echo $((fails - 1)) >"$STATE/apply_fails"; echo "error: the server is currently unable to handle the request" >&2; exit 1; fi
    [ -s "$STATE/applied" ] || { echo "error: no objects passed to apply" >&2; exit 1; }
    echo "secret/bootstrap-token-abc123 serverside-applied" ;;
esac
"""
KUBEADM = r"""
case "$1 $2" in
  "version -o") cat "$STATE/kubeadm" ;;
  "upgrade plan") echo "[preflight] Running pre-flight checks."; echo "[upgrade/versions] Target version: $3" ;;
  "upgrade apply")
    echo "[upgrade] Running cluster health checks"
    cp "$STATE/kubeadm" "$STATE/server"
    # cut: the API server was swapped, then the run stopped (Ctrl-C, a dropped SSH session)
    [ "$(cat "$STATE/apply" 2>/dev/null)" = cut ] && { rm -f "$STATE/apply"; echo "context canceled" >&2; exit 1; }
    echo "[upgrade/addons] Applied essential addon: kube-proxy"
    echo "[upgrade/successful] SUCCESS! Your cluster was upgraded to \"$3\". Enjoy!" ;;
  "upgrade node") echo "[upgrade] Reading configuration from the cluster..."; echo "[upgrade] The configuration for this node was successfully updated!" ;;
  "certs check-expiration") cat "$STATE/expiration.json" ;;
  "certs renew")
    cp "$STATE/renewed.json" "$STATE/expiration.json"
    echo "certificate for serving the Kubernetes API renewed"
    echo "Done renewing certificates. You must restart the kube-apiserver, kube-controller-manager, kube-scheduler and etcd, so that they can use the new certificates." ;;
  "join --config") echo "This node has joined the cluster:" ;;
  "reset --force") echo "[reset] Stopping the kubelet service" ;;
esac
"""
KUBELET = 'echo "Kubernetes $(cat "$STATE/kubelet")"\n'
# crictl in front of the etcd container: `exec <id> etcdctl ...` answers from $STATE/members, lines as
# `etcdctl member list -w simple` prints them; remove_fails=yes stands for etcd refusing a removal.
CRICTL = r"""
case "$1" in
  ps) [ "$(cat "$STATE/etcd_down" 2>/dev/null)" = yes ] || echo 3f2a9c1d0b7e ;;
  exec)
    shift 2
    case "$*" in
      *"member list -w simple") cat "$STATE/members" ;;
      *"member remove "*)
        id="${!#}"
        [ "$(cat "$STATE/remove_fails" 2>/dev/null)" = yes ] && { echo "Error: etcdserver: re-configuration failed due to not enough started members" >&2; exit 1; }
        grep -v "^$id, " "$STATE/members" >"$STATE/members.new" || true
        mv "$STATE/members.new" "$STATE/members"
        echo "Member $id removed from cluster 5a1b" ;;
    esac ;;
esac
"""
# apt-get install <pkg>=<version>: the package is now that version; kubernetes-cni brings the plugins.
# Like the real one, it prints its progress (and dpkg's) on stdout.
APT_GET = r"""
case " $* " in
  *" update "*) echo "Hit:1 https://prod-cdn.packages.k8s.io/repositories/isv:/kubernetes:/core:/stable:/v1.37/deb  InRelease"; echo "Reading package lists..." ;;
  *" install "*) echo "Reading package lists..."; echo "Building dependency tree..." ;;
esac
for arg in "$@"; do
  case "$arg" in
    kubeadm=*) echo "v${arg#kubeadm=}" | sed 's/-.*//' >"$STATE/kubeadm"; echo "Setting up kubeadm (${arg#kubeadm=}) ..." ;;
    kubelet=*) echo "v${arg#kubelet=}" | sed 's/-.*//' >"$STATE/kubelet"; echo "Setting up kubelet (${arg#kubelet=}) ..." ;;
    kubernetes-cni) [ -f "$STATE/no-cni" ] || { mkdir -p "$FS_ROOT/opt/cni/bin"; for p in bridge host-local loopback portmap; do touch "$FS_ROOT/opt/cni/bin/$p"; chmod +x "$FS_ROOT/opt/cni/bin/$p"; done; } ;;
  esac
done
"""
APT_CACHE = '[ "$1" = madison ] && cat "$STATE/madison"\n'
APT_MARK = 'shift; for package in "$@"; do echo "$package set on hold."; done\n'
SYSTEMCTL = '[ "$*" = "restart kubelet" ] && cp "$STATE/kubelet" "$STATE/node_kubelet"\nexit 0\n'
CURL = 'while [ $# -gt 0 ]; do [ "$1" = -o ] && { echo stub >"$2"; shift; }; shift; done\n'
GPG = 'while [ $# -gt 0 ]; do [ "$1" = -o ] && { echo key >"$2"; shift; }; shift; done\n'


class StubHost:
    def __init__(self, tmp_path: Path) -> None:
        self.bin = tmp_path / "bin"
        self.root = tmp_path / "root"
        self.state = tmp_path / "state"
        self.calls_file = tmp_path / "calls"
        for directory in (self.bin, self.root, self.state):
            directory.mkdir(parents=True, exist_ok=True)
        self.calls_file.touch()
        # Every host: cloud-init has finished, sleeping is instant, services are fine.
        self.stub("cloud-init")
        self.stub("sleep")
        self.stub("journalctl")
        self.stub("systemctl", SYSTEMCTL)

    def stub(self, name: str, body: str = "") -> StubHost:
        path = self.bin / name
        path.write_text("#!/usr/bin/env bash\n" + LOG_CALL + body)
        path.chmod(0o755)
        return self

    def kubernetes(self, *, server: str, kubelet: str | None = None, kubeadm: str | None = None) -> StubHost:
        """kubectl, kubeadm, kubelet and apt stubs for a node running these versions."""
        self.set(server=server, kubelet=kubelet or server, node_kubelet=kubelet or server, kubeadm=kubeadm or server)
        self.set(ready="True")
        for name, body in (("kubectl", KUBECTL), ("kubeadm", KUBEADM), ("kubelet", KUBELET)):
            self.stub(name, body)
        for name, body in (("apt-get", APT_GET), ("apt-cache", APT_CACHE), ("apt-mark", APT_MARK), ("curl", CURL)):
            self.stub(name, body)
        self.stub("gpg", GPG)
        return self

    def packages(self, *versions: str) -> StubHost:
        """What `apt-cache madison kubeadm` lists (pkgs.k8s.io package versions such as 1.37.2-1.1)."""
        lines = [
            f"   kubeadm | {version} | https://pkgs.k8s.io/core:/stable:/v1.x/deb  Packages" for version in versions
        ]
        return self.set(madison="\n".join(lines) + "\n")

    def set(self, **values: str) -> StubHost:
        for name, value in values.items():
            (self.state / name).write_text(value)
        return self

    def get(self, name: str) -> str:
        path = self.state / name
        return path.read_text() if path.exists() else ""

    def run(
        self,
        script: str,
        env: Mapping[str, str] | None = None,
        *,
        libs: Sequence[str] = (),
        stdin: str = "",
        program: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run userdata/<script> as a remote step (or ``program`` as given), with the stubs first on PATH."""
        text = program if program is not None else step_script(script, libs)
        return subprocess.run(
            ["bash", "-c", text, script],
            input=stdin,
            env={
                **os.environ,
                "PATH": f"{self.bin}:{os.environ['PATH']}",
                "STEP_NAME": script,
                "FS_ROOT": str(self.root),
                "STATE": str(self.state),
                "CALLS": str(self.calls_file),
                "HEARTBEAT_SECONDS": "60",
                "POLL_SECONDS": "0",
                **(env or {}),
            },
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    def calls(self, *commands: str) -> list[str]:
        """Logged calls (``kubectl drain worker1 ...``), only of ``commands`` if given."""
        lines = self.calls_file.read_text().splitlines()
        return [line for line in lines if not commands or line.split(" ", 1)[0] in commands]

    def clear_calls(self) -> None:
        self.calls_file.write_text("")
