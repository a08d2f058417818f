"""Who a VM is: enrolment tokens, registration, the VMs' own credentials and their revocation.

Every function takes an open transaction (``Connection`` from ``engine.begin()``) and the current
time, and raises ``ManagerRefused(status, detail)`` for anything the caller must be told.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, Dict, Mapping, Optional

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection, Row

from ..errors import ManagerRefused
from . import auth
from .db import enrolments, instructions, vms
from .fleet import printable, record
from .settings import Settings
from .states import VmState

log = logging.getLogger("vmagent.manager.registry")
ENROLLED = ("site", "ce", "image", "running_pod", "vo")

# The credential lookup also says whether instructions wait, sparing the common heartbeat a query.
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
    record(conn, vm_id, None, VmState.NEW.value, f"registered with {kind} credential", now)
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
