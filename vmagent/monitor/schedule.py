"""The monitor's timetable: when it beats to each endpoint, when an endpoint's silence is an
outage, and how long the VM has left.

A link beats every period (its endpoint's, else ``monitor.period_seconds``), jittered by
``monitor.jitter_fraction`` so that VMs started together do not beat together. After failures in
a row it backs off (``monitor.backoff_seconds``, doubling) up to the period. The jitter draws from
the monitor's injected ``random.Random``, so a test replays a schedule exactly. The VM ends at the earlier of the MJF shutdowntime and the
end of its lifetime (boot time plus ``monitor.lifetime_seconds``); heartbeats report the seconds
left as ``remaining``.
"""

from __future__ import annotations

import random
from typing import Any, List, Mapping, Optional, Tuple

from .. import mjf
from ..config import Config
from .links import Link
from .policies import Decision

OUTAGE_VACUUM_CODE = 700


class Schedule:
    """Periods and delays between beats, and the time left, from the ``monitor`` settings."""

    def __init__(self, settings: Mapping[str, Any], rng: random.Random, boot_time: float) -> None:
        self.settings = settings
        self.rng = rng
        self.boot_time = boot_time

    def period(self, link: Link) -> float:
        """The period of ``link``: its endpoint's when it set one, else ``monitor.period_seconds``."""
        return float(getattr(link.plugin, "period", None) or self.settings["period_seconds"])

    def delay(self, link: Link, failures: int) -> float:
        """Until the next beat to ``link`` after ``failures`` failures in a row: the period, or a backoff."""
        period = self.period(link)
        if not failures:
            return self.jitter(period)
        backoff = self.settings["backoff_seconds"] * 2 ** (failures - 1)
        return min(period, self.jitter(backoff))

    def jitter(self, seconds: float) -> float:
        """``seconds`` spread by up to ``monitor.jitter_fraction`` either way."""
        spread = self.settings["jitter_fraction"]
        return float(seconds) * (1 + self.rng.uniform(-spread, spread))

    def remaining(self, now: float, shutdown_at: Optional[float]) -> Optional[float]:
        """Seconds from ``now`` to the VM's end, or None when it has neither a shutdown time nor a
        lifetime."""
        ends = [shutdown_at] if shutdown_at is not None else []
        if self.settings["lifetime_seconds"]:
            ends.append(self.boot_time + self.settings["lifetime_seconds"])
        return round(min(ends) - now, 1) if ends else None


def shutdown_time(config: Config) -> Tuple[Optional[float], float]:
    """The MJF shutdowntime (None when unset) and grace_secs (0 when unset)."""
    machine = mjf.machine_dir(config)
    values = mjf.read_features(machine, keys=("shutdowntime", "grace_secs")).values
    shutdown = values.get("shutdowntime")
    grace = float(values.get("grace_secs", 0))
    if shutdown is None:
        return None, grace
    return float(shutdown), grace


def outage(links: List[Link], now: float, started: float) -> Optional[Decision]:
    """The decision to halt when an endpoint with an outage limit has been silent that long.

    Silent since its last answer, or since ``started`` (the monitor's start) when it never answered.
    """
    for link in links:
        silent = now - (link.last_ok if link.last_ok is not None else started)
        if link.outage_limit and silent >= link.outage_limit:
            return Decision(
                "outage",
                f"{link.name.split('#')[0]} endpoint silent for {silent:.0f} s "
                f"(limit {link.outage_limit:g} s)",
                OUTAGE_VACUUM_CODE,
            )
    return None
