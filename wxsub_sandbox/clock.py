"""Clocks for the sandbox: wall time, or a manual one tests move forward by hand."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "ManualClock", "system_clock"]

Clock = Callable[[], float]  # seconds since the epoch


def system_clock() -> float:
    return time.time()


class ManualClock:
    """A clock that only moves when told to (token expiry and quota windows in no time)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
