"""Halting the VM: the payloads stopped by the slot manager, the halt actions (``vmagent.halt_actions``).

The monitor never signals a payload: the slot manager alone does. Halting, it asks the slot
manager to stop every payload (a stop request, ``vmagent.core.stop``) and waits until the slot
manager's state shows nothing running or the slot manager has gone, at most the slot manager's
grace (``slots.wall_grace_seconds``) plus a margin for it to notice, reap and write. Whatever it
found, the halt goes on. A halt action is a class built with ``(config)`` and called once with the
decision.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, List, Optional, Tuple

from ..clock import Clock
from ..config import Config
from ..core import pool_view, stop
from ..core.files import write_atomic
from ..process import run
from . import sd_notify
from .links import Call

log = logging.getLogger("vmagent.monitor")
# beyond the slot manager's grace: a tick to see the request, then reaping and writing its state
STOP_MARGIN_SECONDS = 15.0
POLL_SECONDS = 0.2


class Poweroff:
    """Power the VM off with ``systemctl poweroff`` (the default inside a VM)."""

    name = "poweroff"

    def __init__(self, config: Config) -> None:
        self.config = config

    def __call__(self, decision: Any) -> None:
        log.warning("powering off: %s", decision.message)
        run(["systemctl", "poweroff"], timeout=60)


class ExitProcess:
    """Only leave the monitor loop: for local runs and the demo, where the host must stay up."""

    name = "exit"

    def __init__(self, config: Config) -> None:
        self.config = config

    def __call__(self, decision: Any) -> None:
        log.warning(
            "halt action 'exit': the monitor stops, the machine stays up (%s)", decision.message
        )


def halt_sequence(
    config: Config,
    clock: Clock,
    decision: Any,
    drain: Callable[[str], None],
    final_reports: Callable[[Any], None],
) -> None:
    """Drain, have the slot manager stop the payloads, shutdown_message, the final reports; the
    caller then runs the halt action."""
    log.warning(
        "halting: %s [%s, vacuum code %d]", decision.reason, decision.policy, decision.vacuum_code
    )
    sd_notify.notify(f"STATUS=halting: {decision.message}")
    drain(f"halting: {decision.reason}")
    stop_payloads(config, f"halt: {decision.reason}", clock, pet_watchdog)
    message = os.path.join(config.path("paths.state_dir"), "shutdown_message")
    write_atomic(message, decision.message, 0o644)
    final_reports(decision)
    sd_notify.notify(f"STOPPING=1\nSTATUS=halting: {decision.message}")


def pet_watchdog() -> None:
    sd_notify.notify("WATCHDOG=1")


def await_calls(calls: List[Tuple[str, Call]], end: float, bound: float) -> None:
    """Wait for the final reports' calls until ``end`` (real time: they are real I/O), petting the
    watchdog; log those left unanswered (``bound``: the seconds they had in all)."""
    for name, call in calls:
        while not call.wait(min(1.0, end - time.monotonic())) and time.monotonic() < end:
            pet_watchdog()
        if not call.done():
            log.warning(
                "%s: final reports unanswered after %g s; halting without them", name, bound
            )


def stop_payloads(
    config: Config, reason: str, clock: Clock, tick: Optional[Callable[[], None]] = None
) -> str:
    """Ask the slot manager to stop every payload, wait for it (bounded), say what was found.

    ``tick`` runs while waiting (the systemd watchdog). Never raises for what it finds: the halt
    goes on in every case.
    """
    running = _running_ids(config)
    if not running:
        return "no payload running"
    if not pool_view.slot_manager_running(config):
        found = f"the slot manager is not running; {len(running)} payloads left to the halt action"
        log.error("halting: %s (%s)", found, ", ".join(running))
        return found
    stop.request(config, reason)
    slots = config.section("slots")
    bound = float(slots["wall_grace_seconds"]) + float(slots["poll_seconds"]) + STOP_MARGIN_SECONDS
    log.warning(
        "halting: asked the slot manager to stop %d payloads (%s); waiting up to %g s",
        len(running),
        ", ".join(running),
        bound,
    )
    deadline = clock.monotonic() + bound
    while running and clock.monotonic() < deadline and pool_view.slot_manager_running(config):
        if tick is not None:
            tick()
        clock.sleep(POLL_SECONDS)
        running = _running_ids(config)
    if not running:
        found = "the slot manager stopped every payload"
    elif not pool_view.slot_manager_running(config):
        found = f"the slot manager has gone, its state still shows {', '.join(running)} running"
    else:
        found = f"still running after {bound:g} s: {', '.join(running)}"
    (log.info if not running else log.error)("halting: %s", found)
    return found


def _running_ids(config: Config) -> list:
    return sorted(str(entry.get("id")) for entry in pool_view.running(config))
