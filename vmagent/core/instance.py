"""Which cloud instance this is: the key for once-per-instance commands, cgroups and names.

Every subsystem asks here; there is no second way to work it out.
"""

from __future__ import annotations

import re
import socket

from ..config import Config, host_path

SOURCES = ("/var/lib/cloud/data/instance-id", "/etc/machine-id")
VALID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def instance_id(config: Config) -> str:
    """``instance.id`` from config, else cloud-init's instance id, else the machine id, else the host name."""
    configured = config.section("instance")["id"]
    if configured:
        return str(configured)
    for source in SOURCES:
        try:
            with open(host_path(config.root, source), encoding="utf-8") as fh:
                value = fh.read().strip()
        except OSError:
            continue
        if VALID.match(value):
            return value
    return socket.gethostname()
