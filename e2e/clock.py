"""Clocks: Unix time in whole seconds, as the relay's policy (SPEC.md §10.3), its request
authentication (§10.7) and the clients that sign requests read it.

:func:`system_clock` is the wall clock; :class:`ManualClock` moves only when told to (tests,
the demo and benches give the same one to the relay service and to the clients that sign
requests for it, so a 24 h window passes in an instant and authentication still agrees).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "system_clock", "ManualClock"]

#: A function returning Unix time in whole seconds.
Clock = Callable[[], int]


def system_clock() -> int:
    """The wall clock, in whole Unix seconds."""
    return int(time.time())


class ManualClock:
    """A clock that moves only when told to (starts at 2026-01-01 00:00 UTC by default)."""

    def __init__(self, start: int = 1_767_225_600) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: int) -> None:
        self.now += seconds
