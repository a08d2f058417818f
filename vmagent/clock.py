"""Time as an injected dependency, so loops and backoffs can run on a fake clock in tests."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """What vmagent needs of time: wall time, a monotonic reading and a way to wait."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock:
    """A clock that only moves when told to; ``sleep`` advances it instantly."""

    def __init__(self, start: float = 1_700_000_000.0):
        self._now = float(start)
        self._mono = 0.0
        self.sleeps: list = []

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._mono += seconds
