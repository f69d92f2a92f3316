"""Steps that need a secret run over SSH with the secret on stdin, after cloud-init has finished.

A step is a file under userdata/ sent with userdata/lib/common.sh in front of it, so the script
that runs is always the one in this commit (cloud-init runs once per instance: a script installed
by user data would go stale). Non-secret parameters travel as environment variables on the
command line; secrets only on stdin, never in the command text, a log line or user data.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi_command as command

from components.cloudinit import read_script
from components.hosts import SSH_USER

# SSH dial attempts x per-dial timeout bound how long a step waits for a booting host (~10 min).
DIAL_ATTEMPTS = 40
DIAL_TIMEOUT_SECONDS = 15


def step_script(script: str) -> str:
    """What runs on the host: the shared functions, then the step."""
    return read_script("lib/common.sh") + "\n" + read_script(script)


def step_command(script: str, env: Mapping[str, str]) -> str:
    """The command line of a step: `sudo env K=V... bash -c <script> <name>` (no secret in it)."""
    words = ["sudo", "env", f"STEP_NAME={shlex.quote(script)}"]
    words += [f"{key}={shlex.quote(value)}" for key, value in sorted(env.items())]
    words += ["bash", "-c", shlex.quote(step_script(script)), shlex.quote(script)]
    return " ".join(words)


def remote_step(
    name: str,
    *,
    host: pulumi.Input[str],
    private_key: pulumi.Input[str],
    script: str,
    env: Mapping[str, pulumi.Input[str]] | None = None,
    stdin: pulumi.Input[str] | None = None,
    triggers: Sequence[Any] = (),
    opts: pulumi.ResourceOptions,
) -> command.remote.Command:
    """Run userdata/<script> on ``host`` as root; re-run when the script, env or triggers change."""
    # Output.all() of nothing resolves to a list, not a dict: a step without parameters is plain text.
    create = (
        pulumi.Output.all(**env).apply(lambda values: step_command(script, values))
        if env
        else pulumi.Output.from_input(step_command(script, {}))
    )
    script_digest = hashlib.sha256(step_script(script).encode()).hexdigest()
    return command.remote.Command(
        name,
        connection=command.remote.ConnectionArgs(
            host=host,
            user=SSH_USER,
            private_key=private_key,
            dial_error_limit=DIAL_ATTEMPTS,
            per_dial_timeout=DIAL_TIMEOUT_SECONDS,
        ),
        create=create,
        stdin=stdin,
        triggers=[script_digest, *triggers],
        # Progress goes to stderr and is shown live; stdout (a value a step reads back, e.g. a
        # token) is kept out of the engine's log.
        logging=command.remote.Logging.STDERR,
        opts=opts,
    )
