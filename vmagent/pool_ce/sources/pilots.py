"""``pilots``: N supervised pilot processes instead of payloads from a queue.

Each slot runs the configured pilot program (e.g. DIRAC's pilot) with its own core count. A pilot
that exits with a "no more work" code retires its slot; one that fails is restarted after a
backoff that doubles per failure in a row; when pilots keep dying faster than ``min_lifetime_seconds``
the node is reported as a black hole and no more pilots start. Every finished pilot leaves a vacuum
code (HSF-TN-2016-04) in the slot manager's state: 200 work done (the slot starts a new pilot),
300 no more work, 700 failed.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List

from ...config import Config

log = logging.getLogger("vmagent.pool")


class PilotsSource:
    """Offers one pilot per free slot, as long as the slot is neither retired nor backing off."""

    name = "pilots"

    def __init__(self, config: Config, clock: Any = None) -> None:
        settings = config.section("slots")
        self.pilot = settings["pilot"]
        if not self.pilot["argv"]:
            from ...errors import ConfigError

            raise ConfigError(
                config.source, [("slots.pilot.argv", "is empty but slots.mode is pilots")]
            )
        cores = settings["cores"]
        import os

        total = cores or len(os.sched_getaffinity(0))
        self.count = self.pilot["count"] or max(1, total // self.pilot["cores_per_pilot"])
        self.clock = clock
        self.slots: Dict[int, Dict[str, Any]] = {
            i: {"retired": False, "failures": 0, "not_before": 0.0, "started": None, "runs": 0}
            for i in range(self.count)
        }
        self.running: Dict[str, int] = {}
        self.fast_failures = 0
        self.black_hole = False
        self.vacuum_codes: List[int] = []

    def _now(self) -> float:
        return self.clock.time() if self.clock else time.time()

    def offer(self, capacity: Dict[str, Any]) -> List[Dict[str, Any]]:
        if self.black_hole:
            return []
        now, offered, users = self._now(), [], self.pilot["users"]
        memory = self.pilot["memory_mb"]
        if memory is None:
            memory = int(capacity.get("total_memory_mb") or 0) // self.count
        for slot, entry in self.slots.items():
            if entry["retired"] or slot in self.running.values() or now < entry["not_before"]:
                continue
            entry["runs"] += 1
            cores = str(self.pilot["cores_per_pilot"])
            argv = [
                a.replace("{cores}", cores).replace("{slot}", str(slot)) for a in self.pilot["argv"]
            ]
            offered.append(
                {
                    "id": f"pilot-{slot}-{entry['runs']}",
                    "command": argv,
                    "cores": self.pilot["cores_per_pilot"],
                    "whole_node": False,
                    "memory_mb": memory,
                    "wall_estimate_seconds": None,
                    "wall_limit_seconds": None,
                    "kind": "pilot",
                    "tags": {},
                    "env": {"VMAGENT_PILOT_SLOT": str(slot)},
                    "priority": 0,
                    "_slot": slot,
                    "_user": users[slot % len(users)] if users else None,
                }
            )
        return offered

    def claim(self, payload: Dict[str, Any]) -> bool:
        self.running[payload["id"]] = payload["_slot"]
        self.slots[payload["_slot"]]["started"] = self._now()
        return True

    def report(self, result: Dict[str, Any]) -> None:
        slot = self.running.pop(result["id"], None)
        if slot is None:
            return
        entry = self.slots[slot]
        lived = self._now() - (entry["started"] or self._now())
        if result.get("exit_code") in self.pilot["no_work_exit_codes"]:
            entry["retired"] = True
            self.vacuum_codes.append(300)
            log.info("pilot slot %d: no more work, not restarted", slot)
            return
        if (
            result.get("exit_code") == 0
        ):  # work done and more may come: start the next pilot at once
            self.vacuum_codes.append(200)
            entry["failures"] = self.fast_failures = 0
            return
        self.vacuum_codes.append(700)
        entry["failures"] += 1
        self.fast_failures = (
            self.fast_failures + 1 if lived < self.pilot["min_lifetime_seconds"] else 0
        )
        if self.fast_failures >= self.pilot["black_hole_after"]:
            if self.black_hole:
                return
            self.black_hole = True
            log.error(
                "%d pilots in a row died within %g s: this node is a black hole, no more pilots",
                self.fast_failures,
                self.pilot["min_lifetime_seconds"],
            )
            return
        delay = self.pilot["backoff_seconds"] * 2 ** (entry["failures"] - 1)
        entry["not_before"] = self._now() + delay
        log.warning(
            "pilot slot %d failed (%s); restarting in %g s", slot, result.get("reason"), delay
        )

    def exhausted(self) -> bool:
        """Nothing more will ever be offered."""
        return self.black_hole or all(e["retired"] for e in self.slots.values())

    def close(self) -> None:
        pass
