"""CI policies: no runner next to GitLab. Each row is the way a runner came (or could come) back to the host."""

from __future__ import annotations

import pytest

from policy.gitops_policies.runners import runner_start_in
from policy.tests import resources as r
from policy.tests.cases import Case
from tools.harness import ROOT, run_fixture_stack
from tools.policy_runner import Resource, analyze_program, secret, stack_config_file

GITLAB_EIP = "198.51.100.20"
MANAGER_IP = "198.51.100.44"
REGISTER_RUNNER = (
    "sudo env STEP_NAME=gitlab/register-runner.sh GITLAB_RUNNER_IMAGE=gitlab/gitlab-runner:alpine-v19.4.1 bash -c '"
    'timeout 300 docker run --rm --env CI_SERVER_TOKEN --volume "${CONFIG}:/etc/gitlab-runner" '
    '"$GITLAB_RUNNER_IMAGE" register --non-interactive --executor docker --docker-privileged\n'
    "ExecStart=/usr/bin/docker run --rm --name gitlab-runner ${GITLAB_RUNNER_IMAGE}' gitlab/register-runner.sh"
)


def gitlab_host(**patch: object) -> list[Resource]:
    """The GitLab instance, its Elastic IP and their association, as components/gitlab_host.py makes them."""
    host = r.instance("gitlab-host", **patch)
    host.outputs = {**host.inputs, "privateIp": "10.42.3.17", "privateDns": "ip-10-42-3-17.ec2.internal"}
    eip = Resource("aws:ec2/eip:Eip", "gitlab-eip", {"domain": "vpc", "tags": r.tags("gitlab-eip")})
    eip.outputs = {**eip.inputs, "publicIp": GITLAB_EIP, "allocationId": "eipalloc-0a1b2c3d4e5f60718"}
    association = Resource(
        "aws:ec2/eipAssociation:EipAssociation",
        "gitlab-eip-association",
        {"allocationId": "eipalloc-0a1b2c3d4e5f60718", "instanceId": "i-0a1b2c3d4e5f60718"},
        property_dependencies={"allocationId": [eip.urn], "instanceId": [host.urn]},
    )
    return [host, eip, association]


def user_runner(name: str = "runners-runner") -> Resource:
    return Resource(
        "gitlab:index/userRunner:UserRunner",
        name,
        {"runnerType": "instance_type", "untagged": True},
        outputs={"runnerType": "instance_type", "untagged": True, "token": "glrt-t1_Zx8Kq2Lm4Np6Rs8Tv0Wy"},
        additional_secret_outputs=["token"],
    )


def step(
    name: str,
    *,
    host: str,
    create: str,
    connection_from: list[str] | None = None,
    stdin_from: list[str] | None = None,
    create_from: list[str] | None = None,
) -> Resource:
    """A command.remote.Command as components/remote.py registers it (its host by value and by dependency)."""
    inputs = {
        "connection": secret({"host": host, "user": "admin", "privateKey": "<key>"}),
        "create": create,
        "logging": "stderr",
        "triggers": ["i-0a1b2c3d4e5f60718"],
    }
    dependencies = {"connection": connection_from or []}
    if create_from is not None:
        # A token as a step parameter: components/remote.py writes env into the command (`sudo env K=V`).
        inputs["create"] = secret(f"sudo env RUNNER_TOKEN=glrt-t1_Zx8Kq2Lm4Np6Rs8Tv0Wy {create}")
        dependencies["create"] = create_from
    if stdin_from is not None:
        inputs["stdin"] = secret("glrt-t1_Zx8Kq2Lm4Np6Rs8Tv0Wy")
        dependencies["stdin"] = stdin_from
    return Resource(
        "command:remote:Command",
        name,
        inputs,
        outputs={**inputs, "stdout": "", "stderr": ""},
        property_dependencies=dependencies,
        additional_secret_outputs=["connection"],
    )


HOST, EIP_, ASSOCIATION = gitlab_host()
RUNNER = user_runner()
CONFIGURE_ON_MANAGER = step(
    "runners-manager-configure",
    host=MANAGER_IP,
    create="sudo env STEP_NAME=runners/configure-runner.sh bash -c '...' runners/configure-runner.sh",
    stdin_from=[RUNNER.urn],
)
REMOVE_RUNNER = (ROOT / "userdata/gitlab/remove-runner.sh").read_text()

CASES = [
    Case(
        "gitlab-host-runs-no-runner",
        "runner-token-sent-to-the-gitlab-host",
        bad=[
            HOST,
            EIP_,
            ASSOCIATION,
            RUNNER,
            step(
                "gitlab-register-runner",
                host=GITLAB_EIP,
                create="sudo env STEP_NAME=x bash -c '...' x",
                connection_from=[EIP_.urn],
                stdin_from=[RUNNER.urn],
            ),
        ],
        expect="step gitlab-register-runner sends a runner authentication token to the GitLab host",
        # A stack with GitLab resources manages its settings too (gitlab-signup-disabled).
        good=[HOST, EIP_, ASSOCIATION, RUNNER, CONFIGURE_ON_MANAGER, r.application_settings(signup_enabled=False)],
    ),
    Case(
        "gitlab-host-runs-no-runner",
        "runner-token-in-the-command-of-a-gitlab-host-step",
        bad=[
            HOST,
            EIP_,
            ASSOCIATION,
            RUNNER,
            step(
                "gitlab-runner-env",
                host=GITLAB_EIP,
                create="sudo -E bash -c '...' x",
                connection_from=[EIP_.urn],
                create_from=[RUNNER.urn],
            ),
        ],
        expect="step gitlab-runner-env sends a runner authentication token to the GitLab host",
        good=[HOST, EIP_, ASSOCIATION, RUNNER, CONFIGURE_ON_MANAGER, r.application_settings(signup_enabled=False)],
    ),
    Case(
        "gitlab-host-runs-no-runner",
        "runner-package-installed-on-the-gitlab-host",
        bad=[HOST, EIP_, ASSOCIATION, step("gitlab-ci", host=GITLAB_EIP, create="apt-get install -y gitlab-runner")],
        expect="step gitlab-ci registers or starts a runner on the GitLab host ('apt-get install -y gitlab-runner')",
        good=[HOST, EIP_, ASSOCIATION, step("gitlab-remove-runner", host=GITLAB_EIP, create=REMOVE_RUNNER)],
    ),
    Case(
        "gitlab-host-runs-no-runner",
        "runner-registered-and-started-by-a-step",
        # Found by the address alone: the step's connection has no dependency the policy can follow.
        bad=[HOST, EIP_, ASSOCIATION, step("gitlab-ci", host=GITLAB_EIP, create=REGISTER_RUNNER)],
        expect="step gitlab-ci registers or starts a runner on the GitLab host",
        good=[HOST, EIP_, ASSOCIATION, step("gitlab-remove-runner", host=GITLAB_EIP, create=REMOVE_RUNNER)],
    ),
    Case(
        "gitlab-host-runs-no-runner",
        "runner-started-from-user-data",
        bad=gitlab_host(
            userData=r.PUBLIC_USER_DATA.replace(
                "runcmd:\n",
                "runcmd:\n  - [docker, run, -d, --name, gitlab-runner, gitlab/gitlab-runner:alpine-v19.4.1]\n"
                "  - docker run -d --name gitlab-runner -v /var/run/docker.sock:/var/run/docker.sock "
                "gitlab/gitlab-runner:alpine-v19.4.1\n",
            )
        ),
        expect="the user data of GitLab host gitlab-host starts a runner",
        good=gitlab_host(),
    ),
]


@pytest.mark.parametrize(
    "text",
    [
        "gitlab-runner register --non-interactive --url https://gitlab.example.com",
        "docker run -d --name gitlab-runner gitlab/gitlab-runner:alpine-v19.4.1",
        "ExecStart=/usr/bin/gitlab-runner run --working-directory /home/gitlab-runner",
        "  gitlab-runner install --user=gitlab-runner",
        # The package's post-install installs and starts the service by itself.
        "DEBIAN_FRONTEND=noninteractive apt-get -y -q install gitlab-runner=19.4.1-1 gitlab-runner-helper-images",
        "apt install gitlab-runner",
        "dpkg -i /tmp/gitlab-runner_amd64.deb",
        "systemctl enable --now gitlab-runner",
        "systemctl restart gitlab-runner.service",
        "sudo systemctl --no-block start gitlab-runner",
        # The product's own install script, with its wrapper and package array, pointed elsewhere.
        (ROOT / "userdata/runners/install-runner.sh").read_text(),
        "apt_get install -y gitlab-runner",
    ],
)
def test_commands_that_start_a_runner_are_recognised(text: str) -> None:
    assert runner_start_in(text)


@pytest.mark.parametrize(
    "text",
    [
        REMOVE_RUNNER,
        "systemctl disable --now gitlab-runner.service && docker rm --force gitlab-runner",
        "docker image rm --force gitlab/gitlab-runner:alpine-v19.4.1",
        "gitlab-runner fleeting --config /etc/gitlab-runner/config.toml install",
        "apt-get purge -y gitlab-runner",
        "systemctl stop gitlab-runner.service",
        "apt-get install -y curl  # the GitLab host's packages",
        "IMAGES=(gitlab/gitlab-runner-helper registry.example/gitlab-runner.old)",
    ],
)
def test_removing_a_runner_is_not_starting_one(text: str) -> None:
    assert runner_start_in(text) is None


def test_the_program_keeps_ci_off_the_gitlab_host_and_the_old_register_step_is_stopped() -> None:
    """The real dev stack passes; the step earlier versions ran on the GitLab host does not."""
    run = run_fixture_stack("dev", {"adminCidrs": ["203.0.113.7/32"]})
    assert not analyze_program(run, config_file=stack_config_file("dev")).of("gitlab-host-runs-no-runner")
    eip = next(g for g in run.registrations if g.name == "gitlab-eip")
    runner = next(g for g in run.registrations if g.type == "gitlab:index/userRunner:UserRunner")
    old_step = step(
        "gitlab-register-runner",
        host=eip.state["publicIp"],
        create=REGISTER_RUNNER,
        connection_from=[eip.urn],
        stdin_from=[runner.urn],
    )
    report = analyze_program(run, config_file=stack_config_file("dev"), extra=[old_step])
    found = report.of("gitlab-host-runs-no-runner")
    assert {v.resource for v in found} == {"gitlab-register-runner"}
    assert any("sends a runner authentication token" in v.message for v in found)
    assert any("registers or starts a runner" in v.message for v in found)
