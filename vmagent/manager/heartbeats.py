"""Heartbeats: recording one, renewing the leases it names, answering the pending instructions.

Every function takes an open transaction (``Connection`` from ``engine.begin()``) and the current
time, and raises ``ManagerRefused(status, detail)`` for anything the caller must be told.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection, Row

from ..errors import ManagerRefused
from .db import heartbeats, instructions, vms
from .fleet import transition
from .settings import Settings
from .states import FROM_HEARTBEAT, VmState

PRUNE_EVERY = 50  # heartbeats between two prunings of one VM's history

_pending = (
    select(
        instructions.c.id,
        instructions.c.action,
        instructions.c.shutdown_at,
        instructions.c.reason,
        instructions.c.delivered_at,
    )
    .where(instructions.c.vm_id == bindparam("vm_id"), instructions.c.acked_at.is_(None))
    .order_by(instructions.c.id)
)
_hb_update = (
    update(vms)
    .where(vms.c.id == bindparam("vm_id"))
    .values(
        last_heartbeat=bindparam("at"),
        seq=bindparam("seq"),
        load1=bindparam("load1"),
        uptime=bindparam("uptime"),
        free_cores=bindparam("free_cores"),
        payloads_running=bindparam("running"),
        payloads_done=bindparam("done"),
        payloads_failed=bindparam("failed"),
        error_code=bindparam("error_code"),
    )
)
_hb_insert = insert(heartbeats)


def heartbeat(
    conn: Connection, settings: Settings, vm: Row, body: Mapping[str, Any], now: float
) -> Dict[str, Any]:
    """Record one heartbeat, apply its acks and lease renewals, answer the pending instructions."""
    if vm.state == VmState.HALTED.value:
        raise ManagerRefused(409, f"VM {vm.id} is halted; a halted VM cannot heartbeat")
    if conn.dialect.name == "postgresql":
        # A heartbeat is telemetry: should PostgreSQL itself crash, losing its last instants costs a
        # re-sent instruction at most. Registrations, payloads and results keep synchronous commits.
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
    target = FROM_HEARTBEAT[body["status"]].value
    pipeline = body.get("pipeline") or {}
    if pipeline.get("outcome") == "failed":
        target = VmState.ERROR.value
    if target != vm.state:
        why = f"heartbeat {body['seq']} says {body['status']}"
        if target == VmState.ERROR.value:
            why = f"heartbeat {body['seq']}: pipeline failed ({pipeline.get('error_code') or 'no code'})"
        transition(conn, vm.id, vm.state, target, why, now)
    slots = body.get("slots") or {}
    counts = body.get("payloads") or {}
    load = body.get("load") or [None]
    conn.execute(
        _hb_update,
        {
            "vm_id": vm.id,
            "at": now,
            "seq": body["seq"],
            "load1": load[0],
            "uptime": body.get("uptime"),
            "free_cores": slots.get("free_cores"),
            "running": counts.get("running", 0),
            "done": counts.get("done", 0),
            "failed": counts.get("failed", 0),
            "error_code": pipeline.get("error_code"),
        },
    )
    conn.execute(
        _hb_insert,
        {
            "vm_id": vm.id,
            "at": now,
            "seq": body["seq"],
            "status": body["status"],
            "load1": load[0],
            "cpu_percent": body.get("cpu_percent"),
            "free_cores": slots.get("free_cores"),
            "total_cores": slots.get("total_cores"),
            "running": counts.get("running"),
        },
    )
    acks = body.get("acks") or []
    if acks:
        conn.execute(
            update(instructions)
            .where(
                instructions.c.vm_id == vm.id,
                instructions.c.id.in_(acks),
                instructions.c.acked_at.is_(None),
            )
            .values(acked_at=now)
        )
    if counts.get("ids"):
        from .queue import renew

        renew(conn, settings, vm.id, counts["ids"], now)
    if body["seq"] % PRUNE_EVERY == 0:
        prune(conn, settings, vm.id, now)
    # The common case, nothing queued, costs no query: the credential lookup already said so.
    found = pending(conn, vm.id, now, skip=set(acks)) if vm.has_pending else []
    return {"instructions": found, "heartbeat_period": settings.heartbeat_period}


def pending(conn: Connection, vm_id: str, now: float, skip: Any = ()) -> List[Dict[str, Any]]:
    """Instructions not yet acknowledged, as the instruction schema describes them; marks delivery."""
    out, first_time = [], []
    for row in conn.execute(_pending, {"vm_id": vm_id}):
        if row.id in skip:
            continue
        item: Dict[str, Any] = {"id": row.id, "action": row.action}
        if row.shutdown_at is not None:
            item["shutdown_at"] = row.shutdown_at
        if row.reason:
            item["reason"] = row.reason
        out.append(item)
        if row.delivered_at is None:
            first_time.append(row.id)
    if first_time:
        conn.execute(
            update(instructions).where(instructions.c.id.in_(first_time)).values(delivered_at=now)
        )
    return out


def prune(conn: Connection, settings: Settings, vm_id: str, now: float) -> None:
    """Keep at most ``history_per_vm`` heartbeats of a VM, none older than ``history_seconds``."""
    keep_from = conn.execute(
        select(heartbeats.c.id)
        .where(heartbeats.c.vm_id == vm_id)
        .order_by(heartbeats.c.id.desc())
        .offset(settings.history_per_vm)
        .limit(1)
    ).scalar()
    cutoff = heartbeats.c.at < now - settings.history_seconds
    if keep_from is not None:
        cutoff = cutoff | (heartbeats.c.id <= keep_from)
    conn.execute(delete(heartbeats).where(heartbeats.c.vm_id == vm_id, cutoff))
