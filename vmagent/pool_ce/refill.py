"""Filling free cores: ask the source what could run, let the masonry policy choose, start those.

A started payload gets its job features, its environment, its CPUs, its memory limit (a cgroup v2
group where there are groups, else RLIMIT_AS), its account, and a pid file for recovery.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Dict, List, Optional

from .. import mjf, process
from ..clock import Clock
from ..config import Config
from ..errors import CommandFailed, VmagentError
from . import executor, jobfeatures, state
from .masonry import PoolView, RunningPayload, RuntimeLearner, WaitingPayload
from .results import DiskWrites, Results
from .slot import Slot, Table
from .sources import Offer
from .states import SlotState

log = logging.getLogger("vmagent.pool")
NO_SHUTDOWN_SECONDS = 10 * 365 * 86400  # the time left when the VM's shutdown is not known


class Refill:
    """Starts what the policy picks among what the source offers, on the allocator's free cores."""

    def __init__(
        self,
        config: Config,
        table: Table,
        source: Any,
        policy: Any,
        learner: RuntimeLearner,
        results: Results,
        disk: DiskWrites,
        clock: Clock,
    ) -> None:
        self.config = config
        self.settings = config.section("slots")
        self.table = table
        self.source = source
        self.policy = policy
        self.learner = learner
        self.results = results
        self.disk = disk
        self.clock = clock
        self.real_cpus = sorted(os.sched_getaffinity(0))
        self.scratch = config.path("paths.scratch")
        self.next_poll = 0.0
        self.features = jobfeatures.Publisher(config)  # started with the slot manager

    def capacity(self, shutdown: Optional[float]) -> Dict[str, Any]:
        """What the source may offer for, with the VM's ``shutdown`` time (MJF shutdowntime) if known."""
        now = self.clock.time()
        remaining = int(shutdown - now) if shutdown else NO_SHUTDOWN_SECONDS
        allocator = self.table.allocator
        return {
            "free_cores": allocator.free_cores,
            "free_memory_mb": allocator.free_memory_mb,
            "remaining_seconds": max(0, remaining),
            "total_cores": allocator.total_cores,
            "total_memory_mb": allocator.total_memory_mb,
            "now": now,
        }

    def shutdown_at(self) -> Optional[float]:
        found = mjf.read_features(mjf.machine_dir(self.config), keys=("shutdowntime",)).values
        value = found.get("shutdowntime")
        return float(value) if value is not None else None

    def offers_left(self) -> bool:
        return bool(self.source.offer(self.capacity(self.shutdown_at())))

    def fill(self, force: bool = False) -> bool:
        """Start what fits now; whether anything changed (started, or offered and held)."""
        now = self.clock.time()
        held = self.table.held
        if not force and now < self.next_poll and not held:
            return False
        self.next_poll = now + self.settings["poll_seconds"]
        if self.table.allocator.free_cores == 0 or self.table.cpus_unknown():
            return False
        shutdown = self.shutdown_at()  # read once per fill: both the source and the policy see it
        try:
            offers: List[Offer] = self.source.offer(self.capacity(shutdown))
        except VmagentError as exc:
            log.warning("payload source %s: %s", self.source.name, exc.message)
            offers = []
        candidates = dict(held)
        for offer in offers:
            if offer.id not in self.table.running:
                candidates.setdefault(offer.id, offer)
                if getattr(self.source, "leased", False):
                    held[offer.id] = offer  # leased to us: must not be forgotten
        if not candidates:
            return bool(offers)
        started = False
        for payload_id in self.policy.decide(self.view(candidates, now, shutdown)):
            started |= self.launch(candidates[payload_id])
        return started or bool(offers)

    def view(self, candidates: Dict[str, Offer], now: float, shutdown: Optional[float]) -> PoolView:
        total = self.table.allocator.total_cores
        spread = self.learner.spread
        running = tuple(
            RunningPayload(
                slot.id,
                slot.cores,
                slot.memory_mb,
                slot.started_at,
                slot.estimated_end,
                spread(slot.payload["kind"], slot.payload["wall_estimate_seconds"]),
            )
            for slot in self.table.running.values()
        )
        payloads = sorted((o.payload for o in candidates.values()), key=lambda p: -p["priority"])
        waiting = tuple(
            WaitingPayload(
                p["id"],
                self.cores_of(p),
                p["memory_mb"],
                self.learner.estimate(p["kind"], p["wall_estimate_seconds"]),
                p["kind"],
                spread(p["kind"], p["wall_estimate_seconds"]),
            )
            for p in payloads
        )
        allocator = self.table.allocator
        return PoolView(
            now,
            shutdown,
            total,
            allocator.total_memory_mb,
            allocator.free_cores,
            allocator.free_memory_mb,
            running,
            waiting,
        )

    def cores_of(self, payload: Dict[str, Any]) -> int:
        total = self.table.allocator.total_cores
        return total if payload["whole_node"] else min(payload["cores"], total)

    def launch(self, offer: Offer) -> bool:
        """Start ``offer`` if it fits and is ours; whether it changed anything."""
        payload = offer.payload
        cores = self.cores_of(payload)
        allocator = self.table.allocator
        if not allocator.fits(cores, payload["memory_mb"]):
            return False
        if offer.id not in self.table.held and not self.source.claim(offer):
            return False
        self.table.held.pop(offer.id, None)
        now = self.clock.time()
        slots = allocator.allocate(offer.id, cores, payload["memory_mb"])
        slot = Slot(
            offer,
            cores,
            payload["memory_mb"],
            os.path.join(self.scratch, "payloads", offer.id),
            now,
            now + self.learner.estimate(payload["kind"], payload["wall_estimate_seconds"]),
            slots=list(slots),
            cpus=sorted({self.real_cpus[s % len(self.real_cpus)] for s in slots}),
        )
        try:
            self._start(slot)
        except (
            OSError
        ) as exc:  # a full disk (job features, work directory): held until there is space
            if not state.disk_full(exc):
                raise
            self.disk.note_full("payload's files", exc)
            self._unwind(slot)
            self.table.held[offer.id] = offer
            return False
        except VmagentError as exc:
            self._unwind(slot)
            self.results.record(slot, "failed", None, None, reason=exc.message)
            return True
        self.table.running[offer.id] = slot
        write = functools.partial(state.write_pidfile, self.config, slot.entry())
        self.disk.attempt("pid file", write)
        self.results.last_started_at = now
        log.info(
            "started %s on CPUs %s (%d cores, %d MB), pid %d",
            offer.id,
            slot.cpus,
            cores,
            slot.memory_mb,
            slot.pid,
        )
        return True

    def _start(self, slot: Slot) -> None:
        payload = slot.payload
        total = self.table.allocator.total_cores
        grace = self.settings["wall_grace_seconds"]
        jobfeatures.write(
            self.config, payload, slot.cores, total, grace, slot.started_at, self.table.groups
        )
        machine, features = self.features.locations(payload["id"])
        env = executor.payload_env(os.environ, payload, slot.cpus, features, machine, slot.workdir)
        limit = payload["memory_mb"] if self.settings["memory_limit"] != "none" else None
        if payload["kind"] == "pilot" and not self.table.groups:
            limit = None  # RLIMIT_AS would apply to each of a pilot's processes, not to the pilot
        user = slot.offer.user or self.settings["payload_user"]
        group = self._group(slot.id, limit)
        launched = executor.start(
            payload, slot.cpus, slot.workdir, env, limit, cgroup=group, user=user
        )
        slot.popen = launched.popen
        slot.pid = launched.pid
        slot.pgid = launched.pid  # the payload leads its own session
        slot.create_time = process.create_time(launched.pid)
        slot.spawn_rss = launched.spawn_rss
        limit_s = payload["wall_limit_seconds"]
        slot.deadline = slot.started_at + limit_s if limit_s else None
        slot.to(SlotState.RUNNING)

    def _unwind(self, slot: Slot) -> None:
        """Give back what a payload that did not start was given."""
        slot.to(SlotState.ENDED)
        if self.table.groups:
            self.table.groups.remove(slot.id)
        self.table.allocator.release(slot.id)

    def _group(self, payload_id: str, memory_mb: Optional[int]) -> Optional[str]:
        """Every payload gets its own group where there are groups, limited or not: its CPU time and peak
        memory are counted there, leftovers killed with it, and the slot manager's unit stays clean."""
        if not self.table.groups:
            return None
        try:
            return self.table.groups.create(payload_id, memory_mb or None)
        except OSError as exc:
            raise CommandFailed(f"cannot set up the memory group of {payload_id}: {exc}") from None
