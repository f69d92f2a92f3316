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
from components.config import StackConfig
from components.hosts import SSH_USER, SshAccess

# SSH dial attempts x per-dial timeout bound how long a step waits for a booting host (~10 min).
DIAL_ATTEMPTS = 40
DIAL_TIMEOUT_SECONDS = 15


def step_script(script: str, libs: Sequence[str] = ()) -> str:
    """What runs on the host: the shared functions, then the step's own libraries, then the step."""
    return "\n".join(read_script(part) for part in ("lib/common.sh", *libs, script))


def step_command(script: str, env: Mapping[str, str], libs: Sequence[str] = ()) -> str:
    """The command line of a step: `sudo env K=V... bash -c <script> <name>` (no secret in it)."""
    words = ["sudo", "env", f"STEP_NAME={shlex.quote(script)}"]
    words += [f"{key}={shlex.quote(value)}" for key, value in sorted(env.items())]
    words += ["bash", "-c", shlex.quote(step_script(script, libs)), shlex.quote(script)]
    return " ".join(words)


def _command_text(script: str, env: Mapping[str, pulumi.Input[str]], libs: Sequence[str]) -> pulumi.Output[str]:
    # Output.all() of nothing resolves to a list, not a dict: a step without parameters is plain text.
    if not env:
        return pulumi.Output.from_input(step_command(script, {}, libs))
    return pulumi.Output.all(**env).apply(lambda values: step_command(script, values, libs))


def remote_step(
    name: str,
    *,
    host: pulumi.Input[str],
    private_key: pulumi.Input[str],
    script: str,
    env: Mapping[str, pulumi.Input[str]] | None = None,
    stdin: pulumi.Input[str] | None = None,
    triggers: Sequence[Any] = (),
    libs: Sequence[str] = (),
    delete_script: str | None = None,
    delete_env: Mapping[str, pulumi.Input[str]] | None = None,
    opts: pulumi.ResourceOptions,
) -> command.remote.Command:
    """Run userdata/<script> on ``host`` as root; re-run when the script, env or triggers change.

    ``libs`` are userdata/ files sent between common.sh and the step. ``delete_script`` (with
    ``delete_env``) runs when the step is removed or replaced. pulumi-command runs the old state's
    `delete` on replacement (provider/pkg/provider/remote/commandController.go), so a step with a
    delete keeps its script out of ``triggers``: editing the script then updates the step in place
    (the new `create` runs) instead of replacing it, which would run the old `delete`.
    """
    create = _command_text(script, env or {}, libs)
    delete = _command_text(delete_script, delete_env or {}, libs) if delete_script else None
    script_digest = hashlib.sha256(step_script(script, libs).encode()).hexdigest()
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
        delete=delete,
        stdin=stdin,
        triggers=list(triggers) if delete_script else [script_digest, *triggers],
        # Progress goes to stderr and is shown live; stdout (a value a step reads back, e.g. a
        # token) is kept out of the engine's log.
        logging=command.remote.Logging.STDERR,
        # pulumi-command would otherwise send the previous run's stdout and stderr as SSH `env`
        # requests (PULUMI_COMMAND_STDOUT/STDERR, remote/commandOutputs.go), which Debian's sshd
        # refuses (AcceptEnv LANG LC_*): a warning on every re-run, and no step reads them.
        add_previous_output_in_env=False,
        opts=opts,
    )


def operator_ssh_key_step(
    name: str,
    config: StackConfig,
    ssh: SshAccess,
    *,
    host: pulumi.Input[str],
    instance_id: pulumi.Input[str],
    opts: pulumi.ResourceOptions | None = None,
) -> command.remote.Command:
    """Keep the operator's key (operatorSshPublicKey) in the login user's authorized_keys, no reboot.

    cloud-init adds it at first boot only; this step adds a new key, removes the one it added
    before, and never touches other keys (userdata/hosts/operator-ssh-key.sh). Cluster nodes do
    the same in their material step (userdata/cluster/node-config.sh).
    """
    return remote_step(
        name,
        host=host,
        private_key=ssh.private_key_openssh,
        script="hosts/operator-ssh-key.sh",
        libs=["lib/operator-key.sh"],
        env={"SSH_USER": SSH_USER, "OPERATOR_SSH_PUBLIC_KEY": config.operator_ssh_public_key or ""},
        triggers=[instance_id],
        opts=opts or pulumi.ResourceOptions(),
    )
