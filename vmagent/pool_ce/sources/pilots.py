"""``pilots``: N supervised pilot processes instead of payloads from a queue (``slots.mode: pilots``).

Each slot runs the configured pilot program (e.g. DIRAC's pilot) with its own core count. A pilot
that exits with a "no more work" code retires its slot; one that fails is restarted after a
backoff that doubles per failure in a row; when pilots keep dying faster than ``min_lifetime_seconds``
the node is reported as a black hole and no more pilots start. Every finished pilot leaves a vacuum
code (HSF-TN-2016-04) in the slot manager's state: 200 work done (the slot starts a new pilot),
300 no more work, 700 failed. A drain also tells DIRAC pilots (``/var/lib/dirac_drain``).

Time comes from the slot manager: ``capacity["now"]`` and each result's start and finish.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from ...config import Config
from ...core import capacity, layout
from ...core.files import write_atomic
from ...errors import ConfigError
from . import Offer

log = logging.getLogger("vmagent.pool")


@dataclass
class PilotSlot:
    """One pilot slot: how many pilots it ran, its failures in a row, when it may start again."""

    number: int
    runs: int = 0
    failures: int = 0
    not_before: float = 0.0
    retired: bool = False
    busy: bool = False


class PilotsSource:
    """Offers one pilot per free slot, as long as the slot is neither retired nor backing off."""

    name = "pilots"

    def __init__(self, config: Config) -> None:
        self.config = config
        settings = config.section("slots")
        self.pilot = settings["pilot"]
        if not self.pilot["argv"]:
            raise ConfigError(
                config.source, [("slots.pilot.argv", "is empty but the source is pilots")]
            )
        total = capacity.cores(config)
        self.count = self.pilot["count"] or max(1, total // self.pilot["cores_per_pilot"])
        self.slots = [PilotSlot(i) for i in range(self.count)]
        self.running: Dict[str, PilotSlot] = {}
        self.fast_failures = 0
        self.black_hole = False
        self.vacuum_codes: List[int] = []

    def offer(self, capacity: Dict[str, Any]) -> List[Offer]:
        if self.black_hole:
            return []
        now = float(capacity.get("now", 0.0))
        memory = self.pilot["memory_mb"]
        if memory is None:
            memory = int(capacity.get("total_memory_mb") or 0) // self.count
        return [
            self._pilot(slot, memory)
            for slot in self.slots
            if not (slot.retired or slot.busy or now < slot.not_before)
        ]

    def _pilot(self, slot: PilotSlot, memory: int) -> Offer:
        slot.runs += 1
        cores = str(self.pilot["cores_per_pilot"])
        argv = [
            a.replace("{cores}", cores).replace("{slot}", str(slot.number))
            for a in self.pilot["argv"]
        ]
        payload = {
            "id": f"pilot-{slot.number}-{slot.runs}",
            "command": argv,
            "cores": self.pilot["cores_per_pilot"],
            "whole_node": False,
            "memory_mb": memory,
            "wall_estimate_seconds": None,
            "wall_limit_seconds": None,
            "kind": "pilot",
            "tags": {},
            "env": {"VMAGENT_PILOT_SLOT": str(slot.number)},
            "priority": 0,
        }
        users = self.pilot["users"]
        user: Optional[str] = users[slot.number % len(users)] if users else None
        return Offer(payload, user=user, ticket=slot.number)

    def claim(self, offer: Offer) -> bool:
        slot = self.slots[offer.ticket]
        slot.busy = True
        self.running[offer.id] = slot
        return True

    def report(self, result: Dict[str, Any]) -> None:
        slot = self.running.pop(result["id"], None)
        if slot is None:
            return
        slot.busy = False
        finished = float(result.get("finished_at") or 0.0)
        lived = finished - float(result.get("started_at") or finished)
        if result.get("exit_code") in self.pilot["no_work_exit_codes"]:
            slot.retired = True
            self.vacuum_codes.append(300)
            log.info("pilot slot %d: no more work, not restarted", slot.number)
            return
        if result.get("exit_code") == 0:  # work done and more may come: the next pilot at once
            self.vacuum_codes.append(200)
            slot.failures = 0
            self.fast_failures = 0
            return
        self.vacuum_codes.append(700)
        self._failed(slot, lived, finished, result.get("reason"))

    def _failed(self, slot: PilotSlot, lived: float, finished: float, reason: Any) -> None:
        slot.failures += 1
        fast = lived < self.pilot["min_lifetime_seconds"]
        self.fast_failures = self.fast_failures + 1 if fast else 0
        if self.fast_failures >= self.pilot["black_hole_after"]:
            if not self.black_hole:
                self.black_hole = True
                log.error(
                    "%d pilots in a row died within %g s: this node is a black hole, no more pilots",
                    self.fast_failures,
                    self.pilot["min_lifetime_seconds"],
                )
            return
        delay = self.pilot["backoff_seconds"] * 2 ** (slot.failures - 1)
        slot.not_before = finished + delay
        log.warning("pilot slot %d failed (%s); restarting in %g s", slot.number, reason, delay)

    def exhausted(self) -> bool:
        """Nothing more will ever be offered."""
        return self.black_hole or all(slot.retired for slot in self.slots)

    def drain(self) -> None:
        """DIRAC pilots look for this file at every JobAgent cycle and stop matching jobs."""
        write_atomic(layout.dirac_drain(self.config), "drain\n", 0o644)

    def close(self) -> None:
        pass
