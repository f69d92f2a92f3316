"""A policy case: realistic resources that must be stopped, and the compliant version that must pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tools.policy_runner import Resource


@dataclass(frozen=True)
class Case:
    policy: str
    id: str
    bad: Sequence[Resource]  # must raise a mandatory violation of ``policy`` ...
    expect: str  # ... whose message contains this
    good: Sequence[Resource]  # the compliant version: passes the whole pack
    config: dict[str, Any] = field(default_factory=dict)  # policy pack config for both

    @property
    def test_id(self) -> str:
        return f"{self.policy}:{self.id}"
