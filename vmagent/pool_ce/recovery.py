"""After a restart: take back what a previous slot manager left running, report what ended meanwhile.

The state file names the running payloads; pid files and work directories find those it does not
(a bad state file, or a stop between starting a payload and saving the state). A payload is taken
back only if it is still the process that was started (same pid and start time).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Set

from .. import process, schemas
from ..clock import Clock
from ..config import Config, apply_defaults
from ..core import layout
from ..errors import AllocationError
from . import executor, state
from .reaper import Reaper
from .results import Results
from .slot import Slot, Table
from .sources import Offer

log = logging.getLogger("vmagent.pool")


class Recovery:
    """Fills the table from what the previous slot manager left on disk."""

    def __init__(
        self, config: Config, table: Table, reaper: Reaper, results: Results, clock: Clock
    ) -> None:
        self.config = config
        self.table = table
        self.reaper = reaper
        self.results = results
        self.clock = clock
        self.scratch = config.path("paths.scratch")

    def recover(self) -> None:
        """Re-adopt what a previous slot manager left running; report what finished or vanished."""
        previous, problems = state.read(self.config)
        if problems:
            kept = state.set_aside(self.config, self.clock.time())
            log.error(
                "%s: %s; %s; running payloads are recovered from pid files and work directories",
                layout.pool_state(self.config),
                "; ".join(problems),
                f"kept as {kept}" if kept else "could not be kept aside",
            )
        previous = previous or {}
        counts = self.results.counts
        counts.update({k: v for k, v in previous.get("counts", {}).items() if k in counts})
        users = previous.get("held_users") or {}
        for payload in previous.get("held", []):
            user = users.get(payload["id"]) if isinstance(users, dict) else None
            self.table.held[payload["id"]] = Offer(payload, user=user)
        for entry in previous.get("running", []):
            if entry["id"] not in self.table.running:
                self.take_back(Slot.from_entry(entry), "")
        self._from_disk()

    def _from_disk(self) -> None:
        recorded = state.recorded_ids(self.config)
        started = _names(layout.pool_payloads(self.config), ".json")
        for payload_id in started & recorded:
            state.remove_pidfile(self.config, payload_id)  # recorded, then stopped before tidying
        found = (started | _names(os.path.join(self.scratch, "payloads"), "")) - recorded
        # held: claimed, not started (a full disk stopped it)
        found -= set(self.table.running) | set(self.table.held)
        for payload_id in sorted(found):
            entry = state.read_pidfile(self.config, payload_id)
            how = " from its pid file" if entry is not None else " from its work directory"
            if entry is None:
                entry = self._stranger(payload_id)
            self.take_back(Slot.from_entry(entry, state_lost=True), how)

    def take_back(self, slot: Slot, how: str) -> None:
        """Adopt ``slot`` on its cores if its process still runs, else report how it ended."""
        if not slot.cpus_unknown:
            try:
                self.table.allocator.adopt(slot.id, slot.slots, slot.memory_mb)
            except AllocationError as exc:
                log.error("%s: %s", slot.id, exc.message)
                slot.cpus_unknown = True
        self.table.running[slot.id] = slot
        if not slot.pid or not process.same_process(slot.pid, slot.create_time):
            self.reaper.end(slot, executor.exit_code_file(slot.workdir), None, None)
        elif slot.cpus_unknown:
            log.warning(
                "re-adopted %s (pid %d)%s, CPUs unknown: starting nothing new until it ends",
                slot.id,
                slot.pid,
                how,
            )
        else:
            slot.state_lost = False
            log.info("re-adopted %s (pid %d)%s", slot.id, slot.pid, how)

    def _stranger(self, payload_id: str) -> Dict[str, Any]:
        """A running entry for a payload known only by its work directory (and maybe a process)."""
        workdir = os.path.join(self.scratch, "payloads", payload_id)
        groups = self.table.groups
        members = groups.members(payload_id) if groups else None
        memory_mb = (groups.limit_mb(payload_id) if groups else None) or 0
        found = executor.process_in(workdir, members) or {"pid": 0, "pgid": 0, "create_time": None}
        payload = {"id": payload_id, "command": ["(unknown)"]}
        apply_defaults(schemas.get("payload"), payload)
        try:
            started = os.stat(workdir).st_mtime
        except OSError:
            started = self.clock.time()
        return {
            "id": payload_id,
            "payload": payload,
            "cores": self.table.allocator.total_cores,
            "slots": [],
            "cpus": [],
            "memory_mb": memory_mb,
            "started_at": started,
            "estimated_end": self.clock.time(),
            "workdir": workdir,
            "deadline": None,
            "cpus_unknown": True,
            **found,
        }


def _names(directory: str, suffix: str) -> Set[str]:
    """Entries of ``directory`` ending in ``suffix`` (stripped), hidden ones skipped."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return set()
    return {
        n[: len(n) - len(suffix)] for n in names if n.endswith(suffix) and not n.startswith(".")
    }
