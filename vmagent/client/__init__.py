"""The VM side of the manager's HTTP API v1: registration, claims, results, heartbeats.

Runs inside VMs on Python 3.9 and by operators; it never imports the manager's server
(``vmagent.manager``) nor its dependencies. Two transports, one per kind of process:
``ManagerClient`` (module ``manager``, on ``requests``, loaded on first use) for the slot manager
and the operators' commands; the long-lived monitor's own ``http.client`` session. What they
share needs no ``requests``: the API's root, the stored credential, URL segments (``credentials``)
and the registration (``registration``: the document, the lock, storing the answer).
"""

from __future__ import annotations

from typing import Any

from .credentials import API, read_stored, segment
from .registration import read_token_file, register_once, registration

_LAZY = ("ManagerClient", "vm_credentials")  # on requests: imported on first use


def __getattr__(name: str) -> Any:
    """The ``requests`` client only when asked for: the monitor imports this package without it."""
    if name in _LAZY:
        from . import manager

        return getattr(manager, name)
    raise AttributeError(name)


__all__ = [
    "API",
    "ManagerClient",
    "read_stored",
    "read_token_file",
    "register_once",
    "registration",
    "segment",
    "vm_credentials",
]
