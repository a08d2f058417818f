"""Who a VM is: enrolment tokens, registration, the VMs' own credentials and their revocation.

An enrolment token registers ``uses`` VMs (one by default) until it expires or is revoked; each VM
gets its own credential. A token of several uses is for vacuum platforms, which give every VM of a
machinetype the same user data: it must fix the site and the RunningPod or VO, so that a copy
read from one VM cannot register VMs that claim another community's payloads.

Every function takes an open transaction (``Connection`` from ``engine.begin()``) and the current
time, and raises ``ManagerRefused(status, detail)`` for anything the caller must be told.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any, Dict, List, Mapping, Optional

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
ID_LENGTH = 12  # an enrolment's id: the start of its token's digest, safe to show and log
ID_PATTERN = re.compile(r"^[0-9a-f]{12,64}$")

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
    """An enrolment token for ``uses`` VMs (1) carrying their site, ce, image, RunningPod and VO."""
    token = auth.new_token("enrolment")
    expires = now + float(body.get("ttl_seconds", 3600))
    uses = int(body.get("uses", 1))
    fixed = {k: body.get(k, "") for k in ENROLLED}
    if uses > 1 and not (fixed["site"] and (fixed["running_pod"] or fixed["vo"])):
        raise ManagerRefused(
            422,
            "invalid enrolment request: uses: a token for several VMs must fix site and "
            "running_pod or vo, so that a copied token cannot claim other communities' payloads",
        )
    digest = auth.digest(token)
    conn.execute(
        insert(enrolments).values(
            token_hash=digest,
            created_at=now,
            expires_at=expires,
            max_uses=uses,
            uses=0,
            **fixed,
        )
    )
    return {"enrolment_token": token, "id": digest[:ID_LENGTH], "expires_at": expires, "uses": uses}


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
        _usable(enrolment, now)
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
        _count_use(conn, enrolment, vm_id, now)
    return {"vm_id": vm_id, "token": vm_token, "heartbeat_period": settings.heartbeat_period}


def _usable(enrolment: Row, now: float) -> None:
    """Refuse a revoked, expired or used-up enrolment token."""
    if enrolment.revoked_at is not None:
        raise ManagerRefused(401, "this enrolment token was revoked")
    if enrolment.expires_at <= now:
        raise ManagerRefused(401, "this enrolment token expired")
    if enrolment.uses >= enrolment.max_uses:
        raise ManagerRefused(401, _used_up(enrolment.max_uses))


def _count_use(conn: Connection, enrolment: Row, vm_id: str, now: float) -> None:
    """One more registration, in the same statement that checks the limit (no two can race past it)."""
    c = enrolments.c
    updated = conn.execute(
        update(enrolments)
        .where(c.token_hash == enrolment.token_hash, c.uses < c.max_uses, c.revoked_at.is_(None))
        .values(uses=c.uses + 1, used_at=now, vm_id=vm_id)
    )
    if updated.rowcount != 1:
        raise ManagerRefused(401, _used_up(enrolment.max_uses))


def _used_up(max_uses: int) -> str:
    if max_uses == 1:
        return "this enrolment token was already used"
    return f"this enrolment token already registered its {max_uses} VMs"


def enrolments_table(conn: Connection, now: float) -> List[Dict[str, Any]]:
    """Every enrolment token (its id, never the token), newest first, with its state."""
    rows = conn.execute(select(enrolments).order_by(enrolments.c.created_at.desc())).all()
    return [_listed(row, now) for row in rows]


def _listed(row: Row, now: float) -> Dict[str, Any]:
    state = "active"
    if row.revoked_at is not None:
        state = "revoked"
    elif row.uses >= row.max_uses:
        state = "used"
    elif row.expires_at <= now:
        state = "expired"
    keys = ENROLLED + ("created_at", "expires_at", "uses", "max_uses", "revoked_at", "vm_id")
    return {"id": row.token_hash[:ID_LENGTH], "state": state, **{k: getattr(row, k) for k in keys}}


def revoke_enrolment(conn: Connection, enrolment_id: str, now: float) -> None:
    """No more registrations with the token whose id (a prefix of its digest) is ``enrolment_id``."""
    c = enrolments.c
    if not ID_PATTERN.match(enrolment_id):
        raise ManagerRefused(404, f"no enrolment {enrolment_id}")
    found = conn.execute(select(c.token_hash).where(c.token_hash.startswith(enrolment_id))).all()
    if len(found) != 1:
        raise ManagerRefused(404, f"no enrolment {enrolment_id}")
    conn.execute(
        update(enrolments)
        .where(c.token_hash == found[0].token_hash, c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    log.warning("enrolment %s: revoked", enrolment_id)


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
