"""Shared fixtures: run the real program under Pulumi mocks for a stack, as the CLI would.

``run_stack("dev", workerCount=3)`` returns a ``ProgramRun`` (see tools/harness.py): every
registration with its inputs and options, and the resolved stack outputs with their secretness.
Every stack needs the admin CIDRs a user sets with `pulumi config set`; ``ADMIN`` stands for them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from tools.harness import ProgramRun, run_fixture_stack

ADMIN = {"adminCidrs": ["203.0.113.7/32"]}


@pytest.fixture
def run_stack() -> Callable[..., ProgramRun]:
    def run(stack: str = "dev", preview: bool = False, **overrides: Any) -> ProgramRun:
        return run_fixture_stack(stack, {**ADMIN, **overrides}, preview=preview)

    return run


@pytest.fixture(scope="session")
def dev() -> ProgramRun:
    """The dev stack as a user deploys it (admin CIDRs set). Shared: tests must not mutate it."""
    return run_fixture_stack("dev", ADMIN)


@pytest.fixture(scope="session")
def prod() -> ProgramRun:
    return run_fixture_stack("prod", ADMIN)


def system_tool(name: str, install: str) -> str:
    """Path of a validator installed from Debian (.ci/run installs it); skip locally, fail in CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed ({install})"
        if os.environ.get("CI"):
            pytest.fail(message + ": .ci/run must install it")
        pytest.skip(message)
    return path
