"""Our etcd snapshot and restore scripts against a real etcd (Debian's 3.5, on loopback, TLS like kubeadm).

The node's container runtime is a stub (`crictl exec` runs this machine's etcdctl/etcdutl), the AWS
CLI a stub that copies into a directory (tests/test_backup_s3.py uploads to a real S3 API): what is
real here is etcd, its snapshot format, etcdutl's checks and its restore. Each test is a statement
about a node: keys written before a snapshot come back after our restore, later keys do not; a hung
endpoint, a damaged or missing set, a newer snapshot are refused before anything changes.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backup_support import AWS_STUB, BUCKET, CRICTL_STUB, EtcdServer, etcd_bin, make_pki, run_backup_program
from tests.stub_host import StubHost


class Node:
    """A control-plane node: stubs on PATH, a scratch root, a real etcd data directory and PKI."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.bin_dir = etcd_bin()
        self.host = StubHost(tmp_path)
        self.host.stub("crictl", CRICTL_STUB).stub("aws", AWS_STUB).stub("kubectl")
        self.pki = make_pki(tmp_path / "pki")
        self.data_dir = tmp_path / "var-lib-etcd"
        self.etcd = EtcdServer(self.bin_dir, self.pki, self.data_dir, tmp_path / "etcd.log")
        self.manifests = self.host.root / "etc/kubernetes/manifests"
        self.manifests.mkdir(parents=True)
        for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            (self.manifests / f"{component}.yaml").write_text(f"# {component}\n")
        self.write_etcd_manifest()

    def write_etcd_manifest(self) -> None:
        (self.manifests / "etcd.yaml").write_text(
            "spec:\n  containers:\n  - command:\n    - etcd\n"
            f"    - --name=master\n    - --data-dir={self.data_dir}\n"
            f"    - --initial-advertise-peer-urls={self.etcd.peer_url}\n"
            f"    - --initial-cluster=master={self.etcd.peer_url}\n"
        )

    def run(self, script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_backup_program(
            self.host,
            self.tmp,
            script,
            args,
            {
                "ETCD_BIN_DIR": str(self.bin_dir),
                "NODE_NAME": "master",
                "ETCD_DATA_DIR": str(self.data_dir),
                "ETCD_PKI_DIR": str(self.pki),
                "ETCD_ENDPOINT": self.etcd.endpoint,
                **env,
            },
            timeout=180,
        )

    def bucket(self) -> Path:
        return self.host.state / "s3" / BUCKET

    def sets(self, prefix: str) -> list[Path]:
        return sorted(path.parent for path in (self.bucket() / prefix).glob("*/*/SHA256SUMS"))


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    node = Node(tmp_path)
    node.etcd.start()
    yield node
    node.etcd.stop()


def write_keys(node: Node, count: int, prefix: str = "/registry/pods/default/shark-") -> None:
    for index in range(count):
        node.etcd.ctl("put", f"{prefix}{index}", f"value-{index}")


def test_a_snapshot_is_saved_checked_and_uploaded_as_a_set(node: Node) -> None:
    write_keys(node, 20)
    result = node.run("backup/etcd-snapshot.sh")
    assert result.returncode == 0, result.stderr
    (frequent,) = node.sets("etcd/frequent")
    (daily,) = node.sets("etcd/daily")  # the first snapshot of the UTC day goes to daily/ too
    assert frequent.parent.name == daily.parent.name == "master"
    assert result.stdout.splitlines() == [
        f"s3://{BUCKET}/etcd/frequent/master/{frequent.name}/",
        f"s3://{BUCKET}/etcd/daily/master/{daily.name}/",
    ]
    sums = (frequent / "SHA256SUMS").read_text()
    digest = subprocess.run(["sha256sum", frequent / "snapshot.db"], capture_output=True, text=True, check=True)
    assert sums == f"{digest.stdout.split()[0]}  snapshot.db\n"
    # The trial restore ran through the node's etcdutl, and nothing is left in etcd's data directory.
    assert any(" etcdutl snapshot restore " in call for call in node.host.calls("crictl"))
    assert not (node.data_dir / "gitops-backup").exists()
    # SHA256SUMS is uploaded last: a set without it is an upload that did not finish.
    uploads = [call.split()[4] for call in node.host.calls("aws")]
    assert uploads[0].endswith("/snapshot.db") and uploads[1].endswith("/SHA256SUMS")

    # A second snapshot the same day: frequent only.
    second = node.run("backup/etcd-snapshot.sh")
    assert second.returncode == 0, second.stderr
    assert len(node.sets("etcd/frequent")) in (1, 2)  # same second: same stamp
    assert len(node.sets("etcd/daily")) == 1


def test_restore_brings_back_the_snapshot_and_nothing_written_after_it(node: Node) -> None:
    write_keys(node, 50)
    snapshot = node.run("backup/etcd-snapshot.sh", "pre-upgrade")
    assert snapshot.returncode == 0, snapshot.stderr
    assert node.sets("etcd/daily") == []  # only frequent snapshots count for daily/
    (backup,) = node.sets("etcd/pre-upgrade")
    before_revision = node.etcd.revision()
    node.etcd.ctl("put", "/registry/after-the-snapshot", "lost")
    node.etcd.ctl("del", "/registry/pods/default/shark-0")

    key = backup.relative_to(node.bucket())
    result = node.run("backup/etcd-restore.sh", f"s3://{BUCKET}/{key}/")
    assert result.returncode == 0, result.stderr
    assert "does not answer 'member list'" not in result.stderr  # the real etcd said: one member
    # The control plane was parked, etcd came back first, then the rest and the kubelet.
    assert sorted(path.name for path in node.manifests.glob("*.yaml")) == [
        "etcd.yaml",
        "kube-apiserver.yaml",
        "kube-controller-manager.yaml",
        "kube-scheduler.yaml",
    ]
    assert "systemctl restart kubelet" in node.host.calls("systemctl")
    (kept,) = node.tmp.glob("var-lib-etcd.before-restore-*")
    assert (kept / "member/snap/db").exists() and not (kept / "gitops-restore").exists()

    # The real test: the running etcd is replaced by one on the restored data directory.
    node.etcd.stop()
    node.etcd.start()
    keys = node.etcd.ctl("get", "/registry/", "--prefix", "--keys-only").stdout.split()
    assert len(keys) == 50 and "/registry/pods/default/shark-0" in keys
    assert "/registry/after-the-snapshot" not in keys
    # --bump-revision 1000000000: every watcher sees a revision ahead of anything it knew.
    assert node.etcd.revision() >= before_revision + 1_000_000_000


def test_a_hung_endpoint_times_out_and_uploads_nothing(node: Node) -> None:
    # A listener that accepts and never answers: etcdctl waits forever without the timeout.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True).start()
    result = node.run(
        "backup/etcd-snapshot.sh",
        ETCD_ENDPOINT=f"https://127.0.0.1:{silent.getsockname()[1]}",
        SNAPSHOT_TIMEOUT_SECONDS="3",
    )
    silent.close()
    assert result.returncode == 1
    assert "took more than 3s" in result.stderr
    assert node.host.calls("aws") == []
    assert not (node.data_dir / "gitops-backup").exists()  # no .part left in etcd's data directory


def saved_set(node: Node, tmp_path: Path) -> Path:
    write_keys(node, 5)
    assert node.run("backup/etcd-snapshot.sh").returncode == 0
    copy = tmp_path / "set"
    shutil.copytree(node.sets("etcd/frequent")[0], copy)
    return copy


def assert_nothing_changed(node: Node) -> None:
    assert (node.manifests / "etcd.yaml").exists() and (node.manifests / "kube-apiserver.yaml").exists()
    assert not list(node.tmp.glob("var-lib-etcd.before-restore-*"))
    assert node.host.calls("systemctl") == []
    assert node.etcd.ctl("endpoint", "health", check=False).returncode == 0


def test_restore_refuses_a_damaged_snapshot_before_stopping_anything(node: Node, tmp_path: Path) -> None:
    damaged = saved_set(node, tmp_path)
    with (damaged / "snapshot.db").open("r+b") as handle:
        handle.truncate(handle.seek(0, 2) // 2)
    result = node.run("backup/etcd-restore.sh", str(damaged))
    assert result.returncode == 1
    assert "checksum mismatch" in result.stderr and "Nothing was changed." in result.stderr
    assert_nothing_changed(node)


def test_restore_waits_for_a_kubeadm_run_and_changes_nothing_while_one_holds_the_manifests(
    node: Node, tmp_path: Path
) -> None:
    ready = saved_set(node, tmp_path)
    lock = node.host.root / "run/gitops-kubeadm.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a certificate renewal or an upgrade moving the manifests
        result = node.run("backup/etcd-restore.sh", str(ready), LOCK_WAIT_SECONDS="1")
    assert result.returncode == 1
    assert "still holds" in result.stderr and "nothing was changed" in result.stderr
    assert_nothing_changed(node)


def test_restore_refuses_a_member_of_a_multi_member_etcd(node: Node, tmp_path: Path) -> None:
    ready = saved_set(node, tmp_path)
    manifest = node.manifests / "etcd.yaml"
    text = manifest.read_text()
    manifest.write_text(
        text.replace(
            f"--initial-cluster=master={node.etcd.peer_url}",
            f"--initial-cluster=master={node.etcd.peer_url},master2=https://10.0.1.12:2380",
        )
    )
    result = node.run("backup/etcd-restore.sh", str(ready))
    assert result.returncode == 1
    assert "restores a single-member etcd only" in result.stderr and "Nothing was changed." in result.stderr
    assert_nothing_changed(node)
    # The first control plane of a cluster others joined: its manifest names one member, etcd knows two.
    manifest.write_text(text)
    tools = tmp_path / "two-members"
    tools.mkdir()
    for tool in ("etcd", "etcdutl"):
        (tools / tool).symlink_to(node.bin_dir / tool)
    (tools / "etcdctl").write_text(
        "#!/usr/bin/env bash\n"
        'case "$*" in *"member list"*) echo "8e9e05c52164694d, started, master, https://10.0.1.11:2380"\n'
        '  echo "91bc3c398fb3c146, started, master2, https://10.0.1.12:2380"; exit 0 ;; esac\n'
        f'exec {node.bin_dir}/etcdctl "$@"\n'
    )
    (tools / "etcdctl").chmod(0o755)
    result = node.run("backup/etcd-restore.sh", str(ready), ETCD_BIN_DIR=str(tools))
    assert result.returncode == 1
    assert "has 2 members: this script restores a single-member etcd only" in result.stderr
    assert_nothing_changed(node)


def test_restore_refuses_a_missing_or_unfinished_set(node: Node, tmp_path: Path) -> None:
    result = node.run("backup/etcd-restore.sh", f"s3://{BUCKET}/etcd/daily/master/20260101T000000Z/")
    assert result.returncode == 1
    assert "no SHA256SUMS in s3://" in result.stderr and "Nothing was changed." in result.stderr
    unfinished = saved_set(node, tmp_path)
    (unfinished / "SHA256SUMS").unlink()
    result = node.run("backup/etcd-restore.sh", str(unfinished))
    assert result.returncode == 1 and "holds no SHA256SUMS" in result.stderr
    assert_nothing_changed(node)


def test_restore_refuses_a_snapshot_from_a_newer_etcd(node: Node, tmp_path: Path) -> None:
    newer = saved_set(node, tmp_path)
    # etcd 3.6+ records its storage version in the snapshot (etcdutl snapshot status "version").
    wrapper = tmp_path / "etcdutl"
    status = json.dumps({"hash": 1, "revision": 7, "totalKey": 12, "totalSize": 20480, "version": "3.7.0"})
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        f'[ "$1 $2" = "snapshot status" ] && {{ echo \'{status}\'; exit 0; }}\n'
        f'exec {node.bin_dir}/etcdutl "$@"\n'
    )
    wrapper.chmod(0o755)
    result = node.run("backup/etcd-restore.sh", str(newer), ETCDUTL=str(wrapper))
    assert result.returncode == 1
    assert "written by etcd 3.7.0, newer than this node's 3.5" in result.stderr
    assert_nothing_changed(node)


def test_restore_without_a_running_etcd_asks_for_the_nodes_own_etcdutl(node: Node, tmp_path: Path) -> None:
    backup = saved_set(node, tmp_path)
    node.host.stub("crictl", "exit 0\n")  # the runtime lists no etcd container
    result = node.run("backup/etcd-restore.sh", str(backup))
    assert result.returncode == 1
    assert "ETCDUTL=/mnt/etcd/usr/local/bin/etcdutl" in result.stderr
    assert (node.manifests / "etcd.yaml").exists()
