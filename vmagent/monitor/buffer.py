"""What an endpoint missed during an outage: a bounded buffer of heartbeats and a lossless summary.

The last ``size`` undelivered heartbeats are kept (for the log and for inspection); the summary
sent on reconnection (the heartbeat schema's ``missed`` object) is kept as running aggregates, so
it stays complete however long the outage and however small the buffer.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, Dict, Mapping, Optional


class MissedHeartbeats:
    """Heartbeats one endpoint did not receive, since it last answered."""

    def __init__(self, size: int) -> None:
        self.kept: Deque[Mapping[str, Any]] = deque(maxlen=size)
        self.count = 0
        self.first: Optional[float] = None
        self.last: Optional[float] = None
        self.max_load: Optional[float] = None
        self.min_free_cores: Optional[int] = None

    def __len__(self) -> int:
        return self.count

    def add(self, heartbeat: Mapping[str, Any]) -> None:
        """Remember one undelivered heartbeat."""
        self.kept.append(heartbeat)
        self.count += 1
        when = float(heartbeat["time"])
        self.first = when if self.first is None else min(self.first, when)
        self.last = when if self.last is None else max(self.last, when)
        load = heartbeat.get("load")
        if load:
            self.max_load = max(float(load[0]), self.max_load or 0.0)
        free = (heartbeat.get("slots") or {}).get("free_cores")
        if isinstance(free, int):
            self.min_free_cores = (
                free if self.min_free_cores is None else min(free, self.min_free_cores)
            )

    def summary(self) -> Optional[Dict[str, Any]]:
        """The ``missed`` object of the next heartbeat, or None when nothing was missed."""
        if not self.count:
            return None
        found: Dict[str, Any] = {"count": self.count, "first": self.first, "last": self.last}
        if self.max_load is not None:
            found["max_load"] = self.max_load
        if self.min_free_cores is not None:
            found["min_free_cores"] = self.min_free_cores
        return found

    def clear(self) -> None:
        """The endpoint has the summary: start afresh."""
        self.kept.clear()
        self.count = 0
        self.first = self.last = self.max_load = None
        self.min_free_cores = None
