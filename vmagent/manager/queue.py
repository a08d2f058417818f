"""The payload queue: submission, matching and leasing, lease renewal and expiry, results.

A payload is ``queued``, then ``leased`` to one VM until its lease expires (renewed by that VM's
heartbeats), then ``done``, ``failed``, ``killed`` or ``lost``. Killed and lost attempts are
queued again until ``max_attempts``; every attempt's result is kept for accounting.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, List, Mapping, Sequence

from sqlalchemy import insert, or_, select, update
from sqlalchemy.engine import Connection, Row

from ..errors import ManagerRefused
from . import bounds
from .db import payloads, results
from .settings import Settings
from .states import VmState

CLAIMABLE = (VmState.NEW.value, VmState.SUBMITTED.value, VmState.RUNNING.value)
CANDIDATES = 64
log = logging.getLogger("vmagent.manager.queue")


def submit(conn: Connection, docs: Sequence[Mapping[str, Any]], now: float) -> List[str]:
    """Queue validated payload documents (defaults applied); 409 if an id is already known."""
    ids = [d["id"] for d in docs]
    if len(set(ids)) != len(ids):
        raise ManagerRefused(422, "the same payload id appears twice in one submission")
    known = conn.execute(select(payloads.c.id).where(payloads.c.id.in_(ids))).scalars().all()
    if known:
        raise ManagerRefused(409, f"payload ids already submitted: {', '.join(sorted(known)[:10])}")
    conn.execute(insert(payloads), [_row(d, now) for d in docs])
    return ids


def _row(doc: Mapping[str, Any], now: float) -> Dict[str, Any]:
    tags = doc.get("tags") or {}
    return {
        "id": doc["id"],
        "doc": json.dumps(doc, separators=(",", ":")),
        "cores": doc.get("cores", 1),
        "whole_node": bool(doc.get("whole_node")),
        "memory_mb": doc.get("memory_mb", 0),
        "wall_seconds": doc.get("wall_limit_seconds") or doc.get("wall_estimate_seconds"),
        "running_pod": tags.get("running_pod", ""),
        "vo": tags.get("vo", ""),
        "priority": doc.get("priority", 0),
        "state": "queued",
        "submitted_at": now,
        "attempts": 0,
    }


def claim(
    conn: Connection, settings: Settings, vm: Row, request: Mapping[str, Any], now: float
) -> List[Dict]:
    """Lease up to ``max`` queued payloads that fit the VM's free cores, memory, lifetime and tags.

    ``peek``: list them instead (each fitting on its own), so the VM's masonry policy can plan over
    the queue's head and then lease exactly the ones it starts, by ``ids``.
    """
    if vm.state == VmState.HALTED.value:
        raise ManagerRefused(409, f"VM {vm.id} is halted; it cannot take payloads")
    if vm.state not in CLAIMABLE:
        return []  # draining, stalled or in error: nothing new, but not the VM's fault
    # What the VM was registered with, and what is leased to it, bound what its claim may say.
    bounds.check_tags(vm, request)
    free_cores, free_memory, total = bounds.free_capacity(conn, vm, request)
    query = select(payloads).where(
        payloads.c.state == "queued",
        or_(payloads.c.cores <= free_cores, payloads.c.whole_node.is_(True)),
        or_(payloads.c.running_pod == "", payloads.c.running_pod == (vm.running_pod or "")),
        or_(payloads.c.vo == "", payloads.c.vo == (vm.vo or "")),
        payloads.c.memory_mb <= free_memory,
    )
    if request.get("ids") is not None:
        query = query.where(payloads.c.id.in_(request["ids"]))
    if request.get("remaining_seconds") is not None:
        query = query.where(
            or_(
                payloads.c.wall_seconds.is_(None),
                payloads.c.wall_seconds <= request["remaining_seconds"],
            )
        )
    query = query.order_by(
        payloads.c.priority.desc(), payloads.c.submitted_at, payloads.c.id
    ).limit(CANDIDATES)
    leased: List[Dict[str, Any]] = []
    for row in conn.execute(query).all():
        cores = total if row.whole_node else row.cores
        if cores > free_cores or row.memory_mb > free_memory:
            continue
        if request.get("peek"):
            leased.append(json.loads(row.doc))
            if len(leased) >= request.get("max", 1):
                break
            continue
        expires = now + settings.lease_seconds
        taken = conn.execute(
            update(payloads)
            .where(payloads.c.id == row.id, payloads.c.state == "queued")
            .values(
                state="leased",
                vm_id=vm.id,
                leased_at=now,
                lease_expires_at=expires,
                attempts=row.attempts + 1,
            )
        )
        if taken.rowcount != 1:
            continue  # another manager process leased it first
        doc = json.loads(row.doc)
        doc.update(lease_expires_at=expires, attempt=row.attempts + 1)
        leased.append(doc)
        free_cores -= cores
        free_memory -= row.memory_mb
        if len(leased) >= request.get("max", 1):
            break
    return leased


def renew(conn: Connection, settings: Settings, vm_id: str, ids: Sequence[str], now: float) -> None:
    """Extend the leases of the payloads a VM says it is still running."""
    conn.execute(
        update(payloads)
        .where(
            payloads.c.vm_id == vm_id,
            payloads.c.state == "leased",
            payloads.c.id.in_(list(ids)[:4096]),
        )
        .values(lease_expires_at=now + settings.lease_seconds)
    )


def record_result(
    conn: Connection,
    settings: Settings,
    vm: Row,
    payload_id: str,
    doc: Mapping[str, Any],
    now: float,
) -> Dict[str, Any]:
    """Keep a leased payload's result; killed or lost attempts go back to the queue while attempts remain.

    Cores, wall and CPU time are counted within the lease's bounds; the answer says what was
    bounded (``{"adjusted": {field: why}}``), and the VM's own report is kept unchanged beside them.
    """
    if doc["id"] != payload_id:
        raise ManagerRefused(
            422, f"invalid payload result: id: {doc['id']!r} differs from the URL's {payload_id!r}"
        )
    row = conn.execute(select(payloads).where(payloads.c.id == payload_id)).first()
    if row is None:
        raise ManagerRefused(404, f"no payload {payload_id}")
    previous = conn.execute(
        select(results.c.vm_id, results.c.outcome).where(
            results.c.payload_id == payload_id, results.c.attempt == row.attempts
        )
    ).first()
    if previous is not None:
        if previous.vm_id == vm.id and previous.outcome == doc["outcome"]:
            return {}  # the same report again (the VM retried after a lost answer)
        raise ManagerRefused(
            409, f"payload {payload_id} attempt {row.attempts} already has a result"
        )
    # A lease that expired but was not handed to anyone else still belongs to this VM's attempt.
    if row.vm_id != vm.id or row.state not in ("leased", "queued") or row.attempts == 0:
        raise ManagerRefused(409, f"payload {payload_id} is not leased to VM {vm.id}")
    counted, adjusted = bounds.bound_result(row, vm, doc, now, settings.clock_slack_seconds)
    if adjusted:
        log.warning(
            "%s: result of %s out of its lease's bounds: %s",
            vm.id,
            payload_id,
            "; ".join(f"{k}: {v}" for k, v in adjusted.items()),
        )
    conn.execute(
        insert(results).values(
            payload_id=payload_id,
            vm_id=vm.id,
            attempt=row.attempts,
            outcome=doc["outcome"],
            finished_at=now,
            doc=json.dumps(doc, separators=(",", ":")),
            **counted,
        )
    )
    retry = doc["outcome"] in ("killed", "lost") and row.attempts < settings.max_attempts
    conn.execute(
        update(payloads)
        .where(payloads.c.id == payload_id)
        .values(
            state="queued" if retry else doc["outcome"],
            outcome=doc["outcome"],
            finished_at=None if retry else now,
            lease_expires_at=None,
        )
    )
    return {"adjusted": adjusted} if adjusted else {}


def release_vm(conn: Connection, settings: Settings, vm_id: str, now: float, why: str) -> int:
    """Requeue (or give up on) every payload still leased to a VM that is gone."""
    rows = conn.execute(
        select(payloads.c.id, payloads.c.attempts).where(
            payloads.c.vm_id == vm_id, payloads.c.state == "leased"
        )
    ).all()
    for row in rows:
        _requeue(conn, settings, row, now)
    return len(rows)


def expire(conn: Connection, settings: Settings, now: float) -> int:
    """Requeue payloads whose lease ran out: their VM stopped renewing them."""
    rows = conn.execute(
        select(payloads.c.id, payloads.c.attempts).where(
            payloads.c.state == "leased", payloads.c.lease_expires_at < now
        )
    ).all()
    for row in rows:
        _requeue(conn, settings, row, now)
    return len(rows)


def _requeue(conn: Connection, settings: Settings, row: Row, now: float) -> None:
    give_up = row.attempts >= settings.max_attempts
    conn.execute(
        update(payloads)
        .where(payloads.c.id == row.id, payloads.c.state == "leased")
        .values(
            state="lost" if give_up else "queued",
            outcome="lost" if give_up else None,
            finished_at=now if give_up else None,
            lease_expires_at=None,
        )
    )


def listing(conn: Connection, state: Any, limit: int, offset: int) -> Dict[str, Any]:
    query = select(payloads)
    if state:
        query = query.where(payloads.c.state == state)
    rows = conn.execute(
        query.order_by(payloads.c.submitted_at.desc(), payloads.c.id).limit(limit).offset(offset)
    )
    return {"payloads": [_public(r) for r in rows], "limit": limit, "offset": offset}


def one(conn: Connection, payload_id: str) -> Dict[str, Any]:
    row = conn.execute(select(payloads).where(payloads.c.id == payload_id)).first()
    if row is None:
        raise ManagerRefused(404, f"no payload {payload_id}")
    out = _public(row)
    out["results"] = [
        dict(r._mapping, doc=json.loads(r.doc))
        for r in conn.execute(
            select(results).where(results.c.payload_id == payload_id).order_by(results.c.attempt)
        )
    ]
    return out


def _public(row: Row) -> Dict[str, Any]:
    out = dict(row._mapping)
    out["doc"] = json.loads(out["doc"])
    return out
