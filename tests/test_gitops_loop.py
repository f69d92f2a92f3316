"""The e2e lane's GitOps loop (tools/gitops_loop.py) against a loopback GitLab API and app servers."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.loopback import Request, Server, TestCa, json_reply, serve, text_reply
from tools import gitops_loop

ROOT = Path(__file__).resolve().parent.parent
APP_SOURCE = (ROOT / "apps/shark-app/src/app.js").read_text()
TOKEN = "glpat-loop-test-00001"  # the daily admin's: the project's Owner
ROOT_TOKEN = "glpat-loop-root-00002"  # root's: an instance admin, not a project member
PROJECT = "/api/v4/projects/operator%2Fshark-application"
FILE = f"{PROJECT}/repository/files/src%2Fapp.js"
NEW_TEXT = "This app is working: e2e 4242 (pull)"


def page(status_text: str) -> str:
    return f"<h2>Are you ready to learn about sharks?</h2>\n<p>{status_text}</p>"


@dataclass
class FakeGitLab:
    """The project, its src/app.js, and the commits made through the files API."""

    source: str = APP_SOURCE
    commit: str = "a" * 40
    commits: list[dict[str, Any]] = field(default_factory=list)
    refuse_push: bool = False

    def routes(self) -> dict[str, Any]:
        def authorized(handler: Any) -> Any:
            def route(request: Request) -> Any:
                if request.headers.get("private-token") not in (TOKEN, ROOT_TOKEN):
                    return json_reply(401, {"message": "401 Unauthorized"})
                return handler(request)

            return route

        def get_file(request: Request) -> Any:
            assert request.path.endswith("?ref=main")
            content = base64.b64encode(self.source.encode()).decode()
            return json_reply(200, {"content": content, "encoding": "base64", "last_commit_id": self.commit})

        def put_file(request: Request) -> Any:
            body = json.loads(request.body)
            self.commits.append(body)
            # The default branch is protected for Maintainers; an admin who is no member is refused
            # like anyone else (ProtectedRefAccess#role_access_allowed?, REFERENCE.md section 2).
            if self.refuse_push or request.headers.get("private-token") != TOKEN:
                return json_reply(400, {"message": "You are not allowed to push into this branch"})
            self.source = body["content"]
            self.commit = "b" * 40
            return json_reply(200, {"file_path": "src/app.js", "branch": body["branch"]})

        return {
            PROJECT: authorized(lambda _: json_reply(200, {"id": 3, "default_branch": "main"})),
            FILE: authorized(get_file),
            f"PUT {FILE}": authorized(put_file),
            f"{PROJECT}/pipelines": authorized(
                lambda r: json_reply(200, [{"id": 42, "status": "failed", "web_url": "https://gitlab/p/42"}])
            ),
        }


@dataclass
class Stack:
    gitlab: FakeGitLab
    apps: list[Server]
    outputs_file: Path


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    ca = TestCa("GitLab CA")
    fake = FakeGitLab()
    with ExitStack() as servers:
        gitlab = servers.enter_context(serve(tmp_path, tls=ca.issue("gitlab", server=True)))
        gitlab.routes.update(fake.routes())
        apps = [servers.enter_context(serve(tmp_path)) for _ in range(2)]
        for app in apps:
            app.routes["/"] = text_reply(200, page("This app is working"))
        outputs = {
            "gitlabUrl": gitlab.base,
            "gitlabCaPem": ca.cert_pem,
            "gitlabAdminToken": ROOT_TOKEN,
            "gitlabAdminUserToken": TOKEN,
            "appProjectUrl": f"{gitlab.base}/operator/shark-application",
            "appUrls": [app.base for app in apps],
        }
        outputs_file = tmp_path / "outputs.json"
        outputs_file.write_text(json.dumps(outputs))
        yield Stack(fake, apps, outputs_file)


def deploy_after(gitlab: FakeGitLab, polls: int) -> Any:
    """An app that serves the committed sentence once it has been asked ``polls`` times after the commit."""
    seen = {"after_commit": 0}

    def route(_: Request) -> Any:
        if gitlab.commits:
            seen["after_commit"] += 1
        deployed = seen["after_commit"] > polls
        return text_reply(200, page(NEW_TEXT if deployed else "This app is working"))

    return route


def loop(stack: Stack, *extra: str) -> int:
    return gitops_loop.main(["--outputs", str(stack.outputs_file), "--text", NEW_TEXT, "--interval", "0.05", *extra])


def test_the_loop_commits_the_sentence_and_waits_for_every_app_url(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.apps[0].routes["/"] = deploy_after(stack.gitlab, polls=1)
    stack.apps[1].routes["/"] = deploy_after(stack.gitlab, polls=3)
    assert loop(stack, "--timeout", "30") == 0
    [commit] = stack.gitlab.commits
    assert commit["branch"] == "main"
    assert commit["last_commit_id"] == "a" * 40
    assert commit["commit_message"] == f"e2e: {NEW_TEXT}"
    assert f"const STATUS_TEXT = '{NEW_TEXT}';" in commit["content"]
    assert commit["content"].replace(NEW_TEXT, "This app is working") == APP_SOURCE  # nothing else changed
    out = capsys.readouterr().out
    assert "committed 'This app is working: e2e 4242 (pull)' to operator/shark-application:main src/app.js" in out
    assert f"every app URL serves {NEW_TEXT!r}" in out


def test_the_wait_is_bounded_and_says_what_each_url_still_serves(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.apps[0].routes["/"] = deploy_after(stack.gitlab, polls=0)
    assert loop(stack, "--timeout", "1") == 1
    err = capsys.readouterr().err
    assert f"timed out after 1s waiting for {NEW_TEXT!r} on {stack.apps[1].base} " in err
    assert "(last seen: HTTP 200, first paragraph 'This app is working')" in err
    assert stack.apps[0].base + " (" not in err  # the URL that switched is not listed
    assert f"pipeline 42 for {'b' * 12} is failed: https://gitlab/p/42" in err


def test_a_refused_commit_fails_with_gitlabs_answer(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    stack.gitlab.refuse_push = True
    assert loop(stack) == 1
    err = capsys.readouterr().err
    assert "the commit failed: PUT /projects/operator%2Fshark-application/repository/files/src%2Fapp.js" in err
    assert "HTTP 400" in err and "You are not allowed to push into this branch" in err


def test_a_stack_without_the_daily_admins_token_is_told_to_update_first(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = json.loads(stack.outputs_file.read_text())
    del outputs["gitlabAdminUserToken"]  # a stack deployed before the output existed
    stack.outputs_file.write_text(json.dumps(outputs))
    assert loop(stack) == 1
    assert "exports no gitlabAdminUserToken" in capsys.readouterr().err
    assert stack.gitlab.commits == [], "root's token is never tried: GitLab would refuse it"


def test_the_text_must_be_safe_to_put_in_the_source() -> None:
    assert gitops_loop.main(["--outputs", "x.json", "--text", "it's <b>done</b>"]) == 2


def test_the_edit_changes_the_status_sentence_only() -> None:
    edited = gitops_loop.edit_status_text(APP_SOURCE, "v2 is live")
    assert "const STATUS_TEXT = 'v2 is live';" in edited
    assert "const HOME_QUESTION = 'Are you ready to learn about sharks?';" in edited
    # The tutorial's literal edit, for a file without the constant; and a clear refusal without either.
    assert gitops_loop.edit_status_text("<p>This app is working</p>", "v2") == "<p>v2</p>"
    with pytest.raises(gitops_loop.LoopFailed, match="nothing to change"):
        gitops_loop.edit_status_text("<p>hello</p>", "v2")
