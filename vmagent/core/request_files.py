"""Request files: a file that exists while something is asked of another process, its content the
reason. Drain and stop requests are two of them (``drain``, ``stop``)."""

from __future__ import annotations

import os
from typing import Optional

from .files import write_atomic


def ask(path: str, reason: str) -> bool:
    """Create the request at ``path`` with ``reason``; True when this call made it (idempotent)."""
    if os.path.exists(path):
        return False
    write_atomic(path, reason.rstrip("\n") + "\n", 0o644)
    return True


def reason(path: str, what: str) -> Optional[str]:
    """The reason of the request at ``path``, or None when none is pending."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(4096).strip() or "requested"
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"requested ({what} file unreadable: {exc.strerror})"
