"""Accounting: VMs, payloads run and core-hours per ce, site, image, RunningPod or VO, over time."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from ..errors import ManagerRefused
from .db import heartbeats, results, vms
from .states import VmState

GROUPS = ("ce", "site", "image", "running_pod", "vo")
MAX_BUCKETS = 1000


def report(
    conn: Connection,
    group_by: str,
    since: Optional[float],
    until: Optional[float],
    bucket: Optional[float],
    now: float,
) -> Dict[str, Any]:
    """Rows per group (and per time bucket when ``bucket`` seconds is given) within [since, until)."""
    if group_by not in GROUPS:
        raise ManagerRefused(
            422, f"group_by: {group_by!r} is not allowed; use one of: {', '.join(GROUPS)}"
        )
    until = now if until is None else until
    since = 0.0 if since is None else since
    if until <= since:
        raise ManagerRefused(422, "until must be later than since")
    if bucket is not None and (bucket <= 0 or (until - since) / bucket > MAX_BUCKETS):
        raise ManagerRefused(422, f"bucket must be > 0 and give at most {MAX_BUCKETS} periods")
    rows: Dict[Tuple[str, float], Dict[str, Any]] = {}

    def row(key: str, start: float) -> Dict[str, Any]:
        return rows.setdefault(
            (key, start),
            {
                group_by: key,
                "period": start if bucket else None,
                "vms": 0,
                "vm_core_hours": 0.0,
                "payloads": 0,
                "done": 0,
                "failed": 0,
                "killed": 0,
                "lost": 0,
                "core_hours": 0.0,
                "cpu_hours": 0.0,
            },
        )

    col = vms.c[group_by]
    for vm in conn.execute(
        select(
            col.label("key"),
            vms.c.total_cores,
            vms.c.registered_at,
            vms.c.last_heartbeat,
            vms.c.state,
            vms.c.state_since,
        ).where(vms.c.registered_at < until)
    ):
        end = (
            vm.state_since if vm.state == VmState.HALTED.value else max(vm.last_heartbeat or 0, now)
        )
        end = min(end, until)
        for start, stop in _periods(since, until, bucket):
            overlap = min(end, stop) - max(vm.registered_at, start)
            if overlap > 0 or (start <= vm.registered_at < stop):
                entry = row(vm.key, start)
                entry["vms"] += 1
                entry["vm_core_hours"] += max(0.0, overlap) * vm.total_cores / 3600
    query = (
        select(
            col.label("key"),
            results.c.outcome,
            results.c.cores,
            results.c.wall_seconds,
            results.c.cpu_seconds,
            results.c.finished_at,
        )
        .join(vms, vms.c.id == results.c.vm_id)
        .where(results.c.finished_at >= since, results.c.finished_at < until)
    )
    for res in conn.execute(query):
        start = since + math.floor((res.finished_at - since) / bucket) * bucket if bucket else since
        entry = row(res.key, start)
        entry["payloads"] += 1
        entry[res.outcome] += 1
        entry["core_hours"] += res.cores * (res.wall_seconds or 0.0) / 3600
        entry["cpu_hours"] += (res.cpu_seconds or 0.0) / 3600
    out = sorted(rows.values(), key=lambda r: (r["period"] or 0, r[group_by]))
    for entry in out:
        entry["vm_core_hours"] = round(entry["vm_core_hours"], 6)
        entry["core_hours"] = round(entry["core_hours"], 6)
        entry["cpu_hours"] = round(entry["cpu_hours"], 6)
    return {"group_by": group_by, "since": since, "until": until, "bucket": bucket, "rows": out}


def _periods(since: float, until: float, bucket: Optional[float]) -> List[Tuple[float, float]]:
    if not bucket:
        return [(since, until)]
    count = math.ceil((until - since) / bucket)
    return [(since + i * bucket, min(until, since + (i + 1) * bucket)) for i in range(count)]


def fleet_load(conn: Connection, since: float, bucket: float) -> Dict[str, Any]:
    """Mean 1-minute load, heartbeating VMs and running payloads of the whole fleet per time bucket."""
    if bucket <= 0:
        raise ManagerRefused(422, "bucket must be > 0")
    key = func.floor(heartbeats.c.at / bucket).label("k")
    query = (
        select(
            key,
            func.avg(heartbeats.c.load1).label("load"),
            func.count(func.distinct(heartbeats.c.vm_id)).label("vms"),
            func.sum(heartbeats.c.running).label("running"),
            func.count().label("heartbeats"),
        )
        .where(heartbeats.c.at >= since)
        .group_by(key)
        .order_by(key)
        .limit(MAX_BUCKETS)
    )
    points = [
        {
            "t": float(r.k) * bucket,
            "load": float(r.load or 0.0),
            "vms": int(r.vms),
            "running": int(r.running or 0),
            "heartbeats": int(r.heartbeats),
        }
        for r in conn.execute(query)
    ]
    return {"since": since, "bucket": bucket, "points": points}
