"""The systemd notify protocol spoken directly over ``$NOTIFY_SOCKET`` (no systemd Python package).

``READY=1`` once the monitor runs, ``WATCHDOG=1`` at least every half ``WatchdogSec``,
``STATUS=...`` for ``systemctl status`` and ``STOPPING=1`` on the way out.
"""

from __future__ import annotations

import os
import socket
from typing import Mapping, Optional


def notify(message: str, environ: Optional[Mapping[str, str]] = None) -> bool:
    """Send ``message`` to systemd if it is listening; False when not started by systemd."""
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET")
    if not address or not address.startswith(("/", "@")):
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode("utf-8", "replace"))
        except OSError:
            return False
    return True


def watchdog_seconds(environ: Optional[Mapping[str, str]] = None) -> Optional[float]:
    """Half the watchdog timeout systemd set for this process, or None when there is no watchdog."""
    env = environ if environ is not None else os.environ
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None  # the watchdog is meant for another process (a parent shell, for example)
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None
