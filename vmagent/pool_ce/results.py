"""What finished: result documents, the counts, and writes that a full disk postpones.

Results survive a full disk: each is kept in memory until ``results.jsonl`` and the source have
taken it, retried at every tick, each kind of failing write logged once.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Dict, List, Optional, Set

from ..clock import Clock
from ..config import Config
from ..core import layout
from ..errors import VmagentError
from . import state
from .masonry import RuntimeLearner
from .slot import Slot

log = logging.getLogger("vmagent.pool")
OUTCOMES = ("done", "failed", "killed", "lost")


class DiskWrites:
    """Writes that may fail for a full disk: each kind logged once when it fails, once when it works."""

    def __init__(self) -> None:
        self.full: Set[str] = set()

    def attempt(self, kind: str, write: Callable[[], Any]) -> bool:
        """Run ``write``; False (logged once per kind) when the disk is full, other errors raised."""
        try:
            write()
        except OSError as exc:
            if not state.disk_full(exc):
                raise
            self.note_full(kind, exc)
            return False
        if kind in self.full:
            self.full.discard(kind)
            log.info("disk space is back: the %s is written again", kind)
        return True

    def note_full(self, kind: str, exc: OSError) -> None:
        if kind not in self.full:
            self.full.add(kind)
            log.error(
                "disk full: cannot write the %s (%s); payloads keep running, retrying at every tick",
                kind,
                exc.strerror or exc,
            )


class Results:
    """Records how each slot ended: results.jsonl, the source's report, counts and the learner."""

    def __init__(
        self,
        config: Config,
        clock: Clock,
        source: Any,
        learner: RuntimeLearner,
        disk: DiskWrites,
    ) -> None:
        self.config = config
        self.clock = clock
        self.source = source
        self.learner = learner
        self.disk = disk
        self.counts: Dict[str, int] = {outcome: 0 for outcome in OUTCOMES}
        self.last_started_at: Optional[float] = None
        self.last_finished_at: Optional[float] = None
        self.unwritten: List[Dict[str, Any]] = []  # not in results.jsonl yet (disk full)
        self.unreported: List[Dict[str, Any]] = []  # not taken by the source yet (disk full)

    def record(
        self,
        slot: Slot,
        outcome: str,
        code: Optional[int],
        signal_number: Optional[int],
        *,
        cpu: Optional[float] = None,
        rss: Optional[int] = None,
        reason: Optional[str] = None,
    ) -> None:
        now = self.clock.time()
        payload = slot.payload
        wall = max(0.0, now - slot.started_at)
        result = {
            "id": slot.id,
            "outcome": outcome,
            "exit_code": code,
            "signal": signal_number,
            "cores": slot.cores,
            "memory_mb": slot.memory_mb,
            "started_at": slot.started_at,
            "finished_at": now,
            "wall_seconds": round(wall, 3),
            "cpu_seconds": cpu,
            "max_rss_bytes": rss,
            "output": slot.workdir,
            "reason": reason,
        }
        if outcome == "done":
            self.learner.observe(payload["kind"], payload["wall_estimate_seconds"], wall)
        self.counts[outcome] += 1
        self.last_finished_at = now
        self.unwritten.append(result)
        self.unreported.append(result)
        self.flush()
        log.info("%s %s after %.1f s%s", slot.id, outcome, wall, f" ({reason})" if reason else "")

    def waiting(self) -> bool:
        """Results wait for disk space (a slot manager with results waiting does not leave idle)."""
        return bool(self.unwritten or self.unreported)

    def flush(self) -> None:
        """Write what results.jsonl and the source have not taken yet, in order, until the disk is full."""
        while self.unwritten:
            result = self.unwritten[0]
            write = functools.partial(state.append_result, self.config, result)
            if not self.disk.attempt("results", write):
                break
            self.unwritten.pop(0)
            state.remove_pidfile(self.config, result["id"])
        while self.unreported:
            result = self.unreported[0]
            try:
                if not self.disk.attempt("report", functools.partial(self.source.report, result)):
                    break
            except VmagentError as exc:
                log.error(
                    "result of %s not reported: %s (kept in %s)",
                    result["id"],
                    exc.message,
                    layout.pool_results(self.config),
                )
            self.unreported.pop(0)

    def left(self) -> List[Dict[str, Any]]:
        """Results not written or not reported yet (logged in full when the slot manager leaves)."""
        found = {id(r): r for r in self.unwritten + self.unreported}
        return list(found.values())
