"""The merge-request preview note: one note per stack, updated on every push, never duplicated."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from tests.conftest import ADMIN
from tools import cost, mr_note
from tools.harness import run_fixture_stack


class FakeGitLab(BaseHTTPRequestHandler):
    """Just enough of GitLab's notes API, on loopback."""

    notes: ClassVar[list[dict]] = []
    calls: ClassVar[list[tuple[str, str]]] = []

    def _reply(self, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _form(self) -> dict[str, str]:
        length = int(self.headers["Content-Length"])
        return dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))

    def do_GET(self) -> None:
        assert self.headers["PRIVATE-TOKEN"] == "glpat-test-token-0001"
        self.calls.append(("GET", self.path))
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        page, size = int(query["page"][0]), int(query["per_page"][0])
        self._reply(self.notes[(page - 1) * size : page * size])

    def do_POST(self) -> None:
        self.calls.append(("POST", self.path))
        note = {"id": 1000 + len(self.notes), "body": self._form()["body"]}
        self.notes.append(note)
        self._reply(note)

    def do_PUT(self) -> None:
        self.calls.append(("PUT", self.path))
        note_id = int(self.path.rsplit("/", 1)[1])
        note = next(n for n in self.notes if n["id"] == note_id)
        note["body"] = self._form()["body"]
        self._reply(note)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gitlab() -> Iterator[str]:
    FakeGitLab.notes = [{"id": i, "body": f"a human comment {i}"} for i in range(150)]  # two pages
    FakeGitLab.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGitLab)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/v4"
    server.shutdown()
    server.server_close()


def _env(api: str) -> dict[str, str]:
    return {
        "PREVIEW_NOTE_TOKEN": "glpat-test-token-0001",
        "CI_API_V4_URL": api,
        "CI_PROJECT_ID": "7",
        "CI_MERGE_REQUEST_IID": "3",
        "CI_JOB_URL": "https://gitlab.example.test/job/1",
    }


def test_second_push_updates_the_same_note(gitlab: str, tmp_path: Path) -> None:
    output = tmp_path / "preview-dev.txt"
    output.write_text("+ aws:ec2/instance:Instance master create\n")
    assert mr_note.main(["--stack", "dev", "--file", str(output)], _env(gitlab)) == 0
    output.write_text("~ aws:ec2/instance:Instance master update\n")
    assert mr_note.main(["--stack", "dev", "--file", str(output)], _env(gitlab)) == 0

    previews = [n for n in FakeGitLab.notes if mr_note.marker("dev") in n["body"]]
    assert len(previews) == 1, "one note per stack, however often the branch is pushed"
    assert "master update" in previews[0]["body"] and "master create" not in previews[0]["body"]
    assert [method for method, _ in FakeGitLab.calls if method != "GET"] == ["POST", "PUT"]
    assert ("GET", "/api/v4/projects/7/merge_requests/3/notes?per_page=100&page=2") in FakeGitLab.calls


def test_each_stack_has_its_own_note(gitlab: str, tmp_path: Path) -> None:
    output = tmp_path / "preview.txt"
    output.write_text("no changes\n")
    for stack in ("dev", "prod"):
        mr_note.main(["--stack", stack, "--file", str(output)], _env(gitlab))
    assert sum(mr_note.marker("dev") in n["body"] for n in FakeGitLab.notes) == 1
    assert sum(mr_note.marker("prod") in n["body"] for n in FakeGitLab.notes) == 1


def test_without_a_token_nothing_is_posted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "preview.txt"
    output.write_text("x")
    assert mr_note.main(["--stack", "dev", "--file", str(output)], {}) == 0
    assert "not posting" in capsys.readouterr().out


def test_long_previews_are_truncated_from_the_top() -> None:
    body = mr_note.note_body("dev", "x" * (mr_note.MAX_NOTE_CHARS + 10) + "END", None)
    assert body.startswith(mr_note.marker("dev"))
    assert "truncated" in body and body.rstrip().endswith("END\n```")


def test_the_note_carries_the_cost_estimate_and_its_difference(gitlab: str, tmp_path: Path) -> None:
    base = cost.estimate(run_fixture_stack("dev", ADMIN))
    head = cost.estimate(run_fixture_stack("dev", {**ADMIN, "workerCount": 3}))
    estimate = tmp_path / "cost-dev.md"
    estimate.write_text(cost.markdown(head) + "\n" + cost.difference(base, head, "main (0123abcd)"))
    preview = tmp_path / "preview-dev.txt"
    preview.write_text("+ aws:ec2/instance:Instance gitops-k8s-worker3 create\n")
    arguments = ["--stack", "dev", "--file", str(preview), "--cost", str(estimate)]
    assert mr_note.main(arguments, _env(gitlab)) == 0

    (note,) = [n for n in FakeGitLab.notes if mr_note.marker("dev") in n["body"]]
    body = note["body"]
    assert "#### Estimated monthly cost of stack `dev` (us-east-1, on-demand)" in body
    assert "| EC2 t3.medium | 4 instances (max 6 instances) |" in body  # the CI job VMs when busy
    assert "**Against the base `main (0123abcd)`:**" in body and "+$30.37" in body
    assert body.index("Estimated monthly cost") < body.index("`pulumi preview` for stack `dev`")
    assert "gitops-k8s-worker3 create" in body

    # The next push: the same note now shows the new estimate, and only it.
    estimate.write_text(cost.markdown(base) + "\n" + cost.difference(base, base, "main (0123abcd)"))
    assert mr_note.main(arguments, _env(gitlab)) == 0
    (note,) = [n for n in FakeGitLab.notes if mr_note.marker("dev") in n["body"]]
    assert "| EC2 t3.medium | 3 instances (max 5 instances) |" in note["body"] and "4 instances" not in note["body"]


def test_a_missing_cost_estimate_is_said_not_silently_dropped(gitlab: str, tmp_path: Path) -> None:
    preview = tmp_path / "preview-dev.txt"
    preview.write_text("no changes\n")
    missing = tmp_path / "cost-dev.md"
    assert mr_note.main(["--stack", "dev", "--file", str(preview), "--cost", str(missing)], _env(gitlab)) == 0
    (note,) = [n for n in FakeGitLab.notes if mr_note.marker("dev") in n["body"]]
    assert f"_No cost estimate: {missing} was not written" in note["body"]
