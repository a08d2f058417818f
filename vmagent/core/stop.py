"""Stop requests: "stop every payload now", asked by the monitor when it halts the VM, obeyed by
the slot manager, the only process that signals payloads.

The request is the file ``<run_dir>/stop`` (content: the reason). The slot manager sees it within
one tick, starts nothing new, stops each payload (SIGTERM to its process group, its grace, SIGKILL),
records them ``killed`` with the reason, writes its state and exits. ``run_dir`` is a tmpfs in a
VM: a request does not outlive the boot it was made in.
"""

from __future__ import annotations

from typing import Optional

from ..config import Config
from . import layout, request_files


def path(config: Config) -> str:
    """Exists while a stop is requested; its content is the reason."""
    return layout.stop_request(config)


def request(config: Config, reason: str) -> bool:
    """Ask the slot manager to stop every payload, for ``reason``; True when this call made it."""
    return request_files.ask(path(config), reason)


def requested(config: Config) -> Optional[str]:
    """The reason of the pending stop request, or None when none is pending."""
    return request_files.reason(path(config), "stop")
