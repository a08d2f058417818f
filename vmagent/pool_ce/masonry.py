"""Job masonry: which waiting payloads to start now on the VM's free cores and memory.

A policy is any object with a ``name`` and ``decide(view: PoolView) -> list[str]`` returning the ids
of waiting payloads to start now; together they must fit the free cores and memory. Policies are
plugins in the entry point group ``vmagent.masonry_policies``; the slot manager calls ``decide`` on
every event (a payload finished, a payload arrived) and still checks each start against its
allocator. ``waiting`` is in priority order; a whole-node payload has ``cores == total_cores``.

Built-ins: ``greedy`` (first fit, as DIRAC's PoolComputingElement), ``fifo`` (strict order) and
``backfill`` (the default): it reserves cores for the first payload that does not fit, starts others
only where they do not delay that reservation, keeps a safety margin before the VM's shutdown, and
treats memory as a second dimension. ``RuntimeLearner`` turns finished payloads into estimates.
"""

from __future__ import annotations

import statistics
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Deque, Dict, List, Optional, Tuple


@dataclass(frozen=True)
class RunningPayload:
    id: str
    cores: int
    memory_mb: int
    started_at: float
    estimated_end: float


@dataclass(frozen=True)
class WaitingPayload:
    id: str
    cores: int
    memory_mb: int
    estimated_runtime: float
    queued_at: float
    kind: str = ""


@dataclass(frozen=True)
class PoolView:
    now: float
    shutdown_at: Optional[float]
    total_cores: int
    total_memory_mb: int
    free_cores: int
    free_memory_mb: int
    running: Tuple[RunningPayload, ...]
    waiting: Tuple[WaitingPayload, ...]


def _fits(payload: WaitingPayload, cores: int, memory: int) -> bool:
    return payload.cores <= cores and payload.memory_mb <= memory


class Greedy:
    """First fit in priority order, whatever it delays (DIRAC PoolComputingElement's behaviour)."""

    name = "greedy"

    def decide(self, view: PoolView) -> List[str]:
        cores, memory, chosen = view.free_cores, view.free_memory_mb, []
        for payload in view.waiting:
            if _fits(payload, cores, memory):
                chosen.append(payload.id)
                cores, memory = cores - payload.cores, memory - payload.memory_mb
        return chosen


class Fifo:
    """Strict order: stop at the first payload that does not fit."""

    name = "fifo"

    def decide(self, view: PoolView) -> List[str]:
        cores, memory, chosen = view.free_cores, view.free_memory_mb, []
        for payload in view.waiting:
            if not _fits(payload, cores, memory):
                break
            chosen.append(payload.id)
            cores, memory = cores - payload.cores, memory - payload.memory_mb
        return chosen


class Backfill:
    """Reserve for the first payload that does not fit; backfill only what will not delay it."""

    name = "backfill"

    def __init__(self, margin_fraction: float = 0.1, margin_seconds: float = 60.0) -> None:
        self.margin_fraction = margin_fraction
        self.margin_seconds = margin_seconds

    def decide(self, view: PoolView) -> List[str]:
        cores, memory, chosen = view.free_cores, view.free_memory_mb, []
        ends = [(r.estimated_end, r.cores, r.memory_mb) for r in view.running]
        shadow: Optional[Tuple[float, int, int]] = None  # (time, spare cores, spare memory) at the reservation
        for payload in view.waiting:
            end = view.now + payload.estimated_runtime
            if not self._finishes(view, payload, end):
                continue
            if _fits(payload, cores, memory):
                if shadow is None:
                    pass
                elif end <= shadow[0]:
                    pass  # ends before the reserved payload needs its cores
                elif payload.cores <= shadow[1] and payload.memory_mb <= shadow[2]:
                    shadow = (shadow[0], shadow[1] - payload.cores, shadow[2] - payload.memory_mb)
                else:
                    continue
                chosen.append(payload.id)
                cores, memory = cores - payload.cores, memory - payload.memory_mb
                ends.append((end, payload.cores, payload.memory_mb))
            elif shadow is None:
                shadow = self._reserve(payload, cores, memory, ends, view.now)
        return chosen

    def _finishes(self, view: PoolView, payload: WaitingPayload, end: float) -> bool:
        if view.shutdown_at is None:
            return True
        margin = max(self.margin_seconds, self.margin_fraction * payload.estimated_runtime)
        return end + margin <= view.shutdown_at

    @staticmethod
    def _reserve(payload: WaitingPayload, cores: int, memory: int,
                 ends: List[Tuple[float, int, int]], now: float) -> Tuple[float, int, int]:
        """When ``payload`` could start as running payloads end, and what is spare at that time."""
        when = now
        for end, freed_cores, freed_memory in sorted(ends):
            if _fits(payload, cores, memory):
                break
            when, cores, memory = end, cores + freed_cores, memory + freed_memory
        return when, cores - payload.cores, memory - payload.memory_mb


class RuntimeLearner:
    """Runtime estimates from finished payloads of the same kind (declared estimates are often poor)."""

    def __init__(self, default_runtime: float = 3600.0, window: int = 50) -> None:
        self.default_runtime = default_runtime
        self._ratios: Dict[str, Deque[float]] = defaultdict(lambda: deque(maxlen=window))
        self._runtimes: Dict[str, Deque[float]] = defaultdict(lambda: deque(maxlen=window))

    def observe(self, kind: str, declared: Optional[float], runtime: float) -> None:
        self._runtimes[kind].append(runtime)
        if declared:
            self._ratios[kind].append(runtime / declared)

    def estimate(self, kind: str, declared: Optional[float]) -> float:
        if declared and self._ratios.get(kind):
            # the 80th percentile of observed/declared: a little pessimism protects reservations
            ratios = sorted(self._ratios[kind])
            return declared * ratios[min(len(ratios) - 1, int(0.8 * len(ratios)))]
        if self._runtimes.get(kind):
            return statistics.median(self._runtimes[kind])
        return declared or self.default_runtime
