"""What the documentation tells a user to run holds: no credential in the checkout, the real CLI's
messages, commands that work without an activated venv, a teardown that matches `make destroy`, and
a Python check before pip.

Documented commands are those in README.md and CONTRIBUTING.md (shell code blocks and inline code),
the Makefile's recipes and .gitlab-ci.yml's scripts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from components.config import KEYS, ConfigError, parse_config
from tools.harness import ROOT

DOCS = ("README.md", "CONTRIBUTING.md")
# Inside the checkout, documented commands may write only here (all git-ignored).
WRITABLE = ("build/", "venv/", "policy/venv/")
HOME = Path.home()


# ---- collecting what documented commands write -------------------------------------------------
def _shell_snippets(markdown: str) -> list[str]:
    """Shell code blocks (no language, bash, sh, console) and every inline code span outside blocks."""
    snippets: list[str] = []
    outside: list[str] = []
    for index, part in enumerate(re.split(r"^```", markdown, flags=re.MULTILINE)):
        if index % 2 == 0:
            outside.append(part)
            continue
        language, _, body = part.partition("\n")
        if language.strip() in ("", "bash", "sh", "shell", "console"):
            snippets.append(body)
    for text in outside:
        snippets += re.findall(r"`([^`\n]+)`", text)
    return snippets


def _makefile_recipes() -> list[str]:
    return [line[1:] for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("\t")]


def _pipeline() -> tuple[list[str], list[str], dict[str, str]]:
    """(script lines, artifact paths, variables) of every job in .gitlab-ci.yml."""
    pipeline = yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())
    scripts: list[str] = []
    artifacts: list[str] = []
    variables: dict[str, str] = dict(pipeline.get("variables") or {})
    for job in pipeline.values():
        if not isinstance(job, dict):
            continue
        for key in ("before_script", "script", "after_script"):
            scripts += [str(line) for line in job.get(key) or []]
        artifacts += (job.get("artifacts") or {}).get("paths") or []
        variables.update({k: str(v) for k, v in (job.get("variables") or {}).items()})
    return scripts, artifacts, variables


_TARGET = r"(\"[^\"]+\"|'[^']+'|(?:\$\([A-Z_]+\)|[^\s;|&)<>\"'])+)"  # make's $(VAR) included
_WRITES = (
    re.compile(r"(?<![0-9&<>=-])>>?\s*" + _TARGET),  # > file, >> file (not 2>&1, >&2, ->)
    re.compile(r"\btee\s+(?:-a\s+)?" + _TARGET),
    re.compile(r"--out\s+" + _TARGET),
)


def _written_paths(command: str) -> list[str]:
    command = re.sub(r"<[A-Za-z][^<>\n]*>", "X", command)  # README placeholders: <host>, <gitlab host>
    return [match.group(1).strip("\"'") for pattern in _WRITES for match in pattern.finditer(command)]


def _resolve(path: str, variables: dict[str, str]) -> Path | None:
    """The absolute path a command would write, or None when it is not a file (e.g. /dev/null)."""
    for _ in range(3):  # variables defined through other variables
        for name, value in variables.items():
            path = path.replace(f"${{{name}}}", value).replace(f"${name}", value)
    for name, value in {"STACK": "dev", "VENV": "venv"}.items():
        path = path.replace(f"$({name})", value).replace(f"${{{name}}}", value).replace(f"${name}", value)
    path = path.replace("$CI_PROJECT_DIR", str(ROOT)).replace("${CI_PROJECT_DIR}", str(ROOT))
    path = path.replace("$HOME", str(HOME))
    if path.startswith("~"):
        path = str(HOME) + path[1:]
    if path == "/dev/null":
        return None
    assert "$" not in path, f"cannot tell where {path!r} is: teach tests/test_docs.py the variable"
    return Path(path) if path.startswith("/") else ROOT / path


def documented_writes() -> dict[Path, str]:
    """Every file a documented command writes, with where the command is documented."""
    scripts, artifacts, variables = _pipeline()
    commands: list[tuple[str, str]] = [(doc, s) for doc in DOCS for s in _shell_snippets((ROOT / doc).read_text())]
    commands += [("Makefile", line) for line in _makefile_recipes()]
    commands += [(".gitlab-ci.yml", line) for line in scripts]
    writes: dict[Path, str] = {}
    for where, command in commands:
        for raw in _written_paths(command):
            path = _resolve(raw, variables)
            if path is not None:
                writes[path] = f"{where}: {command.strip()}"
    for raw in artifacts:  # a job writes its artifacts into the checkout
        path = _resolve(raw, variables)
        if path is not None:
            writes[path] = f".gitlab-ci.yml artifacts: {raw}"
    return writes


def _git_ignores(relative: str) -> bool:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        if os.environ.get("CI"):
            pytest.fail("git and a checkout are needed to check .gitignore")
        pytest.skip("not a git checkout")
    result = subprocess.run([git, "-C", str(ROOT), "check-ignore", "--no-index", "-q", relative], check=False)
    return result.returncode == 0


def test_the_collector_sees_the_writes_that_matter() -> None:
    writes = documented_writes()
    assert HOME / ".kube" / "gitops-dev" in writes  # the README's kubeconfig
    assert ROOT / "build" / "aws-oidc-token" in writes  # CI's web identity token
    assert ROOT / "build" / "cost-dev.md" in writes and ROOT / "build" / "preview-dev.txt" in writes
    assert HOME / ".ssh" / "known_hosts" in writes
    assert _written_paths("echo hi >&2; make 2>&1 | tee -a log.txt; x > out") == ["out", "log.txt"]
    assert _written_paths("sort < in > out; open https://<gitlab host>:5050") == ["out"]


def test_no_documented_command_writes_into_the_checkout_outside_ignored_build_paths() -> None:
    for path, where in documented_writes().items():
        if ROOT not in path.parents:
            continue  # outside the checkout: the user's home, /etc...
        relative = path.relative_to(ROOT).as_posix()
        assert relative.startswith(WRITABLE), f"{relative} is written among the project's files ({where})"
        assert _git_ignores(relative), f"{relative} is not git-ignored ({where})"


@pytest.mark.parametrize(
    "name",
    ["kubeconfig", "kubeconfig-dev", "dev.kubeconfig", "gitlab-ca.pem", ".aws-oidc-token", "build/gitlab-ca-dev.pem"],
)
def test_gitignore_covers_credentials_saved_by_hand(name: str) -> None:
    assert _git_ignores(name), name


# ---- commands work without an activated virtual environment ------------------------------------------
def test_tools_are_run_with_the_venvs_python() -> None:
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        bare = re.findall(r"(?<![/\w])python3? -m tools\.\w+", text)
        assert not bare, f"{doc}: {bare} needs an activated venv; write venv/bin/python -m tools.… or a make target"


def test_contributing_names_the_lint_target() -> None:
    text = (ROOT / "CONTRIBUTING.md").read_text()
    assert re.search(r"^make lint\b", text, flags=re.MULTILINE)
    assert "\nlint: venv\n" in (ROOT / "Makefile").read_text()


# ---- the README's sample errors are what the CLI and the program print ---------------------------------
# pulumi/pulumi pkg/workspace/config.go: missingStackConfigurationKeysError and validateStackConfigValue,
# wrapped as "validating stack config: %w" by `pulumi preview`/`up` (pkg/cmd/pulumi/operations) and
# printed as "error: <message>" (sdk/go/common/util/cmdutil DisplayErrorMessage). They run before the
# program, against Pulumi.yaml's `config:` declarations (tools/config_docs.py writes them).
CLI_MISSING = "error: validating stack config: Stack '{stack}' is missing configuration value '{key}'"
CLI_TYPE = "error: validating stack config: Stack '{stack}' with configuration key '{key}' must be of type '{type}'"


def _readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [part.partition("\n")[2] for index, part in enumerate(text.split("```")) if index % 2]


def test_readme_shows_the_clis_own_messages_for_a_missing_key_and_a_wrong_type() -> None:
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    assert "default" not in declared["adminCidrs"]  # so the CLI, not the program, reports it missing
    assert declared["workerCount"]["type"] == "integer"
    expected = [
        CLI_MISSING.format(stack="dev", key="adminCidrs"),
        CLI_TYPE.format(stack="dev", key="workerCount", type="integer"),
    ]
    assert any(all(line in block.splitlines() for line in expected) for block in _readme_blocks())


def test_readme_shows_the_programs_own_message_for_values_it_rejects() -> None:
    raw: dict[str, str | None] = {key.name: None for key in KEYS}
    raw.update({"adminCidrs": json.dumps(["203.0.113.7/32"]), "workerCount": "0", "projectVisibility": "secret"})
    with pytest.raises(ConfigError) as raised:
        parse_config(raw, "gitops", "dev")
    printed = [
        "    error: " + line if index == 0 else "    " + line
        for index, line in enumerate(str(raised.value).splitlines())
    ]
    expected = "\n".join(["Diagnostics:", "  pulumi:pulumi:Stack (gitops-dev):", *printed])
    assert any(expected in block for block in _readme_blocks()), expected


# ---- make: teardown and the Python check ------------------------------------------------------------
def _stub(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def _make(*args: str, path: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PATH": f"{path}:{os.environ['PATH']}"}
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), *args],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )


# What `pulumi stack --show-urns` prints (pulumi/pulumi pkg/cmd/pulumi/stack/stack.go renderResourceRow:
# each resource's row, then "URN: <urn>" on the next line), for a stack the dev program deployed.
STACK_TREE = """Current stack is dev:
    Owner: ops
Current stack resources (3):
    TYPE                                   NAME
    pulumi:pulumi:Stack                    gitops-dev
    │  URN: urn:pulumi:dev::gitops::pulumi:pulumi:Stack::gitops-dev
    ├─ gitops:cluster:KubeadmCluster       gitops-k8s
    │  │  URN: urn:pulumi:dev::gitops::gitops:cluster:KubeadmCluster::gitops-k8s
    │  ├─ aws:ec2/instance:Instance        gitops-k8s-master
    │  │     URN: urn:pulumi:dev::gitops::gitops:cluster:KubeadmCluster$aws:ec2/instance:Instance::gitops-k8s-master
    │  ├─ aws:ec2/eip:Eip                  gitops-k8s-master-eip
    │  │     URN: urn:pulumi:dev::gitops::gitops:cluster:KubeadmCluster$aws:ec2/eip:Eip::gitops-k8s-master-eip
    │  └─ aws:ec2/instance:Instance        gitops-k8s-worker1
    │        URN: urn:pulumi:dev::gitops::gitops:cluster:KubeadmCluster$aws:ec2/instance:Instance::gitops-k8s-worker1
"""
MASTER_URN = "urn:pulumi:dev::gitops::gitops:cluster:KubeadmCluster$aws:ec2/instance:Instance::gitops-k8s-master"


def _pulumi_stub(directory: Path, calls: Path, version: str = "v3.272.0") -> None:
    """A Pulumi CLI that answers `pulumi version` and `pulumi stack --show-urns`, and records every other call."""
    (directory / "stack-tree").write_text(STACK_TREE)
    _stub(
        directory,
        "pulumi",
        f'[ "$1" = version ] && {{ echo {version}; exit 0; }}\necho "$*" >> {calls}\n'
        f'case " $* " in *" --show-urns "*) cat {directory / "stack-tree"} ;; esac\n',
    )


@pytest.fixture
def recording_pulumi(tmp_path: Path) -> tuple[Path, Path]:
    calls = tmp_path / "calls"
    _pulumi_stub(tmp_path, calls)
    return tmp_path, calls


def test_make_destroy_is_the_readmes_everyday_teardown(recording_pulumi: tuple[Path, Path]) -> None:
    """Everything but the GitLab data volume: the control plane is unprotected first, or
    --exclude-protected would keep it with its subnet, VPC, groups, key pair and profile."""
    bin_dir, calls = recording_pulumi
    result = _make("destroy", "STACK=dev", path=bin_dir)
    assert result.returncode == 0, result.stderr
    assert calls.read_text().splitlines() == [
        "stack --stack dev --show-urns",
        f"state unprotect --stack dev --yes {MASTER_URN}",
        "destroy --stack dev --exclude-protected",
    ]
    readme = (ROOT / "README.md").read_text()
    assert "make destroy                              # unprotects the control plane, then" in readme
    teardown = readme.split("## Tear down", 1)[1].split("\n## ", 1)[0]
    assert "pulumi state unprotect --stack dev --yes '<urn of gitops-k8s-master>'" in teardown


def test_make_destroy_unprotects_every_control_plane_node(recording_pulumi: tuple[Path, Path]) -> None:
    """controlPlaneCount 3: master2 and master3 are protected too (removing one is refused)."""
    bin_dir, calls = recording_pulumi
    members = "".join(
        f"    │  ├─ aws:ec2/instance:Instance        gitops-k8s-{name}\n"
        f"    │  │     URN: {MASTER_URN}{name[len('master') :]}\n"
        for name in ("master2", "master3")
    )
    lookalike = "    │  ├─ command:remote:Command           gitops-k8s-master2-join\n"
    lookalike += "    │  │     URN: urn:pulumi:dev::gitops::command:remote:Command::gitops-k8s-master2-join\n"
    (bin_dir / "stack-tree").write_text(STACK_TREE + members + lookalike)
    result = _make("destroy", "STACK=dev", path=bin_dir)
    assert result.returncode == 0, result.stderr
    assert calls.read_text().splitlines() == [
        "stack --stack dev --show-urns",
        f"state unprotect --stack dev --yes {MASTER_URN}",
        f"state unprotect --stack dev --yes {MASTER_URN}2",
        f"state unprotect --stack dev --yes {MASTER_URN}3",
        "destroy --stack dev --exclude-protected",
    ]


def test_make_destroy_on_a_stack_without_a_control_plane_just_destroys(recording_pulumi: tuple[Path, Path]) -> None:
    bin_dir, calls = recording_pulumi
    (bin_dir / "stack-tree").write_text("Current stack is dev:\nCurrent stack resources (0):\n")
    assert _make("destroy", "STACK=dev", path=bin_dir).returncode == 0
    assert calls.read_text().splitlines() == [
        "stack --stack dev --show-urns",
        "destroy --stack dev --exclude-protected",
    ]


def test_make_destroy_stops_when_it_cannot_list_the_stack(tmp_path: Path) -> None:
    """Never fall back to a teardown that would silently keep the control plane."""
    calls = tmp_path / "calls"
    _stub(
        tmp_path,
        "pulumi",
        f'echo "$*" >> {calls}\n[ "$1" = stack ] && {{ echo "error: no stack" >&2; exit 255; }}\nexit 0\n',
    )
    assert _make("destroy", "STACK=dev", path=tmp_path).returncode != 0
    assert calls.read_text().splitlines() == ["stack --stack dev --show-urns"]


def test_deleting_protected_resources_needs_the_stack_named_twice(recording_pulumi: tuple[Path, Path]) -> None:
    bin_dir, calls = recording_pulumi
    refused = _make("destroy-for-good", "STACK=prod", path=bin_dir)
    assert refused.returncode != 0
    assert "make destroy-for-good STACK=prod CONFIRM=prod" in refused.stderr
    assert not calls.exists(), "nothing may run without the confirmation"
    assert _make("destroy-for-good", "STACK=prod", "CONFIRM=dev", path=bin_dir).returncode != 0
    assert _make("destroy-for-good", "STACK=prod", "CONFIRM=prod", path=bin_dir).returncode == 0
    assert calls.read_text() == "destroy --stack prod --ignore-protect\n"
    assert "make destroy-for-good STACK=dev CONFIRM=dev" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize(
    ("target", "oldest", "too_old"),
    [
        # Older engines replace resources whose explicit provider changed (pulumi/pulumi#18509).
        ("preview", "3.151.0", "v3.150.2"),
        ("up", "3.151.0", "v3.150.2"),
        # `destroy --ignore-protect` arrived in 3.256.0 (pulumi/pulumi#24053).
        ("destroy-for-good", "3.256.0", "v3.255.0"),
    ],
)
def test_make_refuses_a_pulumi_cli_older_than_the_program_needs(
    tmp_path: Path, target: str, oldest: str, too_old: str
) -> None:
    calls = tmp_path / "calls"
    # The virtual environments are not this test's subject: make takes them as built.
    skip_venvs = ["-o", "venv/.installed", "-o", "policy/venv/.installed", "STACK=dev", "CONFIRM=dev"]
    _pulumi_stub(tmp_path, calls, too_old)
    refused = _make(*skip_venvs, target, path=tmp_path)
    assert refused.returncode != 0
    assert f"Pulumi CLI {oldest} or newer is needed; found: {too_old[1:]}" in refused.stderr
    assert not calls.exists(), "nothing ran with the old CLI"
    _pulumi_stub(tmp_path, calls, f"v{oldest}")
    assert _make(*skip_venvs, target, path=tmp_path).returncode == 0
    assert calls.read_text().startswith({"preview": "preview", "up": "up", "destroy-for-good": "destroy"}[target])
    before_you_start = (ROOT / "README.md").read_text().split("## Before you start", 1)[1].split("\n## ", 1)[0]
    assert f"{oldest} or newer" in before_you_start


def test_make_says_which_python_is_needed_before_pip_runs(tmp_path: Path) -> None:
    _stub(tmp_path, "python3.10", 'if [ "$1" = --version ]; then echo "Python 3.10.12"; exit 0; fi\nexit 1\n')
    venv = tmp_path / "venv"
    result = _make("venv", f"VENV={venv}", f"PYTHON={tmp_path / 'python3.10'}", path=tmp_path)
    assert result.returncode != 0
    assert "Python 3.11 or newer is needed" in result.stderr and "Python 3.10.12" in result.stderr
    assert "make PYTHON=python3.11" in result.stderr
    assert not venv.exists(), "no venv (and no pip run) with the wrong Python"


# ---- Day 2 advice that would destroy something ---------------------------------------------------
def _section(title: str) -> str:
    return (ROOT / "README.md").read_text().split(title, 1)[1].split("\n## ", 1)[0]


def test_the_readme_never_advises_replacing_the_control_plane() -> None:
    """A new first control-plane node runs kubeadm init on an empty etcd: there is no restore path yet.

    Further members (master2, master3) join the others: replacing one is the documented way to rebuild it.
    """
    readme = (ROOT / "README.md").read_text()
    for snippet in _shell_snippets(readme):
        if "--replace" in snippet:
            assert not re.search(r"gitops-k8s-master(?![0-9])", snippet), snippet
    refusals = _section("### What the program refuses, and why")
    assert "no supported way\n  to replace the control plane today" in refusals
    assert "before kubeadm changes anything" in refusals
    members = _section("## Highly available control plane")
    assert "pulumi up --replace '<urn of gitops-k8s-master2>'" in members
    assert "pulumi state unprotect '<urn of gitops-k8s-master2>'" in members


def test_the_step_rerun_advice_excludes_the_membership_steps() -> None:
    """Replacing a -membership step runs its delete: the worker is drained and its Node deleted."""
    troubleshooting = _section("## Troubleshooting")
    (advice,) = [item for item in troubleshooting.split("\n- ") if "To re-run a step that succeeded" in item]
    assert "except a `gitops-k8s-workerN-membership`\n  step" in advice
