"""Halt policies: each looks at the VM and may say it is time to go, with a vacuum outcome code.

Vacuum codes (HSF-TN-2016-04): 100 shutdown requested, 200 intended work done, 300 no more work,
500 problem with the VM environment, 700 transient problem. The code of a whole VM is decided from
all its slots' results, not from whichever finished last.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional


@dataclass(frozen=True)
class Decision:
    """Why the VM halts: a policy name, a human reason and a vacuum code."""

    policy: str
    reason: str
    vacuum_code: int

    @property
    def message(self) -> str:
        """The one-line ``shutdown_message`` content."""
        return f"{self.vacuum_code} {self.reason}"


def outcome_code(counts: Mapping[str, int], pipeline_outcome: str) -> int:
    """The VM's vacuum code when it stops for lack of work, from all its slots' results."""
    if pipeline_outcome == "failed":
        return 500
    done, failed = counts.get("done", 0), counts.get("failed", 0) + counts.get("lost", 0)
    if done:
        return 200
    if failed:
        return 700
    return 300


class Policies:
    """The configured halt policies; ``check`` returns the first that fires, or None."""

    def __init__(self, settings: Mapping[str, Any], started: float, boot_time: float,
                 rng: Optional[random.Random] = None):
        self.settings = settings
        self.started = started
        self.boot_time = boot_time
        self.retire_early = (rng or random.Random()).uniform(0, settings["retire_jitter_seconds"])
        self.idle_since: Optional[float] = None
        self.empty_since: Optional[float] = None

    def check(self, now: float, sample: Dict[str, Any], shutdown_at: Optional[float], grace: float,
              pool: Dict[str, Any]) -> Optional[Decision]:
        s = self.settings
        counts = pool.get("counts", {})
        pipeline = sample.get("pipeline", {}).get("outcome", "unknown")
        if pipeline == "failed":
            return Decision("pipeline", f"pilot pipeline failed [{sample['pipeline'].get('error_code')}]", 500)
        if s["lifetime_seconds"] and now >= self.boot_time + s["lifetime_seconds"] - self.retire_early:
            return Decision("lifetime", f"lifetime of {s['lifetime_seconds']:g} s reached", 100)
        if s["mjf_shutdown"] and shutdown_at is not None and now >= shutdown_at - grace:
            return Decision("mjf", f"machine features shutdowntime {int(shutdown_at)} minus grace {grace:g} s", 100)
        running = int(sample.get("payloads", {}).get("running", 0))
        ever_started = pool.get("last_started_at") is not None or any(counts.values())
        if s["fizzle_seconds"] and not ever_started and now - self.started >= s["fizzle_seconds"]:
            return Decision("fizzle", f"no work found within {s['fizzle_seconds']:g} s", 300)
        if s["no_payloads_seconds"] and ever_started:
            self.empty_since = (self.empty_since or now) if running == 0 else None
            if self.empty_since is not None and now - self.empty_since >= s["no_payloads_seconds"]:
                code = outcome_code(counts, pipeline)
                return Decision("no-payloads", f"no payload for {s['no_payloads_seconds']:g} s", code)
        if s["idle_cpu_percent"] is not None and now - self.boot_time >= s["idle_min_uptime_seconds"]:
            idle = float(sample.get("cpu_percent", 100.0)) < s["idle_cpu_percent"]
            self.idle_since = (self.idle_since or now) if idle else None
            if self.idle_since is not None and now - self.idle_since >= s["idle_seconds"]:
                code = outcome_code(counts, pipeline)
                return Decision("idle-cpu", f"CPU below {s['idle_cpu_percent']:g} % for {s['idle_seconds']:g} s", code)
        return None
