"""How running payloads end: reaped, held to their wall limit, stopped (TERM, grace, KILL).

The slot manager is the only process that signals payloads (the monitor asks it, through a stop
request). Stopping is supervisor's: SIGTERM to the payload's process group, ``slots.wall_grace_seconds``
later SIGKILL; driven a step per tick, so that the other payloads are reaped meanwhile.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Optional

from .. import process
from ..clock import Clock
from . import executor
from .results import Results
from .slot import Slot, Table
from .states import SlotState

log = logging.getLogger("vmagent.pool")


class Reaper:
    """Ends slots: reaps children, polls adopted payloads, stops payloads, records each result."""

    def __init__(self, table: Table, results: Results, clock: Clock, grace: float) -> None:
        self.table = table
        self.results = results
        self.clock = clock
        self.grace = grace

    def reap(self) -> bool:
        """Record every payload that has ended since the last look; whether any had."""
        changed = False
        for slot in list(self.table.running.values()):
            if slot.leader_end is not None:
                if not process.group_alive(slot.pgid):  # the rest of its group has gone too
                    self.end(slot, *slot.leader_end)
                    changed = True
            elif slot.popen is not None:
                changed |= self._reap_child(slot)
            elif not process.same_process(slot.pid, slot.create_time):
                self.end(slot, executor.exit_code_file(slot.workdir), None, None)
                changed = True
        return changed

    def _reap_child(self, slot: Slot) -> bool:
        try:
            pid, status, usage = os.wait4(slot.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status, usage = slot.pid, -1, None
        if pid == 0:
            return False
        if status >= 0:
            code: Optional[int] = os.waitstatus_to_exitcode(status)
        else:
            code = executor.exit_code_file(slot.workdir)
        cpu = (usage.ru_utime + usage.ru_stime) if usage else None
        rss = executor.payload_max_rss(usage.ru_maxrss * 1024 if usage else None, slot.spawn_rss)
        if slot.state is SlotState.STOPPING and process.group_alive(slot.pgid):
            # the wrapper shell died of SIGTERM; the payload's own processes get their grace too
            slot.leader_end = (code, cpu, rss)
            slot.popen = None
            return False
        self.end(slot, code, cpu, rss)
        return True

    def end(
        self, slot: Slot, code: Optional[int], cpu: Optional[float], rss: Optional[int]
    ) -> None:
        """Record how ``slot`` ended and give back its cores, memory and group."""
        groups = self.table.groups
        usage = groups.usage(slot.id) if groups else {}
        outcome, reason = self._outcome(slot, code, usage.get("oom_kills"))
        slot.to(SlotState.ENDED)
        cpu_usec = usage.get("cpu_usec")
        if cpu_usec is not None:
            cpu = cpu_usec / 1e6
        self.results.record(
            slot,
            outcome,
            code if code is None or code >= 0 else None,
            -code if code is not None and code < 0 else None,
            cpu=cpu,
            rss=usage.get("peak_bytes") or rss,
            reason=reason,
        )
        if groups:
            groups.remove(slot.id)
        if slot.id in self.table.allocator.held():
            self.table.allocator.release(slot.id)
        self.table.running.pop(slot.id, None)

    def _outcome(
        self, slot: Slot, code: Optional[int], oom_kills: Optional[int]
    ) -> tuple[str, Optional[str]]:
        if slot.stopped_because:
            return "killed", slot.stopped_because
        if oom_kills:
            size = f"of {slot.memory_mb} MB " if slot.memory_mb else "(size not recovered) "
            return "failed", f"memory limit {size}exceeded (killed by the kernel)"
        if code is None and slot.state_lost:
            return "lost", "state lost"
        if code is None and self.table.allocator.draining:
            return "killed", "stopped while draining"
        if code is None:
            return "lost", "vanished without an exit code"
        return ("done", None) if code == 0 else ("failed", f"exit code {code}")

    def enforce_limits(self) -> None:
        """SIGKILL stopping payloads whose grace is over; stop those past their wall limit."""
        now = self.clock.time()
        for slot in list(self.table.running.values()):
            if slot.state is SlotState.STOPPING:
                if slot.kill_at is not None and now >= slot.kill_at:
                    process.signal_group(slot.pgid, signal.SIGKILL)
                    log.warning("%s ignored SIGTERM for %g s: killed", slot.id, self.grace)
                    slot.kill_at = None
            elif slot.deadline is not None and now >= slot.deadline:
                limit = slot.payload["wall_limit_seconds"]
                self.stop(slot, f"wall limit of {limit:g} s reached")

    def stop_all(self, reason: str) -> None:
        """Stop every running payload for ``reason`` (those stopping already keep their own)."""
        for slot in list(self.table.running.values()):
            if slot.state is SlotState.RUNNING:
                self.stop(slot, reason)
        self.enforce_limits()

    def stop(self, slot: Slot, reason: str) -> None:
        """SIGTERM the payload's process group; SIGKILL follows after the grace."""
        slot.to(SlotState.STOPPING)
        slot.stopped_because = reason
        slot.kill_at = self.clock.time() + self.grace
        slot.deadline = None
        if slot.popen is None and not process.same_process(slot.pid, slot.create_time):
            return  # an adopted payload that has gone: reaped at the next look, never signalled
        process.signal_group(slot.pgid, signal.SIGTERM)
        log.warning("stopping %s: %s", slot.id, reason)
