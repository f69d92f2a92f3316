"""Post `pulumi preview` output as a merge-request note, updating the previous one instead of adding more.

    python3 -m tools.mr_note --stack dev --file preview-dev.txt [--cost cost-dev.md]

Used by this repository's .gitlab-ci.yml. With a self-managed Pulumi backend, Pulumi does not
comment on merge requests itself (that is Pulumi Cloud's GitLab app), so the job calls GitLab's
notes API (https://docs.gitlab.com/api/notes/#merge-requests). Reads GitLab's predefined
CI_API_V4_URL, CI_PROJECT_ID and CI_MERGE_REQUEST_IID, and the token from PREVIEW_NOTE_TOKEN (a
masked CI/CD variable holding a project access token with the `api` scope). Without a token it
does nothing: the preview stays available as a job artifact.

Idempotent: each note carries a hidden marker per stack; a later run edits the note with that
marker, so a merge request has one preview note per stack however often it is pushed.

With --cost, the note starts with the stack's cost estimate and its difference against the merge
request's base (`tools/cost.py --base-ref`, written by the same job); a missing file is said so.
Standard library only: the job runs it with the image's Python.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

MAX_NOTE_CHARS = 900_000  # GitLab rejects notes over 1,000,000 characters
MAX_COST_CHARS = 50_000  # with the preview's cap, the note stays under GitLab's limit
TIMEOUT_SECONDS = 30


def marker(stack: str) -> str:
    return f"<!-- pulumi-preview:{stack} -->"


def note_body(stack: str, preview: str, job_url: str | None, cost: str | None = None) -> str:
    """The note: marker, cost estimate (if given), then the preview output, cut from the top if too long."""
    if len(preview) > MAX_NOTE_CHARS:
        preview = preview[-MAX_NOTE_CHARS:]
        preview = "… (truncated: the full output is the job's artifact)\n" + preview
    link = f" ([job]({job_url}))" if job_url else ""
    estimate = f"{cost.strip()}\n\n" if cost is not None else ""
    return f"{marker(stack)}\n{estimate}#### `pulumi preview` for stack `{stack}`{link}\n\n```diff\n{preview}\n```\n"


def read_cost(path: str | None) -> str | None:
    """The cost estimate's Markdown, a line saying it is missing, or None when not asked for."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()[:MAX_COST_CHARS]
    except OSError:
        return f"_No cost estimate: {path} was not written (see the job log)._"


class GitLab:
    def __init__(self, api_url: str, token: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token

    def request(self, method: str, path: str, data: Mapping[str, str] | None = None) -> Any:
        if not self.api_url.startswith(("https://", "http://")):
            raise ValueError(f"CI_API_V4_URL must be an http(s) URL, got {self.api_url!r}")
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(  # noqa: S310 - scheme checked above
            f"{self.api_url}{path}", data=body, method=method, headers={"PRIVATE-TOKEN": self.token}
        )
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            return json.loads(response.read() or b"null")

    def notes(self, project: str, mr_iid: str) -> list[dict[str, Any]]:
        notes: list[dict[str, Any]] = []
        page = 1
        while True:
            batch = self.request("GET", f"/projects/{project}/merge_requests/{mr_iid}/notes?per_page=100&page={page}")
            notes += batch
            if len(batch) < 100:
                return notes
            page += 1


def upsert_note(gitlab: GitLab, project: str, mr_iid: str, stack: str, body: str) -> str:
    """Update this stack's preview note if there is one, otherwise create it. Returns what was done."""
    for note in gitlab.notes(project, mr_iid):
        if marker(stack) in (note.get("body") or ""):
            gitlab.request("PUT", f"/projects/{project}/merge_requests/{mr_iid}/notes/{note['id']}", {"body": body})
            return f"updated note {note['id']}"
    created = gitlab.request("POST", f"/projects/{project}/merge_requests/{mr_iid}/notes", {"body": body})
    return f"created note {created['id']}"


def main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(description="Post pulumi preview output on the merge request.")
    parser.add_argument("--stack", required=True)
    parser.add_argument("--file", required=True, help="the saved `pulumi preview --diff` output")
    parser.add_argument("--cost", default=None, help="the stack's cost estimate (Markdown from tools/cost.py)")
    args = parser.parse_args(argv)
    token = environ.get("PREVIEW_NOTE_TOKEN", "")
    if not token:
        print("PREVIEW_NOTE_TOKEN is not set: not posting a note (the preview is the job's artifact)")
        return 0
    missing = [name for name in ("CI_API_V4_URL", "CI_PROJECT_ID", "CI_MERGE_REQUEST_IID") if not environ.get(name)]
    if missing:
        print(f"not in a merge-request pipeline ({', '.join(missing)} unset): not posting a note", file=sys.stderr)
        return 1
    with open(args.file, encoding="utf-8", errors="replace") as handle:
        body = note_body(args.stack, handle.read(), environ.get("CI_JOB_URL"), read_cost(args.cost))
    result = upsert_note(
        GitLab(environ["CI_API_V4_URL"], token),
        environ["CI_PROJECT_ID"],
        environ["CI_MERGE_REQUEST_IID"],
        args.stack,
        body,
    )
    print(f"merge request !{environ['CI_MERGE_REQUEST_IID']}: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
