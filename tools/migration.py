"""A stack as an earlier commit of this program deployed it: run A of a plan (tools/plan.py).

A user who deployed with an older commit runs today's program on that stack. To check what that
first `up` does, ``record`` runs the older commit's own program under its own harness (``git
archive`` of it, in a subprocess, with this venv) and keeps every registration, which the tests
load as run A of ``plan``:

    venv/bin/python -m tools.migration --commit fdc93c5 --stack dev \\
        --out tests/fixtures/deployed/fdc93c5-dev.jsonl

The file holds no private key and stays small:

* every private key a ``tls`` resource made (PEM, PKCS#8, OpenSSH) is replaced, wherever it appears
  as is or base64-encoded, by a placeholder; recording fails if any private key is left;
* strings longer than ``LONG`` characters (scripts, user data, bundles) are kept as their SHA-256,
  except in ``tls`` resources, whose certificates and public keys today's run needs as they were.

``deployed_mocks`` makes today's run answer an unchanged resource with what the old one made (the
``tls`` resources above all, so that certificates, CA pins and kubeconfigs come out the same), and
``comparable`` shortens today's run the same way before the two are diffed.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tools.harness import ROOT, ProgramRun, Registration, StackMocks, plain

LONG = 256
PRIVATE_FIELDS = ("privateKeyPem", "privateKeyPemPkcs8", "privateKeyOpenssh")
_FIELDS = (
    "type name urn custom inputs state id parent protect retain_on_delete delete_before_replace ignore_changes "
    "depends_on property_dependencies provider additional_secret_outputs"
).split()

# Runs inside the extracted old tree: its own harness, its own components, its own fixture stacks.
_RECORDER = """
import json, sys
sys.path.insert(0, ".")
from tools.harness import plain, run_fixture_stack
run = run_fixture_stack(sys.argv[1], json.loads(sys.argv[2]))
fields = json.loads(sys.argv[3])
rows = [{f: plain(getattr(r, f)) for f in fields} for r in run.registrations]
json.dump({"registrations": rows, "outputs": plain(run.outputs)}, sys.stdout, default=str)
"""


def _run_old_program(commit: str, stack: str, overrides: Mapping[str, Any]) -> dict:
    with tempfile.TemporaryDirectory(prefix="gitops-deployed-") as tree:
        archive = subprocess.run(  # noqa: S603 - fixed git arguments, no shell
            ["git", "-C", str(ROOT), "archive", "--format=tar", commit],  # noqa: S607 - git from PATH
            check=True,
            capture_output=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tree, filter="data")
        result = subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
            [sys.executable, "-c", _RECORDER, stack, json.dumps(dict(overrides)), json.dumps(_FIELDS)],
            cwd=tree,
            check=True,
            capture_output=True,
            text=True,
        )
    return json.loads(result.stdout)


def _private_keys(rows: list[dict]) -> dict[str, str]:
    """Every private key the run made -> its placeholder."""
    keys: dict[str, str] = {}
    for row in rows:
        if row["type"] == "tls:index/privateKey:PrivateKey":
            for field in PRIVATE_FIELDS:
                value = row["state"].get(field)
                if value:
                    keys[value] = f"<private key {row['name']} {field}>"
    return keys


def _replacements(keys: Mapping[str, str]) -> list[tuple[str, str]]:
    """(text, placeholder) pairs: each key as is, stripped, and base64-encoded both ways; longest first."""
    pairs: dict[str, str] = {}
    for key, placeholder in keys.items():
        for variant, replacement in ((key, placeholder), (key.strip(), placeholder.strip())):
            pairs[variant] = replacement
            pairs[base64.b64encode(variant.encode()).decode()] = base64.b64encode(replacement.encode()).decode()
    return sorted(pairs.items(), key=lambda pair: -len(pair[0]))


def _walk(value: Any, leaf: Any) -> Any:
    if isinstance(value, str):
        return leaf(value)
    if isinstance(value, dict):
        return {key: _walk(item, leaf) for key, item in value.items()}
    if isinstance(value, list):
        return [_walk(item, leaf) for item in value]
    return value


def shorten(value: Any) -> Any:
    """Strings longer than LONG become their digest: equal strings stay equal, different ones differ."""
    return _walk(
        value, lambda text: text if len(text) <= LONG else "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    )


_BASE64 = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")


def leaks_a_private_key(text: str) -> bool:
    if "PRIVATE KEY" in text:
        return True
    for token in _BASE64.findall(text):
        try:
            decoded = base64.b64decode(token + "=" * (-len(token) % 4)).decode(errors="ignore")
        except (binascii.Error, ValueError):
            continue
        if "PRIVATE KEY" in decoded:
            return True
    return False


def any_string(value: Any, test: Any) -> bool:
    if isinstance(value, str):
        return bool(test(value))
    if isinstance(value, dict):
        return any(any_string(item, test) for item in value.values())
    if isinstance(value, list):
        return any(any_string(item, test) for item in value)
    return False


def scrub(rows: list[dict]) -> list[dict]:
    """The rows with every private key replaced and long strings shortened; fails if a key is left."""
    pairs = _replacements(_private_keys(rows))

    def replace(text: str) -> str:
        for secret, placeholder in pairs:
            if secret in text:
                text = text.replace(secret, placeholder)
        return text

    scrubbed = []
    for row in rows:
        row = {**row, "inputs": _walk(row["inputs"], replace), "state": _walk(row["state"], replace)}
        if not row["type"].startswith("tls:"):
            row = {**row, "inputs": shorten(row["inputs"]), "state": shorten(row["state"])}
        if any_string([row["inputs"], row["state"]], leaks_a_private_key):
            raise ValueError(
                f"{row['urn']}: a private key is left after scrubbing; teach tools/migration.py its encoding"
            )
        scrubbed.append(row)
    return scrubbed


def record(commit: str, stack: str, overrides: Mapping[str, Any], out: Path) -> Path:
    recorded = _run_old_program(commit, stack, overrides)
    header = {"commit": commit, "stack": stack, "overrides": dict(overrides), "outputs": shorten(recorded["outputs"])}
    lines = [json.dumps(header, sort_keys=True)]
    lines += [json.dumps(row, sort_keys=True) for row in scrub(recorded["registrations"])]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


def load(path: Path) -> ProgramRun:
    """A recorded stack as a ProgramRun (its overrides under ``config``)."""
    header, *rows = (json.loads(line) for line in path.read_text().splitlines())
    registrations = [Registration(**{field: row[field] for field in _FIELDS}) for row in rows]
    return ProgramRun(header["stack"], dict(header["overrides"]), registrations, header["outputs"], set())


def deployed_mocks(run: ProgramRun) -> StackMocks:
    """Mocks for today's program on that stack: an unchanged resource keeps what the old run made."""
    mocks = StackMocks()
    mocks.keep_deployed(run)
    return mocks


def comparable(run: ProgramRun) -> ProgramRun:
    """Today's run with long strings shortened as in a recording (tls resources kept as they are)."""
    registrations = []
    for registration in run.registrations:
        values = {field: getattr(registration, field) for field in _FIELDS}
        if not registration.type.startswith("tls:"):
            values["inputs"] = shorten(plain(registration.inputs))
            values["state"] = shorten(plain(registration.state))
        registrations.append(Registration(**values))
    return ProgramRun(run.stack, run.config, registrations, run.outputs, run.secret_outputs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", required=True, help="the commit whose program deployed the stack")
    parser.add_argument("--stack", default="dev", help="a stack of tests/fixtures/stacks")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="a config override")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    overrides = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    print(record(args.commit, args.stack, overrides, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
