"""Stopping payloads and the VM: halt actions (``vmagent.halt_actions``) and the payload stopper.

A halt action is a class built with ``(config)`` and called once with the decision. The payload
stopper signals process groups named in the slot manager's state file, so it checks each entry
first: a group id must be a real payload's (never 0, 1 or the monitor's own group) and, when the
leader still runs, it must be the process the slot manager started (same creation time), not a
stranger that inherited a reused pid. Work directories are never touched.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any, Callable, Dict, List, Mapping, Optional

import psutil

from ..clock import Clock
from ..config import Config
from ..process import run

log = logging.getLogger("vmagent.monitor")


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


def stop_payloads(
    running: List[Mapping[str, Any]],
    grace: float,
    clock: Clock,
    tick: Optional[Callable[[], None]] = None,
) -> Dict[str, str]:
    """SIGTERM each payload's process group, wait up to ``grace``, SIGKILL what is left.

    Returns how each payload ended: ``terminated``, ``killed``, ``gone`` (nothing left to signal) or
    ``skipped: why`` (an entry that does not name a payload of ours). ``tick`` runs while waiting
    (the systemd watchdog).
    """
    how: Dict[str, str] = {}
    groups: Dict[str, int] = {}
    for entry in running:
        ident = str(entry.get("id"))
        pgid, why = _group_of(entry)
        if pgid is None:
            how[ident] = f"skipped: {why}"
            log.error("not signalling payload %s: %s", ident, why)
            continue
        groups[ident] = pgid
        how[ident] = "terminated" if _signal(pgid, signal.SIGTERM) else "gone"
    deadline = clock.monotonic() + grace
    while groups and clock.monotonic() < deadline and any(_group_alive(g) for g in groups.values()):
        if tick:
            tick()
        clock.sleep(0.2)
    for ident, pgid in groups.items():
        if _group_alive(pgid) and _signal(pgid, signal.SIGKILL):
            how[ident] = "killed"
            log.warning("payload %s ignored SIGTERM for %g s: killed", ident, grace)
    return how


def _group_of(entry: Mapping[str, Any]) -> tuple[Optional[int], str]:
    pgid, pid = entry.get("pgid"), entry.get("pid")
    if not isinstance(pgid, int) or isinstance(pgid, bool) or pgid <= 1:
        return None, f"bad process group {pgid!r}"
    if pgid == os.getpgid(0):
        return None, "it names the monitor's own process group"
    leader = pid if isinstance(pid, int) and pid == pgid else pgid
    recorded = entry.get("create_time")
    try:
        proc = psutil.Process(leader)
        if isinstance(recorded, (int, float)) and abs(proc.create_time() - float(recorded)) >= 1.0:
            return None, f"pid {leader} now belongs to another process ({proc.name()})"
    except psutil.NoSuchProcess:
        pass  # the leader exited; members left in its group are still the payload's
    except psutil.Error as exc:
        return None, f"cannot inspect pid {leader}: {exc}"
    return pgid, ""


def _signal(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _group_alive(pgid: int) -> bool:
    """Some process of the group still runs (zombies do not count: their parent reaps them)."""
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.info["pid"]) == pgid:
                return True
        except (OSError, psutil.Error):
            continue
    return False
