"""One look at the VM with psutil: the measured half of a heartbeat."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Optional

import psutil

from ..config import Config
from ..pool_ce import state as pool_state


def sample(config: Config, *, now: float, seq: int, status: str, remaining: Optional[float]) -> Dict[str, Any]:
    """A heartbeat body (vmagent/schemas/heartbeat.json) describing the VM now."""
    from ..pilot.instance import detect_instance_id

    pool = pool_state.load(config) or {}
    memory = psutil.virtual_memory()
    body: Dict[str, Any] = {
        "instance_id": detect_instance_id(config), "seq": seq, "time": now, "status": status,
        "uptime": max(0.0, time.time() - psutil.boot_time()),
        "load": [round(x, 3) for x in os.getloadavg()],
        "cpu_percent": psutil.cpu_percent(interval=None),
        "memory": {"total_mb": memory.total // 2**20, "available_mb": memory.available // 2**20,
                   "swap_used_mb": psutil.swap_memory().used // 2**20},
        "disk": _disk(config),
        "net": _net(),
        "payloads": {"running": len(pool.get("running", [])),
                     "ids": [str(r["id"]) for r in pool.get("running", [])][:4096],
                     **{k: int(v) for k, v in pool.get("counts", {}).items() if k in ("done", "failed", "killed")}},
        "pipeline": _pipeline(config),
        "remaining_seconds": remaining,
    }
    slots = ("total_cores", "free_cores", "total_memory_mb", "free_memory_mb")
    if all(isinstance(pool.get(k), int) for k in slots):
        body["slots"] = {k: int(pool[k]) for k in slots}
    return body


def _disk(config: Config) -> Dict[str, float]:
    found: Dict[str, float] = {}
    for name, path in (("scratch_free_mb", config.path("paths.scratch")),
                       ("cvmfs_cache_free_mb", config.path("monitor.cvmfs_cache"))):
        try:
            found[name] = psutil.disk_usage(path).free // 2**20
        except OSError:
            continue
    return found


def _net() -> Dict[str, float]:
    counters = psutil.net_io_counters()
    return {"sent_bytes": counters.bytes_sent, "recv_bytes": counters.bytes_recv} if counters else {}


def _pipeline(config: Config) -> Dict[str, Any]:
    try:
        with open(config.path("pilot.status_file"), encoding="utf-8") as fh:
            status = json.load(fh)
    except (OSError, ValueError):
        return {"outcome": "unknown", "error_code": None}
    failed = [s for s in status.get("steps", []) if s.get("outcome") == "failed"]
    code = (failed[0].get("error") or {}).get("code") if failed else None
    return {"outcome": str(status.get("outcome", "unknown"))[:32], "error_code": code}
