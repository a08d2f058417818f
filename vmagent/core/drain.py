"""Drain requests: "start nothing new", asked by the monitor or an operator, obeyed by the
slot manager (its drain file) and by DIRAC pilots (``/var/lib/dirac_drain``)."""

from __future__ import annotations

import os
from typing import Optional

from ..config import Config
from . import layout
from .files import write_atomic


def request(config: Config, reason: str, *, dirac: bool = True) -> bool:
    """Ask for a drain with ``reason``; True when this call made the request (idempotent)."""
    paths = [layout.drain_request(config)]
    if dirac:
        paths.append(layout.dirac_drain(config))
    made = False
    for path in paths:
        if not os.path.exists(path):
            write_atomic(path, reason.rstrip("\n") + "\n", 0o644)
            made = True
    return made


def requested(config: Config) -> Optional[str]:
    """The reason of the pending drain request, or None when none is pending."""
    try:
        with open(layout.drain_request(config), encoding="utf-8", errors="replace") as fh:
            return fh.read(4096).strip() or "requested"
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"requested (drain file unreadable: {exc.strerror})"
