"""The program's notion of "today", for what is checked once a day (the cluster's certificates).

A step keyed on the day re-runs on the first `pulumi up` of each day and not again that day. Tests
that run the program twice (tools/plan.py) freeze the day so both runs see the same one.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from contextlib import contextmanager

_frozen: datetime.date | None = None


def today() -> datetime.date:
    """Today in UTC, or the frozen day."""
    return _frozen or datetime.datetime.now(datetime.UTC).date()


@contextmanager
def frozen(day: datetime.date) -> Iterator[None]:
    global _frozen
    previous, _frozen = _frozen, day
    try:
        yield
    finally:
        _frozen = previous
