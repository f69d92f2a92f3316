"""Real parts for the backup tests: an etcd on loopback with kubeadm-style TLS, an S3 API on loopback.

* ``EtcdTools`` finds Debian trixie's etcd 3.5 (``.ci/etcd.sh`` unpacks it under build/ci/etcd);
  ``EtcdServer`` runs it on 127.0.0.1 with client-certificate auth, as kubeadm's static pod does,
  with a CA, a server certificate and the healthcheck client certificate made by openssl.
* ``crictl_stub`` stands in for the node's container runtime: `crictl exec <id> etcdctl|etcdutl|etcd`
  runs the real binaries on this machine; `crictl ps` lists a control-plane container while its
  manifest is in place (so parking manifests stops it, as the kubelet would).
* ``MotoServer`` is moto's S3/IAM server on 127.0.0.1 (from PyPI); ``aws_cli`` finds the real AWS CLI
  (Debian's awscli package, the one the hosts install).
Locally a missing etcd or AWS CLI skips the tests; under CI (.ci/run) it fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.backups import backup_program
from tests.stub_host import StubHost

ROOT = Path(__file__).resolve().parent.parent
ETCD_DIR = ROOT / "build/ci/etcd/usr/bin"


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message + ": .ci/run must install it")
    pytest.skip(message)


def etcd_bin() -> Path:
    directory = Path(os.environ.get("ETCD_BIN_DIR") or ETCD_DIR)
    if not all((directory / name).exists() for name in ("etcd", "etcdctl", "etcdutl")):
        _missing(f"no etcd, etcdctl and etcdutl in {directory} (bash .ci/etcd.sh unpacks Debian's)")
    return directory


def aws_cli() -> str:
    """The AWS CLI the hosts run: Debian's awscli package (/usr/bin/aws), else AWS_CLI."""
    path = os.environ.get("AWS_CLI") or "/usr/bin/aws"
    if not Path(path).exists():
        _missing(f"no AWS CLI at {path} (apt-get install awscli)")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(directory: Path) -> Path:
    """kubeadm's etcd PKI file names: ca.crt, server.crt/key, healthcheck-client.crt/key."""
    directory.mkdir(parents=True, exist_ok=True)
    ext = directory / "ext.cnf"
    ext.write_text(
        "[server]\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"
        "[client]\nextendedKeyUsage=clientAuth\n"
    )
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
             "-subj", "/CN=etcd-ca", "-keyout", str(directory / "ca.key"), "-out", str(directory / "ca.crt"))  # fmt: skip
    for name, cn, section in (
        ("server", "master", "server"),
        ("healthcheck-client", "kube-etcd-healthcheck-client", "client"),
    ):
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={cn}",
                 "-keyout", str(directory / f"{name}.key"), "-out", str(directory / f"{name}.csr"))  # fmt: skip
        _openssl("x509", "-req", "-in", str(directory / f"{name}.csr"), "-CA", str(directory / "ca.crt"),
                 "-CAkey", str(directory / "ca.key"), "-CAcreateserial", "-days", "2", "-extfile", str(ext),
                 "-extensions", section, "-out", str(directory / f"{name}.crt"))  # fmt: skip
    return directory


class EtcdServer:
    """One etcd member on loopback, TLS with client certificates like kubeadm's."""

    def __init__(self, bin_dir: Path, pki: Path, data_dir: Path, log: Path, name: str = "master") -> None:
        self.bin, self.pki, self.data_dir, self.log, self.name = bin_dir, pki, data_dir, log, name
        self.client_port, self.peer_port = free_port(), free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def start(self) -> EtcdServer:
        args = [
            str(self.bin / "etcd"), "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", f"{self.name}={self.peer_url}",
            "--cert-file", str(self.pki / "server.crt"), "--key-file", str(self.pki / "server.key"),
            "--client-cert-auth", "--trusted-ca-file", str(self.pki / "ca.crt"),
            "--listen-metrics-urls", f"http://127.0.0.1:{free_port()}",
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.ctl("endpoint", "health", check=False).returncode == 0:
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"etcd exited {self.process.returncode}: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"etcd did not become healthy: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(self.bin / "etcdctl"),
                f"--endpoints={self.endpoint}",
                f"--cacert={self.pki / 'ca.crt'}",
                f"--cert={self.pki / 'healthcheck-client.crt'}",
                f"--key={self.pki / 'healthcheck-client.key'}",
                "--dial-timeout=2s",
                "--command-timeout=5s",
                *args,
            ],
            capture_output=True,
            text=True,
            check=check,
            timeout=30,
        )

    def revision(self) -> int:
        return json.loads(self.ctl("get", "/", "--write-out", "json").stdout)["header"]["revision"]


# `crictl` on a control-plane node: ps lists a control-plane component while its manifest is in
# place; exec runs etcd's binaries (the test machine's) with the same paths the container would see.
CRICTL_STUB = r"""
manifests="$FS_ROOT/etc/kubernetes/manifests"
case "$1" in
  ps)
    regex=""
    while [ $# -gt 0 ]; do [ "$1" = --name ] && regex="$2"; shift; done
    for manifest in "$manifests"/*.yaml; do
      [ -f "$manifest" ] || continue
      component="$(basename "$manifest" .yaml)"
      if [[ "$component" =~ $regex ]]; then echo "${component}-0123abcd"; fi
    done ;;
  exec)
    shift 2
    tool="$1"; shift
    case "$*" in *"endpoint health"*) [ -f "$manifests/etcd.yaml" ]; exit ;; esac
    exec "$ETCD_BIN_DIR/$tool" "$@" ;;
esac
"""

# `aws s3 cp` against a directory standing for the bucket ($STATE/s3/<bucket>/<key>).
AWS_STUB = r"""
[ "$1 $2" = "s3 cp" ] || exit 0
src="$3"; dest="$4"
to_path() { printf '%s/s3/%s' "$STATE" "${1#s3://}"; }
case "$src" in s3://*) src="$(to_path "$src")"; [ -f "$src" ] || { echo "fatal error: An error occurred (404) when calling the HeadObject operation: Key does not exist" >&2; exit 1; } ;; esac
case "$dest" in s3://*) dest="$(to_path "$dest")" ;; esac
mkdir -p "$(dirname "$dest")"
cp "$src" "$dest"
"""


class MotoServer:
    """moto's server (S3, IAM) on 127.0.0.1; ``enforce_iam()`` makes it check identity policies."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        moto = shutil.which("moto_server", path=str(Path(sys.executable).parent))
        if moto is None:
            _missing("moto_server is not installed (requirements-dev.txt: moto[server])")
        self.process = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(self.port)], stdout=log.open("ab"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("moto_server did not start")

    def enforce_iam(self) -> None:
        """From now on every request needs a moto IAM user's keys and passes its policies
        (moto-api/reset-auth; moto checks Action and Resource, not Condition)."""
        import urllib.request

        url = f"{self.url}/moto-api/reset-auth"  # http://127.0.0.1:<port>, made above
        request = urllib.request.Request(url, data=b"0", method="POST", headers={"Content-Type": ""})  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            assert response.status == 200

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


BUCKET = "gitops-backups-test"


def run_backup_program(
    host: StubHost, work: Path, script: str, args: tuple[str, ...], env: dict[str, str], *, timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    """Run a backup program as a host gets it (components/backups.py backup_program), stubs first on PATH."""
    program = work / script.replace("/", "-")
    program.write_text(backup_program(script))
    return subprocess.run(
        ["bash", str(program), *args],
        env={
            **os.environ,
            "PATH": f"{host.bin}:{os.environ['PATH']}",
            "STEP_NAME": script,
            "FS_ROOT": str(host.root),
            "STATE": str(host.state),
            "CALLS": str(host.calls_file),
            "POLL_SECONDS": "0",
            "BACKUP_ENV": str(work / "no-env-file"),
            "BACKUP_BUCKET": BUCKET,
            "AWS_DEFAULT_REGION": "eu-west-3",
            **env,
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
