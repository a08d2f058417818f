"""Halt policies: each looks at a sample of the VM and may say it is time to go, with a vacuum code.

Every policy is switched on by its own setting in the ``monitor`` section (null switches it off),
so they compose: the first that fires decides. Vacuum codes (HSF-TN-2016-04): 100 shutdown
requested, 200 intended work done, 300 no more work, 500 problem with the VM environment, 700
transient problem. When the VM stops for lack of work its code comes from all its slots'
results (``vm_vacuum_code``), not from whichever finished last.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional

CODE_TEXT = {
    1: "shutdown requested by the host",
    2: "intended work done",
    3: "no more work",
    4: "site or VM banned",
    5: "problem with the site or VM environment",
    6: "grid-wide agent or application problem",
    7: "transient agent or application problem",
}


def shutdown_line(code: Any, reason: Any) -> str:
    """``NNN text`` on one line without a trailing newline, whatever ``code`` and ``reason`` are.

    A code outside 100-799 becomes 700 (a transient agent problem) with the given one in the text.
    """
    text = " ".join(str(reason or "").split())
    text = "".join(c for c in text if c.isprintable())
    if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 799:
        text = f"{text} (vacuum code {code!r} out of range)".strip()
        code = 700
    text = text[:200].rstrip() or CODE_TEXT[code // 100]
    return f"{code} {text}"


@dataclass(frozen=True)
class Decision:
    """Why the VM halts: a policy name, a human reason and a vacuum code."""

    policy: str
    reason: str
    vacuum_code: int

    @property
    def message(self) -> str:
        """The one-line ``shutdown_message`` content: ``NNN text``, no newline."""
        return shutdown_line(self.vacuum_code, self.reason)


def vm_vacuum_code(pool: Mapping[str, Any], pipeline_outcome: str) -> int:
    """The VM's code from every slot: 500 if the pipeline failed, 200 if any slot did its work, else the
    most common slot code (the more serious on a tie), 300 when nothing ever ran."""
    if pipeline_outcome == "failed":
        return 500
    codes: List[int] = list(pool.get("vacuum_codes") or [])
    if not codes:  # pool mode: payload results stand for the slots
        counts = pool.get("counts") or {}
        codes = [200] * counts.get("done", 0) + [700] * (
            counts.get("failed", 0) + counts.get("lost", 0)
        )
    if not codes:
        return 300
    if 200 in codes:
        return 200
    tally = Counter(codes)
    return max(tally, key=lambda code: (tally[code], code))


class Policies:
    """The configured halt policies; ``check`` returns the decision of the first that fires, or None."""

    def __init__(
        self,
        settings: Mapping[str, Any],
        boot_time: float,
        started: float,
        rng: Optional[random.Random] = None,
    ):
        self.settings = settings
        self.boot_time = boot_time
        # local runs start long after the host booted: work is expected from the later of the two
        self.work_expected_from = max(boot_time, started)
        # retire up to this much early, drawn once per VM, so a fleet started together does not stop together
        self.retire_early = (rng or random.Random()).uniform(0, settings["retire_jitter_seconds"])
        self.idle_since: Optional[float] = None
        self.empty_since: Optional[float] = None
        self.checks: List[
            Callable[[float, Dict[str, Any], Optional[float], float], Optional[Decision]]
        ] = [self.pipeline, self.lifetime, self.mjf, self.fizzle, self.no_work, self.idle_cpu]

    def check(
        self, now: float, sample: Dict[str, Any], shutdown_at: Optional[float], grace: float
    ) -> Optional[Decision]:
        """Ask every policy in turn (each keeps its own timers, so all see every sample)."""
        found = [
            d for d in (policy(now, sample, shutdown_at, grace) for policy in self.checks) if d
        ]
        return found[0] if found else None

    def pipeline(
        self, now: float, sample: Dict[str, Any], shutdown_at: Optional[float], grace: float
    ) -> Optional[Decision]:
        """A failed pilot pipeline leaves a VM that cannot work: 500."""
        pipeline = sample["pipeline"]
        if self.settings["halt_on_pipeline_failure"] and pipeline["outcome"] == "failed":
            return Decision(
                "pipeline", f"pilot pipeline failed [{pipeline['error_code'] or 'unknown'}]", 500
            )
        return None

    def lifetime(
        self, now: float, sample: Dict[str, Any], shutdown_at: Optional[float], grace: float
    ) -> Optional[Decision]:
        """Strict lifetime from boot, less the random retire offset."""
        limit = self.settings["lifetime_seconds"]
        if limit and now >= self.boot_time + limit - self.retire_early:
            return Decision("lifetime", f"lifetime of {limit:g} s reached", 100)
        return None

    def mjf(
        self, now: float, sample: Dict[str, Any], shutdown_at: Optional[float], grace: float
    ) -> Optional[Decision]:
        """Machine features ``shutdowntime`` minus ``grace_secs`` (and the random retire offset)."""
        if (
            self.settings["mjf_shutdown"]
            and shutdown_at is not None
            and now >= shutdown_at - grace - self.retire_early
        ):
            return Decision(
                "mjf",
                f"machine features shutdowntime {int(shutdown_at)} minus grace {grace:g} s",
                100,
            )
        return None

    def fizzle(
        self, now: float, sample: Dict[str, Any], shutdown_at: Optional[float], grace: float
    ) -> Optional[Decision]:
        """No payload or pilot ever started within ``fizzle_seconds`` of boot, of the monitor's start (local
        runs) or of the pipeline's end, whichever is latest; never while the pipeline still runs."""
        limit = self.settings["fizzle_seconds"]
        if not limit or _ever_worked(sample) or sample["pipeline"]["outcome"] == "running":
            return None
        finished = sample["pipeline"].get("finished") or 0.0
        if now - max(self.work_expected_from, finished) >= limit:
            return Decision("fizzle", f"no work found within {limit:g} s of boot", 300)
        return None

    def no_work(
        self, now: float, sample: Dict[str, Any], shutdown_at: Optional[float], grace: float
    ) -> Optional[Decision]:
        """No payload and no pilot running for ``no_payloads_seconds``, once something has run."""
        limit = self.settings["no_payloads_seconds"]
        busy = sample["pool"]["running"] > 0 or any(p["alive"] for p in sample["pilots"])
        self.empty_since = (
            None if busy else (self.empty_since if self.empty_since is not None else now)
        )
        if not limit or not _ever_worked(sample) or self.empty_since is None:
            return None
        if now - self.empty_since >= limit:
            code = vm_vacuum_code(sample["pool"], sample["pipeline"]["outcome"])
            return Decision("no-payloads", f"no payload or pilot ran for {limit:g} s", code)
        return None

    def idle_cpu(
        self, now: float, sample: Dict[str, Any], shutdown_at: Optional[float], grace: float
    ) -> Optional[Decision]:
        """CPU use below a threshold for a period, after a minimum uptime."""
        threshold = self.settings["idle_cpu_percent"]
        if threshold is None or now - self.boot_time < self.settings["idle_min_uptime_seconds"]:
            self.idle_since = None
            return None
        idle = float(sample["cpu_percent"]) < threshold
        self.idle_since = (
            None if not idle else (self.idle_since if self.idle_since is not None else now)
        )
        if self.idle_since is not None and now - self.idle_since >= self.settings["idle_seconds"]:
            code = vm_vacuum_code(sample["pool"], sample["pipeline"]["outcome"])
            return Decision(
                "idle-cpu",
                f"CPU below {threshold:g} % for {self.settings['idle_seconds']:g} s",
                code,
            )
        return None


def _ever_worked(sample: Mapping[str, Any]) -> bool:
    pool = sample["pool"]
    return (
        pool["last_started_at"] is not None
        or pool["running"] > 0
        or any(pool["counts"].values())
        or bool(pool["vacuum_codes"])
    )
