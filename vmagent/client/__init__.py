"""The VM side of the manager's HTTP API v1: registration, claims, results, heartbeats.

Runs inside VMs on Python 3.9 and by operators; it never imports the manager's server
(``vmagent.manager``) nor its dependencies. ``ManagerClient`` (module ``manager``, loaded on first use) is the ``requests`` client of the slot
manager and the operators' commands; ``credentials`` holds what it shares with the monitor's own
``http.client`` session (the stored credential, URL segments).
"""

from __future__ import annotations

from typing import Any

from .credentials import read_stored, segment

_LAZY = ("API", "ManagerClient", "registration", "vm_credentials")  # imported on first use


def __getattr__(name: str) -> Any:
    """The ``requests`` client only when asked for: the monitor imports this package without it."""
    if name in _LAZY:
        from . import manager

        return getattr(manager, name)
    raise AttributeError(name)


__all__ = ["API", "ManagerClient", "read_stored", "registration", "segment", "vm_credentials"]
