"""Job masonry: which waiting payloads to start now on the VM's free cores and memory.

A policy is any object with a ``name`` and ``decide(view: PoolView) -> list[str]`` returning the ids
of waiting payloads to start now; together they must fit the free cores and memory. Policies are
plugins in the entry point group ``vmagent.masonry_policies``; the slot manager calls ``decide`` on
every event (a payload finished, a payload arrived) and still checks each start against its
allocator. ``waiting`` is in priority order; a whole-node payload has ``cores == total_cores``.

Built-ins: ``greedy`` (first fit, as DIRAC's PoolComputingElement), ``fifo`` (strict order) and
``backfill`` (the default): it reserves cores for the first payload that does not fit, starts others
only where they do not delay that reservation, treats memory as a second dimension, and near the
VM's shutdown starts only what is likely to finish, the longest of those first. ``RuntimeLearner`` turns
finished payloads into estimates and into the spread of plausible runtimes behind them.
"""

from __future__ import annotations

import bisect
import statistics
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Deque, Dict, List, Optional, Tuple


@dataclass(frozen=True)
class RunningPayload:
    """A started payload. ``runtime_spread``: its plausible runtimes as now known, ascending (may be empty)."""

    id: str
    cores: int
    memory_mb: int
    started_at: float
    estimated_end: float
    runtime_spread: Tuple[float, ...] = ()


@dataclass(frozen=True)
class WaitingPayload:
    """A payload that could start. ``runtime_spread``: plausible runtimes, ascending (may be empty)."""

    id: str
    cores: int
    memory_mb: int
    estimated_runtime: float
    kind: str = ""
    runtime_spread: Tuple[float, ...] = ()


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


Shadow = Tuple[
    float, int, int
]  # (when the reserved payload can start, spare cores, spare memory then)


class Backfill:
    """Reserve for the first payload that does not fit; backfill only what will not delay it.

    Each waiting payload gets a chance of finishing before the VM's shutdown: the share of its
    ``runtime_spread`` that fits the time left, or, without a spread, whether its estimate plus a
    margin (``margin_fraction`` of it, at least ``margin_seconds``) fits. Payloads at least
    ``confident`` likely to finish are planned in priority order with the reservation; then, on
    cores still free, those at least ``hopeful`` likely, the likeliest first (near the end an idle
    core finishes nothing, a payload that probably finishes usually does).

    A running payload with a ``runtime_spread`` is expected to end at the ``running_quantile`` of
    the runtimes in it still possible after the time it has run: the end moves as the payload runs
    and as finished payloads teach the learner, where an end fixed at its start goes stale. One that
    has outrun every plausible runtime, or without a spread its estimated end, is assumed to need a
    further ``overrun_fraction`` of the time it has run so far.

    The end game begins when the time left is under ``end_game`` times the median estimate of the
    waiting payloads (0 turns it off): the likely payloads then go longest first and nothing is
    reserved, so that the short ones are still there for the last minutes, when nothing else fits
    (taken first, they leave a queue of payloads too long to finish and idle cores at the end).
    """

    name = "backfill"

    def __init__(
        self,
        margin_fraction: float = 0.1,
        margin_seconds: float = 60.0,
        confident: float = 0.9,
        hopeful: float = 0.3,
        overrun_fraction: float = 0.25,
        end_game: float = 1.0,
        running_quantile: float = 0.9,
    ) -> None:
        self.margin_fraction = margin_fraction
        self.margin_seconds = margin_seconds
        self.confident = confident
        self.hopeful = hopeful
        self.overrun_fraction = overrun_fraction
        self.end_game = end_game
        self.running_quantile = running_quantile

    def decide(self, view: PoolView) -> List[str]:
        cores, memory, chosen = view.free_cores, view.free_memory_mb, []
        ends = [(self.expected_end(view.now, r), r.cores, r.memory_mb) for r in view.running]
        shadow: Optional[Shadow] = None
        unsure: List[Tuple[float, int, WaitingPayload]] = []
        end_game = self.in_end_game(view)

        def start(payload: WaitingPayload) -> bool:
            """Start ``payload`` if it fits and does not delay the reservation; whether it fitted."""
            nonlocal cores, memory, shadow
            if not _fits(payload, cores, memory):
                return False
            shadow, allowed = self._backfills(view.now + payload.estimated_runtime, payload, shadow)
            if allowed:
                chosen.append(payload.id)
                cores, memory = cores - payload.cores, memory - payload.memory_mb
                ends.append(
                    (view.now + payload.estimated_runtime, payload.cores, payload.memory_mb)
                )
            return True

        order = (
            sorted(view.waiting, key=lambda p: -p.estimated_runtime) if end_game else view.waiting
        )
        for rank, payload in enumerate(order):
            chance = self.finish_chance(view, payload)
            if chance < self.confident:
                if chance >= self.hopeful:
                    unsure.append((chance, rank, payload))
            elif not start(payload) and shadow is None and not end_game:
                shadow = self._reserve(payload, cores, memory, ends, view.now)
        for _, _, payload in sorted(unsure, key=lambda found: (-found[0], found[1])):
            start(payload)
        return chosen

    def in_end_game(self, view: PoolView) -> bool:
        """Whether the time left is under ``end_game`` times the waiting payloads' median estimate."""
        if view.shutdown_at is None or not view.waiting or not self.end_game:
            return False
        typical = statistics.median(p.estimated_runtime for p in view.waiting)
        return view.shutdown_at - view.now < self.end_game * typical

    def finish_chance(self, view: PoolView, payload: WaitingPayload) -> float:
        """How likely ``payload``, started now, ends before the VM's shutdown (1.0 without one)."""
        if view.shutdown_at is None:
            return 1.0
        left = view.shutdown_at - view.now
        if payload.runtime_spread:
            return bisect.bisect_right(payload.runtime_spread, left) / len(payload.runtime_spread)
        margin = max(self.margin_seconds, self.margin_fraction * payload.estimated_runtime)
        return 1.0 if payload.estimated_runtime + margin <= left else 0.0

    def expected_end(self, now: float, running: RunningPayload) -> float:
        """When ``running`` is expected to end, knowing it has not ended by ``now``."""
        elapsed = now - running.started_at
        if running.runtime_spread:
            spread = running.runtime_spread
            first = bisect.bisect_right(
                spread, elapsed
            )  # spread[first:]: longer than its run so far
            still = len(spread) - first
            if still:
                return (
                    running.started_at
                    + spread[first + min(still - 1, int(self.running_quantile * still))]
                )
        elif running.estimated_end >= now:
            return running.estimated_end
        return now + self.overrun_fraction * elapsed

    @staticmethod
    def _backfills(
        end: float, payload: WaitingPayload, shadow: Optional[Shadow]
    ) -> Tuple[Optional[Shadow], bool]:
        """Whether ``payload`` may start without delaying the reservation, and the reservation after it."""
        if shadow is None or end <= shadow[0]:
            return (
                shadow,
                True,
            )  # nothing reserved, or it ends before the reserved payload needs its cores
        if payload.cores <= shadow[1] and payload.memory_mb <= shadow[2]:
            return (shadow[0], shadow[1] - payload.cores, shadow[2] - payload.memory_mb), True
        return shadow, False

    @staticmethod
    def _reserve(
        payload: WaitingPayload,
        cores: int,
        memory: int,
        ends: List[Tuple[float, int, int]],
        now: float,
    ) -> Shadow:
        """When ``payload`` could start as running payloads end, and what is spare at that time."""
        when = now
        for end, freed_cores, freed_memory in sorted(ends):
            if _fits(payload, cores, memory):
                break
            when, cores, memory = end, cores + freed_cores, memory + freed_memory
        return when, cores - payload.cores, memory - payload.memory_mb


class RuntimeLearner:
    """Runtime estimates from finished payloads of the same kind (declared estimates are often poor).

    With a declared runtime, the observed ratios (real / declared) of the kind's last ``window``
    finished payloads scale it: the estimate uses the ``quantile`` ratio (a little pessimism protects
    reservations), the spread every ratio. Without one, the kind's observed runtimes stand in.
    """

    def __init__(
        self, default_runtime: float = 3600.0, window: int = 50, quantile: float = 0.8
    ) -> None:
        self.default_runtime = default_runtime
        self.quantile = quantile
        self._ratios: Dict[str, Deque[float]] = defaultdict(lambda: deque(maxlen=window))
        self._runtimes: Dict[str, Deque[float]] = defaultdict(lambda: deque(maxlen=window))
        # each kind's samples in order, sorted once per finished payload rather than per decision
        self._ordered: Dict[Tuple[str, str], List[float]] = {}

    def observe(self, kind: str, declared: Optional[float], runtime: float) -> None:
        self._runtimes[kind].append(runtime)
        if declared:
            self._ratios[kind].append(runtime / declared)
        self._ordered.pop((kind, "ratios"), None)
        self._ordered.pop((kind, "runtimes"), None)

    def estimate(self, kind: str, declared: Optional[float]) -> float:
        ratios = self._sorted(kind, "ratios") if declared else []
        if declared and ratios:
            return declared * ratios[min(len(ratios) - 1, int(self.quantile * len(ratios)))]
        runtimes = self._sorted(kind, "runtimes")
        if runtimes:
            return statistics.median(runtimes)
        return declared or self.default_runtime

    def spread(self, kind: str, declared: Optional[float]) -> Tuple[float, ...]:
        """Plausible runtimes, ascending; empty until a payload of this kind has finished."""
        ratios = self._sorted(kind, "ratios") if declared else []
        if declared and ratios:
            return tuple(declared * ratio for ratio in ratios)  # declared > 0: the order holds
        return tuple(self._sorted(kind, "runtimes"))

    def _sorted(self, kind: str, samples: str) -> List[float]:
        key = (kind, samples)
        if key not in self._ordered:
            found = (self._ratios if samples == "ratios" else self._runtimes).get(kind, ())
            self._ordered[key] = sorted(found)
        return self._ordered[key]
