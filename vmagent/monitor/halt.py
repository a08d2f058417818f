"""Stopping payloads and the VM: halt actions (``vmagent.halt_actions``) and the payload stopper."""

from __future__ import annotations

import logging
import os
import signal
from typing import Any, Dict, List

import psutil

from ..clock import Clock
from ..config import Config
from ..process import run

log = logging.getLogger("vmagent.monitor")


class Poweroff:
    """Power the VM off with systemctl (the default inside a VM)."""

    name = "poweroff"

    def __init__(self, config: Config) -> None:
        self.config = config

    def __call__(self, decision: Any) -> None:
        run(["systemctl", "poweroff"], timeout=60)


class ExitProcess:
    """Only leave the monitor loop: for local runs and the demo, where the host must stay up."""

    name = "exit"

    def __init__(self, config: Config) -> None:
        self.config = config

    def __call__(self, decision: Any) -> None:
        log.info("halt action 'exit': the monitor stops, the machine stays up")


def stop_payloads(running: List[Dict[str, Any]], grace: float, clock: Clock) -> Dict[str, str]:
    """SIGTERM each payload's process group, wait up to ``grace``, SIGKILL what is left; outputs stay."""
    how: Dict[str, str] = {}
    for entry in running:
        if _signal(int(entry["pgid"]), signal.SIGTERM):
            how[str(entry["id"])] = "terminated"
    deadline = clock.monotonic() + grace
    while clock.monotonic() < deadline and any(_group_alive(int(e["pgid"])) for e in running):
        clock.sleep(0.2)
    for entry in running:
        if _group_alive(int(entry["pgid"])):
            _signal(int(entry["pgid"]), signal.SIGKILL)
            how[str(entry["id"])] = "killed"
            log.warning("payload %s ignored SIGTERM for %g s: killed", entry["id"], grace)
    return how


def _signal(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _group_alive(pgid: int) -> bool:
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.info["pid"]) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return False
