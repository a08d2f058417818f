"""A payload's own ``$JOBFEATURES`` directory (HSF-TN-2016-02), written before it starts, and where
its payload is told to find the features (``Publisher``)."""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import quote

import psutil

from .. import mjf
from ..config import Config

log = logging.getLogger("vmagent.pool")


def write(
    config: Config,
    payload: Mapping[str, Any],
    cores: int,
    total_cores: int,
    grace_seconds: float,
    now: float,
    groups: Any = None,
) -> str:
    """Write the job features of ``payload`` on ``cores`` of ``total_cores``; answer the directory.

    ``groups``: the slot manager's ``cgroups.PayloadGroups`` (None without cgroups), which decides
    whether the payload may swap.
    """
    directory = mjf.job_dir(config, payload["id"])
    machine = mjf.read_features(mjf.machine_dir(config)).values
    values: Dict[str, Any] = {
        "allocated_cpu": cores,
        "jobstart_secs": int(now),
        "grace_secs_job": int(grace_seconds),
        "job_id": f"{os.uname().nodename}:{payload['id']}"[:256],
    }
    if payload["wall_limit_seconds"]:
        values["wall_limit_secs"] = int(payload["wall_limit_seconds"])
        values["cpu_limit_secs"] = int(payload["wall_limit_seconds"] * cores)  # all its processes
    if payload["memory_mb"]:
        values["max_rss_bytes"] = payload["memory_mb"] * 2**20
    swap = max_swap_bytes(groups)
    if swap is not None:
        values["max_swap_bytes"] = swap
    if "shutdowntime" in machine:
        values["shutdowntime_job"] = machine["shutdowntime"]
    if "hs06" in machine:
        values["hs06_job"] = float(machine["hs06"]) * cores / total_cores
    mjf.write_features(directory, values)
    return directory


def max_swap_bytes(groups: Any) -> Optional[int]:
    """0 when payloads cannot swap (their cgroup's ``memory.swap.max`` is 0, or the VM has no swap);
    None (not known, not written) when they may swap as much as the VM has."""
    if groups is not None and os.path.exists(os.path.join(groups.base, "memory.swap.max")):
        return 0  # cgroups.PayloadGroups.create writes memory.swap.max 0 for every payload
    return 0 if psutil.swap_memory().total == 0 else None


class Publisher:
    """Where payloads find their features: http URLs of a loopback server this process runs
    (``mjf.serve_http``, the default: every DIRAC reader accepts them), or the plain directories."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.settings = config.section("mjf")
        self.server: Any = None
        self.url: Optional[str] = None

    def start(self) -> None:
        """Serve the features tree (once); without a server the payloads get the directories."""
        if self.server is not None or not self.settings["serve_http"]:
            return
        root = mjf.features_root(self.config)
        port_file = os.path.join(self.config.path("paths.state_dir"), "mjf-http-port")
        try:
            self.server, self.url = mjf.serve_tree(root, self.settings["http_port"], port_file)
        except OSError as exc:
            log.warning("features not served over HTTP (payloads get directories): %s", exc)
            self.server = False  # do not try again
            return
        log.info("features served at %s", self.url)

    def locations(self, payload_id: str) -> Tuple[str, str]:
        """``($MACHINEFEATURES, $JOBFEATURES)`` for payload ``payload_id``."""
        self.start()
        if not self.url:
            return mjf.machine_dir(self.config), mjf.job_dir(self.config, payload_id)
        return f"{self.url}/machine", f"{self.url}/jobs/{quote(payload_id, safe=':')}"

    def close(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
        self.server, self.url = None, None
