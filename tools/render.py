"""Offline render: what `pulumi up` would create, written to files a reviewer (and validators) can read.

    venv/bin/python -m tools.render --stack dev --out build/render/dev [--set workerCount=3 ...]

Runs the real program under Pulumi mocks (tools/harness.py) with the stack's own configuration
(Pulumi.<stack>.yaml over Pulumi.yaml's defaults, then --set): no Pulumi CLI, no cloud credentials.
A value the stack file lacks and the program needs (adminCidrs, which has no default; aws:region)
gets a stand-in, and index.md says which. The output directory is emptied first, so nothing from an
earlier render survives. Writes, under it:

    index.md                 the stack, every config value and where it came from, stand-ins, files
    resources.md             every resource with its key settings, in registration order
    userdata/<instance>.yaml each EC2 instance's (and launch template's) cloud-init user data
    steps/<command>.sh       the script each remote step runs over SSH (common.sh + the step)
    steps/<command>.env      the non-secret parameters it receives on its command line
    runners/config.toml      the runner manager's config.toml (the token stays a placeholder)
    steps/<command>.delete.sh, .delete.env   the same for a step's `delete` (a worker's drain),
                             which runs when the step is removed or replaced
    kubernetes/<name>.yaml   every Kubernetes object the program applies (custom resources included)
    charts/<name>.yaml       every Helm chart it installs: chart, pinned version, repository, values
    gitlab/<path>            every file seeded into the GitLab project (.gitlab-ci.yml included)
    outputs.json             the stack outputs, secrets redacted

Values that depend on the cloud (ids, IPs, keys, certificates) are the mocks' realistic stand-ins,
named for the stack's region; secrets are never written: steps' stdin and secret outputs are
replaced by "[secret]". The GitLab provider's CA file (build/gitlab-ca-<stack>.pem) is not touched:
only a real `pulumi preview`/`up` writes it, from the stack's own CA.
"""

from __future__ import annotations

import argparse
import base64
import json
import shlex
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tools.harness import (
    DEFAULT_REGION,
    MOCK_SECRET_VALUE,
    PROJECT,
    ROOT,
    ProgramError,
    ProgramRun,
    Registration,
    is_secret_value,
    plain,
    run_program,
    stack_file_path,
)

SECRET = "[secret]"
# Stand-ins for values the program needs and a stack file may lack (set per machine or per CI job).
# 203.0.113.0/24 is TEST-NET-3 (RFC 5737): documentation only, never a real admin address.
PLACEHOLDERS: dict[str, Any] = {f"{PROJECT}:adminCidrs": ["203.0.113.7/32"], "aws:region": DEFAULT_REGION}
INDEX_TITLE = "# Render of stack"  # first line of index.md: marks a directory render may empty
RENDER_MARKERS = {"index.md": INDEX_TITLE, "resources.md": "# Resources of stack"}
KEY_SETTINGS = {
    "aws:ec2/instance:Instance": (
        "instanceType",
        "ami",
        "subnetId",
        "associatePublicIpAddress",
        "metadataOptions",
        "rootBlockDevice",
    ),
    "aws:ebs/volume:Volume": ("availabilityZone", "size", "type", "encrypted"),
    "aws:ec2/launchTemplate:LaunchTemplate": ("instanceType", "imageId", "metadataOptions", "blockDeviceMappings"),
    "aws:autoscaling/group:Group": ("minSize", "maxSize", "protectFromScaleIn", "suspendedProcesses"),
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": (
        "securityGroupId",
        "ipProtocol",
        "fromPort",
        "toPort",
        "cidrIpv4",
        "referencedSecurityGroupId",
        "description",
    ),
    "aws:ec2/vpc:Vpc": ("cidrBlock", "enableDnsHostnames", "enableDnsSupport"),
    "aws:ec2/subnet:Subnet": ("cidrBlock", "availabilityZone"),
    "gitlab:index/project:Project": ("name", "visibilityLevel", "defaultBranch"),
    "gitlab:index/repositoryFile:RepositoryFile": ("filePath", "createCommitMessage"),
    "gitlab:index/projectVariable:ProjectVariable": ("key", "masked", "protected", "variableType"),
    "gitlab:index/deployKey:DeployKey": ("title", "canPush"),
}


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def _redacted(value: Any) -> Any:
    if is_secret_value(value):
        # Keep the shape (a Secret's stringData keys stay readable and schema-valid), not the data.
        inner = plain(value)
        if isinstance(inner, dict):
            return dict.fromkeys(inner, SECRET)
        return SECRET
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def _resource_line(registration: Registration) -> str:
    inputs = _redacted(registration.inputs)
    keys = KEY_SETTINGS.get(registration.type, ())
    settings = {k: inputs[k] for k in keys if k in inputs}
    flags = [
        flag
        for flag, on in (("protect", registration.protect), ("retainOnDelete", registration.retain_on_delete))
        if on
    ]
    extra = f" [{', '.join(flags)}]" if flags else ""
    detail = f" `{json.dumps(settings, sort_keys=True)}`" if settings else ""
    return f"- `{registration.type}` **{registration.name}**{extra}{detail}"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _step_parts(create: str) -> tuple[dict[str, str], str]:
    """Split `sudo env K=V... bash -c <script> <name>` into its parameters and its script."""
    words = shlex.split(create)
    if words[:2] != ["sudo", "env"] or "bash" not in words:
        return {}, create
    bash = words.index("bash")
    env = dict(word.split("=", 1) for word in words[2:bash])
    return env, words[bash + 2]


@dataclass(frozen=True)
class ConfigOrigin:
    """Where each configuration value of a render came from, and which ones are stand-ins."""

    sources: dict[str, str] = field(default_factory=dict)  # full key -> "Pulumi.dev.yaml", "default"...
    placeholders: dict[str, Any] = field(default_factory=dict)  # full key -> stand-in value used


def _full_key(key: str) -> str:
    return key if ":" in key else f"{PROJECT}:{key}"


def config_origin(stack: str, overrides: Mapping[str, Any], stack_dir: Path | None = None) -> ConfigOrigin:
    """Sources of the stack's values (Pulumi.yaml default < stack file < --set) and the stand-ins needed."""
    project_file = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    sources: dict[str, str] = {}
    for key, schema in (project_file.get("config") or {}).items():
        if isinstance(schema, dict) and "default" in schema:
            sources[_full_key(key)] = "default (Pulumi.yaml)"
    stack_file = stack_file_path(stack, stack_dir)
    if stack_file.exists():
        for key in (yaml.safe_load(stack_file.read_text()) or {}).get("config") or {}:
            sources[key] = stack_file.name
    for key in overrides:
        sources[_full_key(key)] = "--set"
    placeholders = {key: value for key, value in PLACEHOLDERS.items() if key not in sources}
    for key in placeholders:
        sources[key] = "stand-in (not in the stack file)"
    return ConfigOrigin(sources, placeholders)


def _is_render_directory(out: Path) -> bool:
    for name, marker in RENDER_MARKERS.items():
        path = out / name
        if path.is_file() and path.read_text(errors="replace").startswith(marker):
            return True
    return False


def clean_output(out: Path) -> None:
    """Empty ``out`` so no file of an earlier render survives; refuse a directory render did not write."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"{out} is not a directory")
    if any(out.iterdir()) and not _is_render_directory(out):
        raise ValueError(f"{out} is not empty and was not written by tools.render (no index.md): not emptying it")
    shutil.rmtree(out)


def _index(run: ProgramRun, origin: ConfigOrigin, files: list[str]) -> str:
    lines = [f"{INDEX_TITLE} `{run.stack}`", ""]
    lines += [
        f"What `pulumi up --stack {run.stack}` would create, from the program run under mocks with this",
        "configuration. Ids, addresses, keys and certificates are stand-ins named for the stack's region.",
        "",
    ]
    if origin.placeholders:
        lines += ["**Stand-ins** for values the stack file does not set (set them before `pulumi up`):", ""]
        lines += [f"- `{key}` = `{json.dumps(value)}`" for key, value in sorted(origin.placeholders.items())]
        lines += [""]
    else:
        lines += ["Every value below comes from the stack file, Pulumi.yaml's defaults or `--set`: no stand-in.", ""]
    lines += ["| key | value | from |", "|---|---|---|"]
    for key in sorted(run.config):
        value = SECRET if run.config[key] == MOCK_SECRET_VALUE else run.config[key]  # a `secure:` value
        shown = f"`{value}`" if value != "" else "(empty)"
        lines.append(f"| `{key}` | {shown} | {origin.sources.get(key, 'program default')} |")
    lines += [
        "",
        f"The GitLab provider reads `build/gitlab-ca-{run.stack}.pem`, which a real `pulumi preview`/`up`",
        "writes from the stack's own CA; this render did not touch it.",
        "",
        f"## Files ({len(files)})",
        "",
    ]
    lines += [f"- `{name}`" for name in sorted(files)]
    return "\n".join(lines) + "\n"


def render(run: ProgramRun, out: Path, origin: ConfigOrigin | None = None) -> list[Path]:
    """Write the render of ``run`` into ``out``, emptied first; index.md last, listing every file."""
    clean_output(out)
    written: list[Path] = []

    def write(relative: str, text: str) -> None:
        _write(out / relative, text)
        written.append(out / relative)

    lines = [f"# Resources of stack `{run.stack}` ({len(run.registrations)})", ""]
    lines += [_resource_line(r) for r in run.registrations]
    write("resources.md", "\n".join(lines) + "\n")

    for registration in run.registrations:
        inputs = registration.inputs
        name = _safe_name(registration.name)
        if registration.type == "aws:ec2/instance:Instance" and "userData" in inputs:
            write(f"userdata/{name}.yaml", plain(inputs["userData"]))
        elif registration.type == "aws:ec2/launchTemplate:LaunchTemplate" and "userData" in inputs:
            # Launch templates take user data base64-encoded; the render shows what the VM reads.
            write(f"userdata/{name}.yaml", base64.b64decode(plain(inputs["userData"])).decode())
        elif registration.type == "command:remote:Command" and "create" in inputs:
            for command, suffix in (("create", ""), ("delete", ".delete")):
                if inputs.get(command):
                    env, script = _step_parts(plain(inputs[command]))
                    if command == "create" and "RUNNER_CONFIG_TOML" in env:
                        write("runners/config.toml", env["RUNNER_CONFIG_TOML"])
                    write(f"steps/{name}{suffix}.sh", script)
                    write(
                        f"steps/{name}{suffix}.env", "".join(f"{k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
                    )
        elif registration.type == "kubernetes:helm.sh/v4:Chart":
            chart = {k: v for k, v in _redacted(inputs).items() if not k.startswith("__")}
            write(f"charts/{name}.yaml", yaml.safe_dump(chart, sort_keys=False))
        elif registration.type.startswith("kubernetes:") and "apiVersion" in inputs and "kind" in inputs:
            document = {k: v for k, v in _redacted(inputs).items() if not k.startswith("__")}
            write(f"kubernetes/{name}.yaml", yaml.safe_dump(document, sort_keys=False))
        elif registration.type == "gitlab:index/repositoryFile:RepositoryFile":
            write(f"gitlab/{plain(inputs['filePath'])}", plain(inputs.get("content", "")))

    outputs = {key: (SECRET if key in run.secret_outputs else value) for key, value in run.outputs.items()}
    write("outputs.json", json.dumps(outputs, indent=2, sort_keys=True, default=str) + "\n")
    files = [str(path.relative_to(out)) for path in written]
    write("index.md", _index(run, origin or ConfigOrigin(), [*files, "index.md"]))
    return written


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs as `pulumi config set` would store them (JSON for lists and numbers)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except ValueError:
            overrides[key] = value
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="dev", help="stack whose Pulumi.<stack>.yaml is used (default: dev)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: build/render/<stack>)")
    parser.add_argument(
        "--stack-dir", type=Path, default=None, help="directory holding Pulumi.<stack>.yaml (default: the project)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, as `pulumi config set` (JSON for lists); aws:region as namespaced key",
    )
    args = parser.parse_args(argv)
    out: Path = args.out or ROOT / "build" / "render" / args.stack
    overrides = parse_set(args.set)
    origin = config_origin(args.stack, overrides, args.stack_dir)
    try:
        run = run_program(args.stack, {**origin.placeholders, **overrides}, stack_dir=args.stack_dir)
        written = render(run, out, origin)
    except ProgramError as error:
        print(f"the program stopped: {error}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"render: {error}", file=sys.stderr)
        return 1
    print(f"rendered stack {args.stack}: {len(run.registrations)} resources, {len(written)} files in {out}")
    for key, value in sorted(origin.placeholders.items()):
        print(f"  stand-in for {key} (not in the stack file): {json.dumps(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
