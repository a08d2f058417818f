"""A payload's own ``$JOBFEATURES`` directory (HSF-TN-2016-02), written before it starts."""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping

from .. import mjf
from ..config import Config


def write(
    config: Config,
    payload: Mapping[str, Any],
    cores: int,
    total_cores: int,
    grace_seconds: float,
    now: float,
) -> str:
    """Write the job features of ``payload`` on ``cores`` of ``total_cores``; answer the directory."""
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
    if payload["memory_mb"]:
        values["max_rss_bytes"] = payload["memory_mb"] * 2**20
    if "shutdowntime" in machine:
        values["shutdowntime_job"] = machine["shutdowntime"]
    if "hs06" in machine:
        values["hs06_job"] = float(machine["hs06"]) * cores / total_cores
    mjf.write_features(directory, values)
    return directory
