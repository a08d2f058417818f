"""One look at the VM with psutil (the full sample), and the heartbeat body made from it.

The sample holds more than a heartbeat carries (CPU per core, disk totals, each pilot's log age);
``monitor sample`` prints it and the ``log`` endpoint keeps it. ``heartbeat`` projects it onto
vmagent/schemas/heartbeat.json. The slot manager's state file is read defensively: a damaged or
missing file gives an empty pool, never an error.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional

import psutil

from ..clock import Clock
from ..config import Config
from ..core import pool_view

MB = 2**20


class Sampler:
    """Takes samples of this VM; keeps psutil's CPU counters between calls."""

    def __init__(self, config: Config, clock: Clock, boot_time: Optional[float] = None) -> None:
        self.config, self.clock = config, clock
        self.settings = config.section("monitor")
        self.boot_time = psutil.boot_time() if boot_time is None else boot_time
        self.disks = {
            "scratch": config.path("paths.scratch"),
            "cvmfs_cache": config.path("monitor.cvmfs_cache"),
        }
        psutil.cpu_percent(interval=None, percpu=True)  # the first call only starts the counters

    def take(self) -> Dict[str, Any]:
        """Everything the monitor knows about the VM now."""
        now = self.clock.time()
        pool = pool_view.load(self.config) or {}
        running = [e for e in pool.get("running", []) if isinstance(e, dict)]
        per_core = psutil.cpu_percent(interval=None, percpu=True)
        memory, swap = psutil.virtual_memory(), psutil.swap_memory()
        net = psutil.net_io_counters()
        pilots = [_pilot(e, now, self.settings) for e in running if _kind(e, pool) == "pilot"]
        return {
            "time": now,
            "uptime": max(0.0, now - self.boot_time),
            "load": [round(x, 3) for x in os.getloadavg()],
            "cpu_percent": round(sum(per_core) / len(per_core), 2) if per_core else 0.0,
            "cpu_per_core": per_core,
            "memory": {
                "total_mb": memory.total // MB,
                "available_mb": memory.available // MB,
                "used_percent": memory.percent,
            },
            "swap": {"total_mb": swap.total // MB, "used_mb": swap.used // MB},
            "disk": {name: _disk(path) for name, path in self.disks.items()},
            "net": {"sent_bytes": net.bytes_sent, "recv_bytes": net.bytes_recv} if net else {},
            "slots": _slots(pool),
            "pool": _pool(pool, running),
            "payloads": [
                {"id": str(e.get("id"))[:128], "kind": _kind(e, pool), "alive": _alive(e)}
                for e in running
            ],
            "pilots": pilots,
            "pipeline": _pipeline(self.config),
        }


def _kind(entry: Mapping[str, Any], pool: Mapping[str, Any]) -> str:
    payload = entry.get("payload")
    kind = payload.get("kind") if isinstance(payload, dict) else None
    return "pilot" if kind == "pilot" or pool.get("mode") == "pilots" else "payload"


def _int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _slots(pool: Mapping[str, Any]) -> Optional[Dict[str, int]]:
    keys = ("total_cores", "free_cores", "total_memory_mb", "free_memory_mb")
    found = {k: _int(pool.get(k)) for k in keys}
    if any(v is None for v in found.values()):
        return None
    slots: Dict[str, int] = {k: int(v or 0) for k, v in found.items()}
    slots["busy_cores"] = max(0, slots["total_cores"] - slots["free_cores"])
    slots["busy_memory_mb"] = max(0, slots["total_memory_mb"] - slots["free_memory_mb"])
    return slots


def _pool(pool: Mapping[str, Any], running: List[Dict[str, Any]]) -> Dict[str, Any]:
    """What the halt policies need from the slot manager's state."""
    counts: Dict[str, Any] = pool["counts"] if isinstance(pool.get("counts"), dict) else {}
    codes: List[Any] = pool["vacuum_codes"] if isinstance(pool.get("vacuum_codes"), list) else []
    pid = _int(pool.get("pid"))
    return {
        "present": bool(pool),
        "mode": pool.get("mode"),
        "draining": bool(pool.get("draining")),
        "manager_alive": bool(pid) and psutil.pid_exists(int(pid or 0)),
        "running": len(running),
        "counts": {k: _int(v) or 0 for k, v in counts.items() if isinstance(k, str)},
        "last_started_at": _number(pool.get("last_started_at")),
        "last_finished_at": _number(pool.get("last_finished_at")),
        "vacuum_codes": [c for c in codes if _int(c) is not None and 100 <= c <= 799],
    }


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _alive(entry: Mapping[str, Any]) -> bool:
    """The payload's leader process still runs, and is the one the slot manager started (not a reused pid)."""
    pid = _int(entry.get("pid"))
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            recorded = _number(entry.get("create_time"))
            return recorded is None or abs(proc.create_time() - recorded) < 1.0
    except psutil.Error:
        return False


def _pilot(entry: Mapping[str, Any], now: float, settings: Mapping[str, Any]) -> Dict[str, Any]:
    """A pilot and the age of its newest log line; silent longer than ``stuck_seconds`` is stuck."""
    workdir = entry.get("workdir")
    newest = _number(entry.get("started_at"))
    logs = (
        [os.path.join(workdir, name) for name in settings["pilot_logs"]]
        if isinstance(workdir, str)
        else []
    )
    for path in logs:
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            continue
        newest = mtime if newest is None else max(newest, mtime)
    age = max(0.0, now - newest) if newest is not None else None
    stuck = age is not None and age >= settings["stuck_seconds"]
    return {
        "id": str(entry.get("id"))[:128],
        "alive": _alive(entry),
        "log_age": age,
        "stuck": stuck,
    }


def _disk(path: str) -> Dict[str, float]:
    try:
        usage = psutil.disk_usage(path)
    except OSError:
        return {}
    return {
        "total_mb": usage.total // MB,
        "used_mb": usage.used // MB,
        "free_mb": usage.free // MB,
        "used_percent": usage.percent,
    }


def _pipeline(config: Config) -> Dict[str, Any]:
    try:
        with open(config.path("pilot.status_file"), encoding="utf-8") as fh:
            status = json.load(fh)
    except (OSError, ValueError):
        return {"outcome": "unknown", "error_code": None, "finished": None}
    if not isinstance(status, dict):
        return {"outcome": "unknown", "error_code": None, "finished": None}
    failed = [
        s for s in status.get("steps", []) if isinstance(s, dict) and s.get("outcome") == "failed"
    ]
    error = failed[0].get("error") if failed else None
    code = error.get("code") if isinstance(error, dict) else None
    return {
        "outcome": str(status.get("outcome", "unknown"))[:32],
        "error_code": str(code)[:64] if code else None,
        "finished": _number(status.get("finished")),
    }


def heartbeat(
    sample: Mapping[str, Any],
    *,
    instance_id: str,
    seq: int,
    status: str,
    remaining: Optional[float],
) -> Dict[str, Any]:
    """The heartbeat body (vmagent/schemas/heartbeat.json) for ``sample``."""
    counts = sample["pool"]["counts"]
    payloads = sample["payloads"]
    memory = dict(
        sample["memory"],
        swap_total_mb=sample["swap"]["total_mb"],
        swap_used_mb=sample["swap"]["used_mb"],
    )
    disk = {
        f"{name}_{key}": value
        for name, usage in sample["disk"].items()
        for key, value in usage.items()
    }
    body: Dict[str, Any] = {
        "instance_id": instance_id,
        "seq": seq,
        "time": sample["time"],
        "status": status,
        "uptime": sample["uptime"],
        "load": sample["load"],
        "cpu_percent": sample["cpu_percent"],
        "memory": memory,
        "disk": dict(sorted(disk.items())[:16]),
        "net": sample["net"],
        "payloads": {
            "running": len(payloads),
            "ids": [p["id"] for p in payloads][:4096],
            **{k: counts.get(k, 0) for k in ("done", "failed", "killed")},
        },
        "pilots": {
            "running": len(sample["pilots"]),
            "stuck": sum(1 for p in sample["pilots"] if p["stuck"]),
        },
        "pipeline": {k: sample["pipeline"][k] for k in ("outcome", "error_code")},
        "remaining_seconds": remaining,
    }
    if sample["slots"]:
        body["slots"] = {k: v for k, v in sample["slots"].items() if not k.startswith("busy_")}
    errors = problems(sample)
    if errors:
        body["errors"] = errors
    return body


def problems(sample: Mapping[str, Any]) -> List[str]:
    """Short error codes for what looks wrong: a failed pipeline, stuck pilots, a vanished slot manager."""
    found = []
    if sample["pipeline"]["outcome"] == "failed":
        found.append(f"pipeline-failed:{sample['pipeline']['error_code'] or 'unknown'}"[:64])
    found += [f"pilot-stuck:{p['id']}"[:64] for p in sample["pilots"] if p["stuck"]]
    pool = sample["pool"]
    if pool["present"] and pool["running"] and not pool["manager_alive"]:
        found.append("slot-manager-gone")
    return found[:64]
