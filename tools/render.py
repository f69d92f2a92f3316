"""Offline render: what `pulumi up` would create, written to files a reviewer (and validators) can read.

    python -m tools.render --stack dev --out build/render [--set workerCount=3 ...]

Runs the real program under Pulumi mocks (tools/harness.py): no Pulumi CLI, no cloud credentials.
Writes, under the output directory:

    resources.md             every resource with its key settings, in registration order
    userdata/<instance>.yaml each EC2 instance's cloud-init user data
    steps/<command>.sh       the script each remote step runs over SSH (common.sh + the step)
    steps/<command>.env      the non-secret parameters it receives on its command line
    kubernetes/<name>.yaml   every Kubernetes object the program applies (custom resources included)
    gitlab/<path>            every file seeded into the GitLab project (.gitlab-ci.yml included)
    outputs.json             the stack outputs, secrets redacted

Values that depend on the cloud (ids, IPs, keys, certificates) are the mocks' realistic stand-ins;
secrets are never written: steps' stdin and secret outputs are replaced by "[secret]".
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from tools.harness import ProgramError, ProgramRun, Registration, is_secret_value, plain, run_program

SECRET = "[secret]"
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


def render(run: ProgramRun, out: Path) -> list[Path]:
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
        elif registration.type == "command:remote:Command" and "create" in inputs:
            env, script = _step_parts(plain(inputs["create"]))
            write(f"steps/{name}.sh", script)
            write(f"steps/{name}.env", "".join(f"{k}={shlex.quote(v)}\n" for k, v in sorted(env.items())))
        elif registration.type.startswith("kubernetes:") and "apiVersion" in inputs and "kind" in inputs:
            document = {k: v for k, v in _redacted(inputs).items() if not k.startswith("__")}
            write(f"kubernetes/{name}.yaml", yaml.safe_dump(document, sort_keys=False))
        elif registration.type == "gitlab:index/repositoryFile:RepositoryFile":
            write(f"gitlab/{plain(inputs['filePath'])}", plain(inputs.get("content", "")))

    outputs = {key: (SECRET if key in run.secret_outputs else value) for key, value in run.outputs.items()}
    write("outputs.json", json.dumps(outputs, indent=2, sort_keys=True, default=str) + "\n")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="dev", help="stack whose Pulumi.<stack>.yaml is used (default: dev)")
    parser.add_argument("--out", type=Path, default=Path("build/render"), help="output directory")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, as `pulumi config set` (JSON for lists); adminCidrs defaults to 203.0.113.7/32",
    )
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {"adminCidrs": ["203.0.113.7/32"]}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except ValueError:
            overrides[key] = value
    try:
        run = run_program(args.stack, overrides)
    except ProgramError as error:
        print(f"the program stopped: {error}", file=sys.stderr)
        return 1
    written = render(run, args.out)
    print(f"rendered stack {args.stack}: {len(run.registrations)} resources, {len(written)} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
