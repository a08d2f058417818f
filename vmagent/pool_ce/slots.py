"""The slot manager: the one process that starts, watches and stops payloads on this VM.

Its loop is event-driven: SIGCHLD wakes it, so a freed slot is refilled at once instead of at the
next polling cycle. Each pass obeys requests (drain: start nothing new; stop: stop every payload),
reaps, enforces limits and refills. State goes to an atomic state file after every change; after a
restart the running payloads are re-adopted (same pid and start time) or reported, so nothing is
lost or double-booked. Its parts: ``refill`` (starting), ``reaper`` (ending and stopping),
``results`` (what finished), ``recovery`` (after a restart).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import select
import signal
from typing import Any, Mapping, Optional

import psutil

from .. import plugins
from ..clock import Clock, SystemClock
from ..config import Config
from ..core import capacity, drain, instance, stop
from ..errors import CgroupUnavailable
from . import cgroups, executor, state
from .allocator import Allocator
from .masonry import RuntimeLearner
from .reaper import Reaper
from .recovery import Recovery
from .refill import Refill
from .results import DiskWrites, Results
from .slot import Table

log = logging.getLogger("vmagent.pool")


def source_and_policy(settings: Mapping[str, Any]) -> tuple[str, str]:
    """The payload source and masonry policy configured; ``mode: pilots`` means the pilots source
    in slot order (fifo), whatever ``source`` and ``policy`` say."""
    if settings["mode"] == "pilots":
        return "pilots", "fifo"
    return settings["source"], settings["policy"]


class SlotManager:
    """Runs payloads from one source until drained, stopped, or (``exit_when_idle``) out of work."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Optional[Clock] = None,
        source: Any = None,
        policy: Any = None,
        event_driven: bool = True,
    ):
        self.config = config
        self.settings = config.section("slots")
        self.clock = clock or SystemClock()
        source_name, policy_name = source_and_policy(self.settings)
        self.policy = policy or plugins.load(plugins.GROUPS["masonry_policies"], policy_name)()
        self.source = source or plugins.load(plugins.GROUPS["payload_sources"], source_name)(config)
        self.table = Table(self._allocator())
        learner = RuntimeLearner(self.settings["default_runtime_seconds"])
        self.disk = DiskWrites()
        self.results = Results(config, self.clock, self.source, learner, self.disk)
        grace = self.settings["wall_grace_seconds"]
        self.reaper = Reaper(self.table, self.results, self.clock, grace)
        self.refill = Refill(
            config,
            self.table,
            self.source,
            self.policy,
            learner,
            self.results,
            self.disk,
            self.clock,
        )
        self.stopping: Optional[str] = None  # why every payload is being stopped
        self.state_unsaved = False
        executor.check_accounts(config)  # before anything starts
        # False: find finished payloads only by polling (the benchmark's baseline)
        self.event_driven = event_driven

    def _allocator(self) -> Allocator:
        cores = capacity.cores(self.config)
        memory = self.settings["memory_mb"] or max(
            1, psutil.virtual_memory().total // 2**20 - self.settings["memory_reserve_mb"]
        )
        return Allocator(range(cores), int(memory))

    # --- the loop ---------------------------------------------------------------------------------

    def run(self) -> int:
        lock = state.lock(self.config)  # held until the end: one slot manager per state directory
        try:
            return self._run()
        finally:
            os.close(lock)

    def _run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        previous = signal.set_wakeup_fd(wake_w)
        watched = (signal.SIGCHLD,) * self.event_driven + (signal.SIGTERM, signal.SIGINT)
        handlers = {sig: signal.signal(sig, self._on_signal) for sig in watched}
        try:
            self._start()
            while True:
                self.step()
                if self._finished():
                    break
                ready, _, _ = select.select([wake_r], [], [], self._timeout())
                if ready:
                    os.read(wake_r, 4096)
        finally:
            signal.set_wakeup_fd(previous)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            os.close(wake_r)
            os.close(wake_w)
            self.source.close()
            self.refill.features.close()
            self.save()
            for result in self.results.left():
                log.error(
                    "result not written for lack of disk space: %s",
                    json.dumps(result, sort_keys=True),
                )
        counts = self.results.counts
        log.info("slot manager done: %s", ", ".join(f"{k} {v}" for k, v in counts.items()))
        return 0

    def _start(self) -> None:
        self.setup_limits()
        self.refill.features.start()  # before recovery: re-adopted payloads read features too
        Recovery(self.config, self.table, self.reaper, self.results, self.clock).recover()
        if self.table.groups:
            self.table.groups.sweep(set(self.table.running))
        self.save()
        log.info(
            "slot manager ready: %d cores, %d MB, policy %s, source %s",
            self.table.allocator.total_cores,
            self.table.allocator.total_memory_mb,
            self.policy.name,
            self.source.name,
        )

    def step(self) -> None:
        """One pass: write what a full disk held back, obey requests, reap, enforce limits, refill."""
        if self.results.waiting():
            self.results.flush()
        changed = self._obey_requests()
        changed |= self.reaper.reap()
        if self.stopping:
            self.reaper.stop_all(self.stopping)
        else:
            self.reaper.enforce_limits()
            if not self.table.allocator.draining:
                changed |= self.refill.fill(force=changed)
        if changed or self.state_unsaved:
            self.save()

    def _obey_requests(self) -> bool:
        """A stop request (the monitor halting) stops every payload; a drain starts nothing new."""
        changed = False
        reason = stop.requested(self.config)
        if reason and not self.stopping:
            log.warning(
                "stop requested (%s): stopping %d payloads", reason, len(self.table.running)
            )
            self.stopping = f"stopped on request: {reason}"
            changed = True
        if self.stopping and not self.table.allocator.draining:
            self.table.allocator.drain()
            changed = True
        if drain.requested(self.config) and not self.table.allocator.draining:
            log.info(
                "drain requested: starting nothing new, %d payloads still running",
                len(self.table.running),
            )
            self.table.allocator.drain()
            if hasattr(self.source, "drain"):
                self.source.drain()  # pilots: DIRAC's own drain file
            changed = True
        return changed

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stopping = self.stopping or "slot manager stopped"

    def _finished(self) -> bool:
        if self.table.running:
            return False
        if self.stopping:
            return True
        if self.results.waiting():
            return False  # results wait for disk space
        if self.table.allocator.draining:
            return True
        exhausted = getattr(self.source, "exhausted", None)
        if exhausted is not None and exhausted():
            return True
        if not self.settings["exit_when_idle"] or self.table.held:
            return False
        return not self.refill.offers_left()

    def _timeout(self) -> float:
        now = self.clock.time()
        waits = [max(0.0, self.refill.next_poll - now)]
        for slot in self.table.running.values():
            if slot.popen is None:
                waits.append(1.0)  # adopted payloads are not our children: no SIGCHLD, poll them
            for due in (slot.deadline, slot.kill_at):
                if due is not None:
                    waits.append(max(0.0, due - now))
        return min(waits + [self.settings["poll_seconds"]])

    def setup_limits(self) -> None:
        """cgroup v2 memory limits where the slot manager may manage its group (``auto``, ``cgroup``)."""
        mode = self.settings["memory_limit"]
        if mode not in ("auto", "cgroup"):
            return
        try:
            groups = cgroups.PayloadGroups.setup(instance.instance_id(self.config))
        except CgroupUnavailable as exc:
            if mode == "cgroup":
                raise
            log.info("memory limits: RLIMIT_AS, since cgroup v2 is not usable (%s)", exc.message)
        else:
            self.table.groups = groups
            log.info("memory limits: cgroup v2 below %s", groups.base)

    # --- state ------------------------------------------------------------------------------------

    def save(self) -> None:
        """Write the state file; on a full disk, again at the next tick (``state_unsaved``)."""
        allocator = self.table.allocator
        held = list(self.table.held.values())
        document = {
            "pid": os.getpid(),
            "mode": "pilots" if self.source.name == "pilots" else "pool",
            "source": self.source.name,
            "updated": self.clock.time(),
            "draining": allocator.draining,
            "stopping": self.stopping,
            "total_cores": allocator.total_cores,
            "free_cores": allocator.free_cores,
            "total_memory_mb": allocator.total_memory_mb,
            "free_memory_mb": allocator.free_memory_mb,
            "running": [slot.entry() for slot in self.table.running.values()],
            "held": [offer.payload for offer in held],
            "counts": dict(self.results.counts),
            "vacuum_codes": list(getattr(self.source, "vacuum_codes", [])),
            "black_hole": bool(getattr(self.source, "black_hole", False)),
            "last_started_at": self.results.last_started_at,
            "last_finished_at": self.results.last_finished_at,
        }
        users = {offer.id: offer.user for offer in held if offer.user}
        if users:
            document["held_users"] = users
        write = functools.partial(state.save, self.config, document)
        self.state_unsaved = not self.disk.attempt("state", write)
