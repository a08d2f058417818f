"""Reading the VM registry: the paged, filtered VM table and one VM with its history."""

from __future__ import annotations

from typing import Any, Dict, Mapping

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection, Row

from ..errors import ManagerRefused
from .db import heartbeats, instructions, transitions, vms
from .states import VmState

FILTERS = ("state", "image", "running_pod", "ce", "site", "vo")


def table(
    conn: Connection, filters: Mapping[str, Any], limit: int, offset: int, now: float
) -> Dict[str, Any]:
    """A page of the VM table, newest first, with the total count matching the filters."""
    where = [vms.c[k] == v for k, v in filters.items() if k in FILTERS and v]
    if filters.get("q"):
        pattern = f"%{like_literal(filters['q'])}%"
        where.append(
            vms.c.id.like(pattern, escape="\\")
            | vms.c.hostname.like(pattern, escape="\\")
            | vms.c.ip.like(pattern, escape="\\")
        )
    condition = and_(True, *where)
    total = conn.execute(select(func.count()).select_from(vms).where(condition)).scalar_one()
    rows = conn.execute(
        select(vms)
        .where(condition)
        .order_by(vms.c.registered_at.desc(), vms.c.id)
        .limit(limit)
        .offset(offset)
    )
    return {"total": total, "limit": limit, "offset": offset, "vms": [public(r, now) for r in rows]}


def like_literal(text: str) -> str:
    """``text`` for a LIKE pattern with ESCAPE '\\': its ``%`` and ``_`` match only themselves."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def public(row: Row, now: float) -> Dict[str, Any]:
    """A VM row as the API shows it: never the credential digest."""
    out = {k: v for k, v in row._mapping.items() if k not in ("token_hash",)}
    end = row.last_heartbeat if row.state == VmState.HALTED.value and row.last_heartbeat else now
    out["age_seconds"] = max(0.0, end - row.registered_at)
    return out


def detail(conn: Connection, vm_id: str, now: float, history: int = 200) -> Dict[str, Any]:
    row = conn.execute(select(vms).where(vms.c.id == vm_id)).first()
    if row is None:
        raise ManagerRefused(404, f"no VM {vm_id}")
    out = public(row, now)
    out["transitions"] = [
        dict(r._mapping)
        for r in conn.execute(
            select(transitions).where(transitions.c.vm_id == vm_id).order_by(transitions.c.id)
        )
    ]
    hist = conn.execute(
        select(heartbeats)
        .where(heartbeats.c.vm_id == vm_id)
        .order_by(heartbeats.c.id.desc())
        .limit(history)
    ).all()
    out["heartbeats"] = [dict(r._mapping) for r in reversed(hist)]
    out["instructions"] = [
        dict(r._mapping)
        for r in conn.execute(
            select(instructions).where(instructions.c.vm_id == vm_id).order_by(instructions.c.id)
        )
    ]
    return out
