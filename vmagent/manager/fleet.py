"""The VMs' state machine: guarded transitions and their record, the operator's instructions, halting.

Every function takes an open transaction (``Connection`` from ``engine.begin()``) and the current
time, and raises ``ManagerRefused(status, detail)`` for anything the caller must be told.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Row

from ..errors import ManagerRefused
from .db import instructions, transitions, vms
from .settings import Settings
from .states import VmState, allowed

log = logging.getLogger("vmagent.manager.fleet")
CONTROL = {code: f"\\x{code:02x}" for code in [*range(32), 127]}


def printable(text: str) -> str:
    """``text`` with control characters escaped, so that what a VM sends cannot split a log line."""
    return text.translate(CONTROL)


def transition(
    conn: Connection, vm_id: str, current: str, target: str, reason: str, now: float
) -> bool:
    """Move a VM from ``current`` to ``target`` if allowed and nobody moved it meanwhile; record it."""
    if current == target or not allowed(current, target):
        return False
    moved = conn.execute(
        update(vms)
        .where(vms.c.id == vm_id, vms.c.state == current)
        .values(state=target, state_reason=reason, state_since=now)
    )
    if moved.rowcount != 1:
        return False
    record(conn, vm_id, current, target, reason, now)
    log.info("%s: %s -> %s: %s", vm_id, current, target, printable(reason))
    return True


def record(
    conn: Connection, vm_id: str, current: Optional[str], target: str, reason: str, now: float
) -> None:
    """Add a line to the VM's transition history (``current`` is None at registration)."""
    conn.execute(
        insert(transitions).values(
            vm_id=vm_id, at=now, from_state=current, to_state=target, reason=reason[:1000]
        )
    )


def force(conn: Connection, vm_id: str, target: str, reason: str, now: float) -> None:
    """An operator's transition: 409 when the state machine does not allow it."""
    row = conn.execute(select(vms.c.state).where(vms.c.id == vm_id)).first()
    if row is None:
        raise ManagerRefused(404, f"no VM {vm_id}")
    if not transition(conn, vm_id, row.state, target, reason, now) and row.state != target:
        raise ManagerRefused(409, f"VM {vm_id} cannot go from {row.state} to {target}")


def instruct(conn: Connection, vm_id: str, body: Mapping[str, Any], now: float) -> int:
    """Queue an instruction for a VM; a drain also moves the VM to Draining."""
    row = conn.execute(select(vms.c.state).where(vms.c.id == vm_id)).first()
    if row is None:
        raise ManagerRefused(404, f"no VM {vm_id}")
    if row.state == VmState.HALTED.value:
        raise ManagerRefused(409, f"VM {vm_id} is halted; it takes no more instructions")
    reason = body.get("reason") or f"{body['action']} requested by the operator"
    new_id = conn.execute(
        insert(instructions)
        .values(
            vm_id=vm_id,
            action=body["action"],
            shutdown_at=body.get("shutdown_at"),
            reason=body.get("reason", ""),
            created_at=now,
        )
        .returning(instructions.c.id)
    ).scalar_one()
    log.info("%s: instruction %s queued: %s (%s)", vm_id, new_id, body["action"], printable(reason))
    if body["action"] == "drain":
        transition(conn, vm_id, row.state, VmState.DRAINING.value, reason, now)
    return int(new_id)


def halting(
    conn: Connection, settings: Settings, vm: Row, body: Mapping[str, Any], now: float
) -> None:
    """The VM is going away: Halted, with its vacuum code; its unfinished payloads go back to the queue."""
    from .queue import release_vm

    if vm.state != VmState.HALTED.value:
        transition(
            conn,
            vm.id,
            vm.state,
            VmState.HALTED.value,
            f"halting ({body.get('vacuum_code', 200)}): {body['reason']}",
            now,
        )
    conn.execute(
        update(vms)
        .where(vms.c.id == vm.id)
        .values(vacuum_code=body.get("vacuum_code"), halt_message=body.get("message", ""))
    )
    release_vm(conn, settings, vm.id, now, "VM halted")
