"""The VM registry: enrolment, registration, credentials, heartbeats, instructions, halting.

Every function takes an open transaction (``Connection`` from ``engine.begin()``) and the current
time, and raises ``ManagerRefused(status, detail)`` for anything the caller must be told.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, Dict, List, Mapping, Optional

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection, Row

from ..errors import ManagerRefused
from . import auth
from .db import enrolments, heartbeats, instructions, transitions, vms
from .settings import Settings
from .states import FROM_HEARTBEAT, VmState, allowed

log = logging.getLogger("vmagent.manager.fleet")
ENROLLED = ("site", "ce", "image", "running_pod", "vo")
PRUNE_EVERY = 50  # heartbeats between two prunings of one VM's history
CONTROL = {code: f"\\x{code:02x}" for code in [*range(32), 127]}

_has_pending = (
    select(instructions.c.id)
    .where(instructions.c.vm_id == vms.c.id, instructions.c.acked_at.is_(None))
    .exists()
    .label("has_pending")
)
_vm_auth = select(
    vms.c.id,
    vms.c.instance_id,
    vms.c.token_hash,
    vms.c.token_expires_at,
    vms.c.revoked_at,
    vms.c.state,
    vms.c.running_pod,
    vms.c.vo,
    vms.c.total_cores,
    vms.c.total_memory_mb,
    _has_pending,
).where(vms.c.id == bindparam("vm_id"))
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


def printable(text: str) -> str:
    """``text`` with control characters escaped, so that what a VM sends cannot split a log line."""
    return text.translate(CONTROL)


# --- credentials ---------------------------------------------------------------------------------


def kind_of(conn: Connection, settings: Settings, token: Optional[str], now: float) -> str:
    """``admin``, ``vm``, ``enrolment`` or raise 401: what a presented token is, for refusals."""
    if token is None:
        raise ManagerRefused(401, "no credential: send 'Authorization: Bearer <token>'")
    digest = auth.digest(token)
    if auth.same(settings.admin_token_hash, digest):
        return "admin"
    if conn.execute(select(vms.c.id).where(vms.c.token_hash == digest)).first():
        return "vm"
    if conn.execute(
        select(enrolments.c.token_hash).where(enrolments.c.token_hash == digest)
    ).first():
        return "enrolment"
    raise ManagerRefused(401, "unknown credential")


def require_admin(conn: Connection, settings: Settings, token: Optional[str], now: float) -> None:
    kind = kind_of(conn, settings, token, now)
    if kind != "admin":
        raise ManagerRefused(403, f"this needs the admin credential, not a {kind} credential")


def authenticate_vm(
    conn: Connection, settings: Settings, vm_id: str, token: Optional[str], now: float
) -> Row:
    """The VM row for ``vm_id`` if ``token`` is that VM's own, valid credential."""
    if token is None:
        raise ManagerRefused(401, "no credential: send 'Authorization: Bearer <token>'")
    digest = auth.digest(token)
    row = conn.execute(_vm_auth, {"vm_id": vm_id}).first()
    if row is None or not auth.same(row.token_hash, digest):
        kind = kind_of(conn, settings, token, now)
        if kind == "vm":
            raise ManagerRefused(403, f"this credential belongs to another VM, not to {vm_id}")
        raise ManagerRefused(403, f"only VM {vm_id} itself may do this, not a {kind} credential")
    if row.revoked_at is not None:
        raise ManagerRefused(401, f"the credential of VM {vm_id} was revoked")
    if row.token_expires_at is not None and row.token_expires_at <= now:
        raise ManagerRefused(401, f"the credential of VM {vm_id} expired; register the VM again")
    return row


def enrol(conn: Connection, body: Mapping[str, Any], now: float) -> Dict[str, Any]:
    """A single-use enrolment token carrying the VM's site, ce, image, RunningPod and VO."""
    token = auth.new_token("enrolment")
    expires = now + float(body.get("ttl_seconds", 3600))
    conn.execute(
        insert(enrolments).values(
            token_hash=auth.digest(token),
            created_at=now,
            expires_at=expires,
            **{k: body.get(k, "") for k in ("site", "ce", "image", "running_pod", "vo")},
        )
    )
    return {"enrolment_token": token, "expires_at": expires}


def register(
    conn: Connection, settings: Settings, token: Optional[str], body: Mapping[str, Any], now: float
) -> Dict[str, Any]:
    """Create a VM in state New and issue its own credential (shown once, stored hashed)."""
    values = {
        k: body.get(k, "") for k in ("site", "ce", "image", "running_pod", "vo", "vmagent_version")
    }
    kind = kind_of(conn, settings, token, now)
    enrolment = None
    if kind == "enrolment":
        enrolment = conn.execute(
            select(enrolments).where(enrolments.c.token_hash == auth.digest(token or ""))
        ).one()
        if enrolment.used_at is not None:
            raise ManagerRefused(401, "this enrolment token was already used")
        if enrolment.expires_at <= now:
            raise ManagerRefused(401, "this enrolment token expired")
        values.update(_enrolled(enrolment, body))
    elif kind != "admin":
        raise ManagerRefused(
            403, "registration needs an enrolment or the admin credential, not a VM credential"
        )
    vm_id = "vm-" + secrets.token_hex(6)
    vm_token = auth.new_token("vm")
    conn.execute(
        insert(vms).values(
            id=vm_id,
            instance_id=body["instance_id"],
            hostname=body["hostname"],
            ip=body["ip"],
            total_cores=body["total_cores"],
            total_memory_mb=body["total_memory_mb"],
            state=VmState.NEW.value,
            state_reason="registered",
            state_since=now,
            registered_at=now,
            token_hash=auth.digest(vm_token),
            token_expires_at=now + settings.vm_token_ttl,
            **values,
        )
    )
    _record(conn, vm_id, None, VmState.NEW.value, f"registered with {kind} credential", now)
    log.info(
        "%s registered: instance %s, %s, %s cores, with %s credential",
        vm_id,
        body["instance_id"],
        printable(body["hostname"]),
        body["total_cores"],
        kind,
    )
    if enrolment is not None:
        updated = conn.execute(
            update(enrolments)
            .where(enrolments.c.token_hash == enrolment.token_hash, enrolments.c.used_at.is_(None))
            .values(used_at=now, vm_id=vm_id)
        )
        if updated.rowcount != 1:
            raise ManagerRefused(401, "this enrolment token was already used")
    return {"vm_id": vm_id, "token": vm_token, "heartbeat_period": settings.heartbeat_period}


def _enrolled(enrolment: Row, body: Mapping[str, Any]) -> Dict[str, str]:
    """What the operator fixed at enrolment; a registration body naming something else is refused."""
    fixed = {k: getattr(enrolment, k) for k in ENROLLED if getattr(enrolment, k)}
    for key, value in fixed.items():
        if body.get(key) and body[key] != value:
            raise ManagerRefused(
                403,
                f"invalid VM registration: {key}: the enrolment fixed {value!r}; "
                f"this token cannot register {body[key]!r}",
            )
    return fixed


def revoke(conn: Connection, vm_id: str, now: float) -> None:
    if conn.execute(update(vms).where(vms.c.id == vm_id).values(revoked_at=now)).rowcount != 1:
        raise ManagerRefused(404, f"no VM {vm_id}")
    log.warning("%s: credential revoked", vm_id)


# --- state machine -------------------------------------------------------------------------------


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
    _record(conn, vm_id, current, target, reason, now)
    log.info("%s: %s -> %s: %s", vm_id, current, target, printable(reason))
    return True


def _record(
    conn: Connection, vm_id: str, current: Optional[str], target: str, reason: str, now: float
) -> None:
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


# --- heartbeats and instructions ----------------------------------------------------------------


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
