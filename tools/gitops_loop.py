"""The tutorial's GitOps test on a live stack: change "This app is working", wait for it on every app URL.

    python -m tools.gitops_loop --stack e2e-123-pull --text "This app is working: e2e 123 (pull)"

Commits the new sentence to ``src/app.js`` on the app project's default branch through GitLab's
repository files API (``PUT /projects/:id/repository/files/:file_path``, doc/api/repository_files.md)
with the daily admin's token (``gitlabAdminUserToken``), over the stack's CA: that user owns the
project, as a user pushing would, while root is no member and GitLab refuses its commits to the
protected default branch (ProtectedRefAccess has no admin bypass). Then polls every ``appUrls`` entry until each
serves the new text, for at most ``--timeout`` seconds. The pipeline (and in pull mode Flux) does
the rest, as for a user's push. On timeout it says which URLs still serve what, and the state of
the commit's pipeline (``GET /projects/:id/pipelines?sha=``), and exits 1.

Used by the real-cloud end-to-end lane (ci/e2e/lane.sh); the outputs come from
``pulumi stack output --json --show-secrets`` (or ``--outputs FILE``), as for tools/doctor.py.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tools.doctor import CheckFailed, ca_context, http_get, read_outputs

APP_FILE = "src/app.js"
# The app keeps the sentence in one constant (apps/shark-app/src/app.js); the tutorial's own
# edit is of the literal sentence, the fallback when the constant is not there.
STATUS_CONSTANT = re.compile(r"(const STATUS_TEXT = ')([^'\\\n]*)(';)")
TUTORIAL_SENTENCE = "This app is working"
SAFE_TEXT = re.compile(r"[A-Za-z0-9 .,:;()#_+=/-]{1,120}")
REQUEST_TIMEOUT = 20.0


class LoopFailed(Exception):
    pass


def edit_status_text(source: str, text: str) -> str:
    """``src/app.js`` with the status sentence replaced by ``text`` (the constant, else the literal)."""
    if STATUS_CONSTANT.search(source):
        return STATUS_CONSTANT.sub(lambda m: f"{m.group(1)}{text}{m.group(3)}", source, count=1)
    if TUTORIAL_SENTENCE in source:
        return source.replace(TUTORIAL_SENTENCE, text, 1)
    raise LoopFailed(f"{APP_FILE} has neither `const STATUS_TEXT = '…';` nor {TUTORIAL_SENTENCE!r}: nothing to change")


@dataclass(frozen=True)
class GitLab:
    url: str
    token: str
    ca_pem: str

    def call(self, method: str, path: str, body: Mapping[str, str] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"PRIVATE-TOKEN": self.token}
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = http_get(
                f"{self.url.rstrip('/')}/api/v4{path}",
                timeout=REQUEST_TIMEOUT,
                context=ca_context(self.ca_pem),
                headers=headers,
                method=method,
                data=data,
            )
        except CheckFailed as error:
            raise LoopFailed(f"{error.message}; {error.fix}") from error
        if response.status >= 300:
            message = response.body.decode("utf-8", "replace")[:300]
            raise LoopFailed(f"{method} {path}: HTTP {response.status} {message}")
        return response.json()


def project_path(outputs: Mapping[str, Any]) -> str:
    """``<namespace>/<project>`` from the appProjectUrl and gitlabUrl outputs."""
    base = str(outputs["gitlabUrl"]).rstrip("/") + "/"
    web_url = str(outputs["appProjectUrl"])
    if not web_url.startswith(base):
        raise LoopFailed(f"appProjectUrl {web_url!r} is not under gitlabUrl {base!r}")
    return web_url[len(base) :].strip("/")


def commit_status_text(gitlab: GitLab, project: str, text: str, log: Callable[[str], None]) -> str:
    """Commit the new sentence on the default branch; return the new commit's SHA."""
    project_id = urllib.parse.quote(project, safe="")
    branch = gitlab.call("GET", f"/projects/{project_id}")["default_branch"]
    file_path = urllib.parse.quote(APP_FILE, safe="")
    ref = urllib.parse.quote(branch, safe="")
    current = gitlab.call("GET", f"/projects/{project_id}/repository/files/{file_path}?ref={ref}")
    source = base64.b64decode(current["content"]).decode()
    gitlab.call(
        "PUT",
        f"/projects/{project_id}/repository/files/{file_path}",
        {
            "branch": branch,
            "content": edit_status_text(source, text),
            "commit_message": f"e2e: {text}",
            # Refuse to overwrite a change made since the read (GitLab answers 400).
            "last_commit_id": current["last_commit_id"],
        },
    )
    after = gitlab.call("GET", f"/projects/{project_id}/repository/files/{file_path}?ref={ref}")
    log(f"committed {text!r} to {project}:{branch} {APP_FILE} ({after['last_commit_id'][:12]})")
    return after["last_commit_id"]


def pipeline_state(gitlab: GitLab, project: str, sha: str) -> str:
    """What GitLab says about the commit's pipeline, for the timeout message (best effort)."""
    project_id = urllib.parse.quote(project, safe="")
    try:
        pipelines = gitlab.call("GET", f"/projects/{project_id}/pipelines?sha={sha}")
    except LoopFailed as error:
        return f"pipelines could not be listed ({error})"
    if not pipelines:
        return f"no pipeline was created for {sha[:12]} (is a runner online? `make doctor`)"
    latest = pipelines[0]
    return f"pipeline {latest.get('id')} for {sha[:12]} is {latest.get('status')}: {latest.get('web_url')}"


def page_state(url: str, text: str) -> tuple[bool, str]:
    """(serves the text?, what was seen) for one app URL."""
    try:
        response = http_get(url, timeout=REQUEST_TIMEOUT)
    except CheckFailed as error:
        return False, error.message
    body = response.body.decode("utf-8", "replace")
    if response.status == 200 and text in body:
        return True, "new text"
    seen = re.search(r"<p>([^<]*)</p>", body)
    return False, f"HTTP {response.status}" + (f", first paragraph {seen.group(1)!r}" if seen else "")


def wait_for_text(
    urls: Sequence[str],
    text: str,
    *,
    timeout: float,
    interval: float,
    log: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, str]:
    """Poll until every URL serves ``text``; return the last state of the URLs that never did."""
    deadline = clock() + timeout
    pending = {url: "not checked yet" for url in urls}
    while True:
        for url in list(pending):
            done, seen = page_state(url, text)
            if done:
                log(f"{url} serves the new text")
                del pending[url]
            else:
                pending[url] = seen
        if not pending or clock() >= deadline:
            return pending
        sleep(min(interval, max(deadline - clock(), 0)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--stack")
    source.add_argument("--outputs", help="`pulumi stack output --json --show-secrets` saved to a file")
    parser.add_argument("--text", required=True, help="the new sentence (letters, digits, spaces, .,:;()#_+=/-)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for every app URL")
    parser.add_argument("--interval", type=float, default=15, help="seconds between polls")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(f"gitops-loop: {message}", flush=True)

    if not SAFE_TEXT.fullmatch(args.text):
        print(f"gitops-loop: --text {args.text!r} must match {SAFE_TEXT.pattern}", file=sys.stderr)
        return 2
    try:
        outputs = read_outputs(args.stack, args.outputs)
    except SystemExit as error:
        print(error, file=sys.stderr)
        return 2
    if not outputs.get("gitlabAdminUserToken"):
        print(
            "gitops-loop: the stack exports no gitlabAdminUserToken (the daily admin's token, which owns the app "
            "project): `pulumi up` with this version of the program first",
            file=sys.stderr,
        )
        return 1
    try:
        gitlab = GitLab(outputs["gitlabUrl"], outputs["gitlabAdminUserToken"], outputs["gitlabCaPem"])
        project = project_path(outputs)
        sha = commit_status_text(gitlab, project, args.text, log)
    except (LoopFailed, KeyError) as error:
        print(f"gitops-loop: the commit failed: {error}", file=sys.stderr)
        return 1
    urls = list(outputs.get("appUrls") or [])
    if not urls:
        print("gitops-loop: the appUrls output is empty: nothing to wait for", file=sys.stderr)
        return 1
    log(f"waiting up to {args.timeout:.0f}s for {args.text!r} on {len(urls)} app URL(s)")
    pending = wait_for_text(urls, args.text, timeout=args.timeout, interval=args.interval, log=log)
    if pending:
        print(
            f"gitops-loop: timed out after {args.timeout:.0f}s waiting for {args.text!r} on "
            + "; ".join(f"{url} (last seen: {seen})" for url, seen in pending.items()),
            file=sys.stderr,
        )
        print(f"gitops-loop: {pipeline_state(gitlab, project, sha)}", file=sys.stderr)
        return 1
    log(f"every app URL serves {args.text!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
