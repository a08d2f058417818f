"""The slot manager's state document as other processes read it (monitor, demo, status).

Light on purpose: the long-lived monitor reads it every sample and never loads jsonschema. The
slot manager alone writes the document and trusts only what its own checks accept.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from typing import Any, Dict, List, Optional, Tuple

from ..config import Config
from . import layout

VERSION = 1  # the document's format; the slot manager refuses any other


def document(config: Config) -> Tuple[Optional[Dict[str, Any]], List[str]]:
    """(the document as written or None, problems as ``path: message``); missing is (None, [])."""
    try:
        with open(layout.pool_state(config), encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None, []
    except (OSError, ValueError) as exc:
        return None, [f"(top): not readable as JSON: {exc}"]
    if not isinstance(data, dict):
        return None, [f"(top): a {type(data).__name__}, not an object"]
    if data.get("version") != VERSION:
        return None, [
            f"version: {data.get('version')!r}, this slot manager reads version {VERSION}"
        ]
    return data, []


def load(config: Config) -> Optional[Dict[str, Any]]:
    """The document as written, for readers that take what they need with care; None when
    missing or unusable."""
    return document(config)[0]


def running(config: Config) -> List[Dict[str, Any]]:
    """The running entries as written (possibly empty); each is checked by whoever uses it."""
    found = (load(config) or {}).get("running", [])
    return [entry for entry in found if isinstance(entry, dict)] if isinstance(found, list) else []


def slot_manager_running(config: Config) -> bool:
    """A slot manager holds its lock (``<state_dir>/pool/lock``, docs/contracts.md).

    Asked by taking the lock shared for an instant: a slot manager starting in that instant would
    exit at once, which during a halt is what is wanted anyway.
    """
    try:
        fd = os.open(layout.pool_lock(config), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False  # no lock file: no slot manager ever ran here
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)  # closing releases a lock taken here
    return False
