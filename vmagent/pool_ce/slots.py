"""The pool slot manager: pulls payloads, packs them onto cores by a masonry policy, runs them.

Dispatch is event-driven: SIGCHLD wakes the loop, so a freed slot is refilled at once instead of at
the next polling cycle. State goes to an atomic state file after every change; after a restart the
running payloads are re-adopted (same pid and start time) or reported, so nothing is lost or
double-booked.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import select
import signal
from typing import Any, Dict, List, Optional, Set

import psutil

from .. import mjf, plugins
from ..clock import Clock, SystemClock
from ..config import Config, host_path
from ..core import layout
from ..errors import CommandFailed, VmagentError
from . import cgroups, executor, jobfeatures, state
from .allocator import Allocator
from .endings import Endings
from .masonry import PoolView, RunningPayload, RuntimeLearner, WaitingPayload

log = logging.getLogger("vmagent.pool")


class SlotManager(Endings):
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
        self.real_cpus = sorted(os.sched_getaffinity(0))
        cores = self.settings["cores"] or len(self.real_cpus)
        memory = self.settings["memory_mb"] or max(
            1, psutil.virtual_memory().total // 2**20 - self.settings["memory_reserve_mb"]
        )
        self.allocator = Allocator(range(cores), int(memory))
        self.mode = self.settings["mode"]
        if self.mode == "pilots":
            from .sources.pilots import PilotsSource

            self.policy = policy or plugins.load(plugins.GROUPS["masonry_policies"], "fifo")()
            self.source = source or PilotsSource(config, self.clock)
        else:
            self.policy = (
                policy
                or plugins.load(plugins.GROUPS["masonry_policies"], self.settings["policy"])()
            )
            self.source = source or plugins.load(
                plugins.GROUPS["payload_sources"], self.settings["source"]
            )(config)
        self.learner = RuntimeLearner(self.settings["default_runtime_seconds"])
        self.running: Dict[str, Dict[str, Any]] = {}
        self.held: Dict[str, Dict[str, Any]] = {}  # taken from the source, not started yet
        self.counts = {"done": 0, "failed": 0, "killed": 0, "lost": 0}
        self.stamps: Dict[str, Optional[float]] = {
            "last_started_at": None,
            "last_finished_at": None,
        }
        self.stopping = False
        self.next_poll = 0.0
        self.scratch = config.path("paths.scratch")
        self.groups: Optional[cgroups.PayloadGroups] = (
            None  # cgroup v2 memory limits, set up by run()
        )
        self.unwritten: List[Dict[str, Any]] = []
        self.unreported: List[Dict[str, Any]] = []
        self.full: Set[str] = set()
        self.state_unsaved = False
        executor.check_accounts(config)  # before anything starts
        self.event_driven = (
            event_driven  # False: find finished payloads only by polling (benchmark baseline)
        )

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
            self.setup_limits()
            self.recover()
            if self.groups:
                self.groups.sweep(set(self.running))
            self.save()
            log.info(
                "slot manager ready: %d cores, %d MB, policy %s, source %s",
                self.allocator.total_cores,
                self.allocator.total_memory_mb,
                self.policy.name,
                self.source.name,
            )
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
            self.save()
            for result in self.results_left():
                log.error(
                    "result not written for lack of disk space: %s",
                    json.dumps(result, sort_keys=True),
                )
        log.info("slot manager done: %s", ", ".join(f"{k} {v}" for k, v in self.counts.items()))
        return 0

    def step(self) -> None:
        """One pass: write what a full disk held back, reap, enforce limits, honour drain, refill."""
        if self.unwritten or self.unreported:
            self.flush_results()
        changed = self.reap()
        changed |= self.enforce_limits()
        if os.path.exists(layout.drain_request(self.config)) and not self.allocator.draining:
            log.info(
                "drain requested: starting nothing new, %d payloads still running",
                len(self.running),
            )
            self.allocator.drain()
            if self.mode == "pilots":  # DIRAC pilots check this file every JobAgent cycle
                from ..core.files import write_atomic

                write_atomic(host_path(self.config.root, "/var/lib/dirac_drain"), "drain\n", 0o644)
            changed = True
        if self.stopping:
            changed |= self.stop_all()
        elif not self.allocator.draining:
            changed |= self.fill(force=changed)
        if changed or self.state_unsaved:
            self.save()

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
            self.allocator.drain()

    def _finished(self) -> bool:
        if self.running:
            return False
        if self.stopping:
            return True
        if self.unwritten or self.unreported:
            return False  # results wait for disk space
        if self.allocator.draining:
            return True
        if self.mode == "pilots":
            return bool(self.source.exhausted())
        return bool(self.settings["exit_when_idle"] and not self.held and not self._offers_left())

    def _offers_left(self) -> bool:
        return bool(self.source.offer(self.capacity(self.shutdown_at())))

    def _timeout(self) -> float:
        now = self.clock.time()
        waits = [max(0.0, self.next_poll - now)]
        for entry in self.running.values():
            if entry.get("popen") is None:
                waits.append(1.0)  # adopted payloads are not our children: no SIGCHLD, poll them
            for key in ("deadline", "kill_at"):
                if entry.get(key):
                    waits.append(max(0.0, entry[key] - now))
        return min(waits + [self.settings["poll_seconds"]])

    # --- filling ----------------------------------------------------------------------------------

    def capacity(self, shutdown: Optional[float]) -> Dict[str, Any]:
        """What the source may offer for, with the VM's ``shutdown`` time (MJF shutdowntime) if known."""
        remaining = int(shutdown - self.clock.time()) if shutdown else 10 * 365 * 86400
        return {
            "free_cores": self.allocator.free_cores,
            "free_memory_mb": self.allocator.free_memory_mb,
            "remaining_seconds": max(0, remaining),
            "total_cores": self.allocator.total_cores,
            "total_memory_mb": self.allocator.total_memory_mb,
        }

    def shutdown_at(self) -> Optional[float]:
        found = mjf.read_features(mjf.machine_dir(self.config), keys=("shutdowntime",)).values
        value = found.get("shutdowntime")
        return float(value) if value is not None else None

    def fill(self, force: bool = False) -> bool:
        now = self.clock.time()
        if not force and now < self.next_poll and not self.held:
            return False
        self.next_poll = now + self.settings["poll_seconds"]
        if self.allocator.free_cores == 0 or self.cpus_unknown():
            return False
        shutdown = self.shutdown_at()  # read once per fill: both the source and the policy see it
        try:
            offers = self.source.offer(self.capacity(shutdown))
        except VmagentError as exc:
            log.warning("payload source %s: %s", self.source.name, exc.message)
            offers = []
        candidates = dict(self.held)
        for payload in offers:
            if payload["id"] not in self.running:
                candidates.setdefault(payload["id"], payload)
                if getattr(self.source, "leased", False):
                    self.held[payload["id"]] = payload  # leased to us: must not be forgotten
        if not candidates:
            return bool(offers)
        started = False
        for payload_id in self.policy.decide(self.view(candidates, now, shutdown)):
            started |= self.launch(candidates[payload_id])
        return started or bool(offers)

    def view(
        self, candidates: Dict[str, Dict[str, Any]], now: float, shutdown: Optional[float]
    ) -> PoolView:
        total = self.allocator.total_cores
        learner = self.learner
        running = tuple(
            RunningPayload(
                pid,
                e["cores"],
                e["memory_mb"],
                e["started_at"],
                e["estimated_end"],
                learner.spread(e["payload"]["kind"], e["payload"]["wall_estimate_seconds"]),
            )
            for pid, e in self.running.items()
        )
        waiting = tuple(
            WaitingPayload(
                p["id"],
                total if p["whole_node"] else min(p["cores"], total),
                p["memory_mb"],
                learner.estimate(p["kind"], p["wall_estimate_seconds"]),
                p.get("_queued_at", now),
                p["kind"],
                learner.spread(p["kind"], p["wall_estimate_seconds"]),
            )
            for p in sorted(candidates.values(), key=lambda p: -p["priority"])
        )
        return PoolView(
            now,
            shutdown,
            total,
            self.allocator.total_memory_mb,
            self.allocator.free_cores,
            self.allocator.free_memory_mb,
            running,
            waiting,
        )

    def launch(self, payload: Dict[str, Any]) -> bool:
        total = self.allocator.total_cores
        cores = total if payload["whole_node"] else min(payload["cores"], total)
        if not self.allocator.fits(cores, payload["memory_mb"]):
            return False
        if payload["id"] not in self.held and not self.source.claim(payload):
            return False
        self.held.pop(payload["id"], None)
        slots = self.allocator.allocate(payload["id"], cores, payload["memory_mb"])
        cpus = sorted({self.real_cpus[s % len(self.real_cpus)] for s in slots})
        now = self.clock.time()
        workdir = os.path.join(self.scratch, "payloads", payload["id"])
        try:
            launched = self._start(payload, cores, cpus, workdir, now)
        except (
            OSError
        ) as exc:  # a full disk (job features, work directory): held until there is space
            if not state.disk_full(exc):
                raise
            self.note_disk_full("payload's files", exc)
            self._unwind(payload["id"])
            self.held[payload["id"]] = payload
            return False
        except VmagentError as exc:
            self._unwind(payload["id"])
            self.finish_entry(
                {
                    "payload": payload,
                    "cores": cores,
                    "memory_mb": payload["memory_mb"],
                    "started_at": now,
                    "workdir": workdir,
                },
                "failed",
                None,
                None,
                reason=exc.message,
            )
            return True
        estimate = self.learner.estimate(payload["kind"], payload["wall_estimate_seconds"])
        limit_s = payload["wall_limit_seconds"]
        self.running[payload["id"]] = {
            "payload": payload,
            "cores": cores,
            "slots": list(slots),
            "cpus": cpus,
            "memory_mb": payload["memory_mb"],
            "pid": launched.pid,
            "pgid": launched.pid,
            "started_at": now,
            "estimated_end": now + estimate,
            "workdir": workdir,
            "popen": launched.popen,
            "create_time": executor.create_time(launched.pid),
            "deadline": now + limit_s if limit_s else None,
            "spawn_rss": launched.spawn_rss,
        }
        entry = {k: v for k, v in self.running[payload["id"]].items() if k != "popen"}
        self.disk_write(
            "pid file",
            functools.partial(state.write_pidfile, self.config, dict(entry, id=payload["id"])),
        )
        self.stamps["last_started_at"] = now
        log.info(
            "started %s on CPUs %s (%d cores, %d MB), pid %d",
            payload["id"],
            cpus,
            cores,
            payload["memory_mb"],
            launched.pid,
        )
        return True

    def _start(
        self, payload: Dict[str, Any], cores: int, cpus: List[int], workdir: str, now: float
    ) -> executor.Launched:
        features = jobfeatures.write(
            self.config,
            payload,
            cores,
            self.allocator.total_cores,
            self.settings["wall_grace_seconds"],
            now,
        )
        env = executor.payload_env(
            os.environ, payload, cpus, features, mjf.machine_dir(self.config), workdir
        )
        limit = payload["memory_mb"] if self.settings["memory_limit"] != "none" else None
        if payload["kind"] == "pilot" and not self.groups:
            limit = None  # RLIMIT_AS would apply to each of a pilot's processes, not to the pilot
        user = payload.get("_user") or self.settings["payload_user"]
        return executor.start(
            payload, cpus, workdir, env, limit, cgroup=self._group(payload["id"], limit), user=user
        )

    def _unwind(self, payload_id: str) -> None:
        """Give back what a payload that did not start was given."""
        if self.groups:
            self.groups.remove(payload_id)
        self.allocator.release(payload_id)

    def _group(self, payload_id: str, memory_mb: Optional[int]) -> Optional[str]:
        """Every payload gets its own group where there are groups, limited or not: its CPU time and peak
        memory are counted there, leftovers killed with it, and the slot manager's unit stays clean."""
        if not self.groups:
            return None
        try:
            return self.groups.create(payload_id, memory_mb or None)
        except OSError as exc:
            raise CommandFailed(f"cannot set up the memory group of {payload_id}: {exc}") from None

    def setup_limits(self) -> None:
        """cgroup v2 memory limits where the slot manager may manage its group (``auto``, ``cgroup``)."""
        mode = self.settings["memory_limit"]
        if mode in ("auto", "cgroup"):
            try:
                self.groups = cgroups.PayloadGroups.setup(
                    self.config.section("instance")["id"] or os.uname().nodename
                )
            except cgroups.CgroupUnavailable as exc:
                if mode == "cgroup":
                    raise
                log.info(
                    "memory limits: RLIMIT_AS, since cgroup v2 is not usable (%s)", exc.message
                )
            else:
                log.info("memory limits: cgroup v2 below %s", self.groups.base)

    # --- state ------------------------------------------------------------------------------------

    def save(self) -> None:
        """Write the state file; on a full disk, again at the next tick (``state_unsaved``)."""
        running = [
            {k: v for k, v in e.items() if k != "popen"} | {"id": pid}
            for pid, e in self.running.items()
        ]
        document = {
            "pid": os.getpid(),
            "mode": self.mode,
            "updated": self.clock.time(),
            "draining": self.allocator.draining,
            "total_cores": self.allocator.total_cores,
            "free_cores": self.allocator.free_cores,
            "total_memory_mb": self.allocator.total_memory_mb,
            "free_memory_mb": self.allocator.free_memory_mb,
            "running": running,
            "held": list(self.held.values()),
            "counts": dict(self.counts),
            "vacuum_codes": list(getattr(self.source, "vacuum_codes", [])),
            "black_hole": bool(getattr(self.source, "black_hole", False)),
            **self.stamps,
        }
        self.state_unsaved = not self.disk_write(
            "state", functools.partial(state.save, self.config, document)
        )
