"""Drain requests: "start nothing new", asked by the monitor or an operator, obeyed by the
slot manager (its drain file) and by DIRAC pilots (``/var/lib/dirac_drain``)."""

from __future__ import annotations

from typing import Optional

from ..config import Config
from . import layout, request_files


def request(config: Config, reason: str, *, dirac: bool = True) -> bool:
    """Ask for a drain with ``reason``; True when this call made the request (idempotent)."""
    made = request_files.ask(layout.drain_request(config), reason)
    if dirac:
        made = request_files.ask(layout.dirac_drain(config), reason) or made
    return made


def requested(config: Config) -> Optional[str]:
    """The reason of the pending drain request, or None when none is pending."""
    return request_files.reason(layout.drain_request(config), "drain")
