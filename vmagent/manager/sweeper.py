"""The periodic sweep: VMs whose heartbeats stopped become Stalled, expired leases are requeued."""

from __future__ import annotations

import logging
import threading
from typing import Callable, Dict

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Engine

from . import fleet, queue
from .db import heartbeats, vms
from .settings import Settings
from .states import LIVE, VmState

log = logging.getLogger("vmagent.manager.sweeper")


def sweep(engine: Engine, settings: Settings, now: float) -> Dict[str, int]:
    """One pass; safe to run in several manager processes at once (every change is conditional)."""
    stalled = 0
    last_seen = func.coalesce(vms.c.last_heartbeat, vms.c.registered_at)
    with engine.begin() as conn:
        for vm in conn.execute(
            select(vms.c.id, vms.c.state, last_seen.label("seen")).where(
                vms.c.state.in_([s.value for s in LIVE]), last_seen < now - settings.stall_seconds
            )
        ).all():
            why = f"no heartbeat for {now - vm.seen:.0f} s (limit {settings.stall_seconds:g} s)"
            stalled += fleet.transition(conn, vm.id, vm.state, VmState.STALLED.value, why, now)
        expired = queue.expire(conn, settings, now)
        pruned = conn.execute(
            delete(heartbeats).where(heartbeats.c.at < now - settings.history_seconds)
        ).rowcount
    if stalled or expired:
        log.info("sweep: %d VM(s) stalled, %d lease(s) expired and requeued", stalled, expired)
    return {"stalled": stalled, "expired": expired, "pruned": pruned}


class Sweeper(threading.Thread):
    """Runs ``sweep`` every ``settings.sweep_interval`` seconds until stopped."""

    def __init__(self, engine: Engine, settings: Settings, now: Callable[[], float]):
        super().__init__(name="vmagent-sweeper", daemon=True)
        self.engine, self.settings, self.now = engine, settings, now
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.settings.sweep_interval):
            try:
                sweep(self.engine, self.settings, self.now())
            except Exception:  # noqa: BLE001 - a failed sweep must not end the sweeper; the next one retries
                log.exception("sweep failed; retrying in %g s", self.settings.sweep_interval)

    def stop(self) -> None:
        self.stopping.set()
