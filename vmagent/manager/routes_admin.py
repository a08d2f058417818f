"""Routes for operators, with the admin credential: enrolment, VM table, instructions, queue, accounting."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from . import accounting, bodies, fleet, inventory, queue, registry, sweeper
from .states import VmState
from .web import (
    ERRORS,
    NO_NUL,
    ManagerDep,
    PayloadId,
    TokenDep,
    VmId,
    body_doc,
    json,
    read_body,
    read_payloads,
    valid,
)

router = APIRouter(prefix="/api/v1", tags=["admin"], responses=ERRORS)
StateName = Literal["new", "submitted", "running", "draining", "halted", "stalled", "error"]
PayloadState = Literal["queued", "leased", "done", "failed", "killed", "lost"]
Str = Annotated[Optional[str], Query(max_length=256, pattern=NO_NUL)]
Offset = Annotated[int, Query(ge=0, le=10**9)]
Time = Annotated[Optional[float], Query(ge=0, le=1e11, description="UNIX seconds")]


@router.post(
    "/enrolments",
    status_code=201,
    openapi_extra=body_doc("enrolment"),
    summary="A short-lived enrolment token for one new VM (or for uses VMs of a vacuum platform)",
)
async def enrol(request: Request, m: ManagerDep, tok: TokenDep) -> Response:
    doc = await read_body(request, "enrolment", m.settings.max_body_bytes)
    now = m.clock.time()
    with m.engine.begin() as conn:
        registry.require_admin(conn, m.settings, tok, now)
        answer = registry.enrol(conn, bodies.with_defaults("enrolment", valid(doc)), now)
    return json(answer, 201)


@router.get("/enrolments", summary="Every enrolment token (by id, never the token) with its uses")
def enrolments(m: ManagerDep, tok: TokenDep) -> Response:
    now = m.clock.time()
    with m.engine.begin() as conn:
        registry.require_admin(conn, m.settings, tok, now)
        return json({"enrolments": registry.enrolments_table(conn, now)})


@router.post(
    "/enrolments/{enrolment_id}/revoke",
    summary="Refuse further registrations with an enrolment token (its VMs keep their credentials)",
)
def revoke_enrolment(
    m: ManagerDep, tok: TokenDep, enrolment_id: Annotated[str, Path(max_length=64)]
) -> Response:
    now = m.clock.time()
    with m.engine.begin() as conn:
        registry.require_admin(conn, m.settings, tok, now)
        registry.revoke_enrolment(conn, enrolment_id, now)
    return json({})


@router.get("/vms", summary="The VM table, newest first, filtered and paged")
def vms(
    m: ManagerDep,
    tok: TokenDep,
    state: Optional[StateName] = None,
    image: Str = None,
    running_pod: Str = None,
    ce: Str = None,
    site: Str = None,
    vo: Str = None,
    q: Str = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Offset = 0,
) -> Response:
    now = m.clock.time()
    filters = {
        "state": state,
        "image": image,
        "running_pod": running_pod,
        "ce": ce,
        "site": site,
        "vo": vo,
        "q": q,
    }
    with m.engine.begin() as conn:
        registry.require_admin(conn, m.settings, tok, now)
        return json(inventory.table(conn, filters, limit, offset, now))


@router.get(
    "/vms/{vm_id}", summary="One VM with its transitions, recent heartbeats and instructions"
)
def vm(
    vm_id: VmId, m: ManagerDep, tok: TokenDep, history: Annotated[int, Query(ge=0, le=10000)] = 200
) -> Response:
    now = m.clock.time()
    with m.engine.begin() as conn:
        registry.require_admin(conn, m.settings, tok, now)
        return json(inventory.detail(conn, vm_id, now, history))


@router.post(
    "/vms/{vm_id}/instructions",
    status_code=201,
    openapi_extra=body_doc("instruction_request"),
    summary="Queue drain, halt or shutdown_at for a VM; delivered in its heartbeat answers until acked",
)
async def instruct(vm_id: VmId, request: Request, m: ManagerDep, tok: TokenDep) -> Response:
    doc = await read_body(request, "instruction_request", m.settings.max_body_bytes)
    now = m.clock.time()
    with m.engine.begin() as conn:
        registry.require_admin(conn, m.settings, tok, now)
        return json({"id": fleet.instruct(conn, vm_id, valid(doc), now)}, 201)


@router.post(
    "/vms/{vm_id}/revoke", summary="Revoke a VM's credential: it can no longer heartbeat or claim"
)
def revoke(vm_id: VmId, m: ManagerDep, tok: TokenDep) -> Response:
    now = m.clock.time()
    with m.engine.begin() as conn:
        registry.require_admin(conn, m.settings, tok, now)
        registry.revoke(conn, vm_id, now)
    return json({})


@router.post(
    "/vms/{vm_id}/error", summary="Mark a VM as in error (operator's judgement), with a reason"
)
def mark_error(
    vm_id: VmId,
    m: ManagerDep,
    tok: TokenDep,
    reason: Annotated[str, Query(max_length=1000, pattern=NO_NUL)] = "marked by the operator",
) -> Response:
    now = m.clock.time()
    with m.engine.begin() as conn:
        registry.require_admin(conn, m.settings, tok, now)
        fleet.force(conn, vm_id, VmState.ERROR.value, reason, now)
    return json({})


@router.post(
    "/payloads",
    status_code=201,
    openapi_extra=body_doc("payload", array_too=True),
    summary="Queue one payload (answers {id}) or a list of them (answers {ids})",
)
async def submit(request: Request, m: ManagerDep, tok: TokenDep) -> Response:
    found = await read_payloads(request, m.settings.max_body_bytes)
    now = m.clock.time()
    with m.engine.begin() as conn:
        registry.require_admin(conn, m.settings, tok, now)
        docs, many = valid(found)
        ids = queue.submit(conn, [bodies.with_defaults("payload", d) for d in docs], now)
    return json({"ids": ids} if many else {"id": ids[0]}, 201)


@router.get("/payloads", summary="The payload queue, newest first")
def payloads(
    m: ManagerDep,
    tok: TokenDep,
    state: Optional[PayloadState] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> Response:
    now = m.clock.time()
    with m.engine.begin() as conn:
        registry.require_admin(conn, m.settings, tok, now)
        return json(queue.listing(conn, state, limit, offset))


@router.get("/payloads/{payload_id}", summary="One payload with the result of every attempt")
def payload(payload_id: PayloadId, m: ManagerDep, tok: TokenDep) -> Response:
    now = m.clock.time()
    with m.engine.begin() as conn:
        registry.require_admin(conn, m.settings, tok, now)
        return json(queue.one(conn, payload_id))


@router.get(
    "/accounting", summary="VMs, payloads and core-hours per ce, site, image, RunningPod or VO"
)
def account(
    m: ManagerDep,
    tok: TokenDep,
    group_by: Literal["ce", "site", "image", "running_pod", "vo"] = "ce",
    since: Time = None,
    until: Time = None,
    bucket: Annotated[Optional[float], Query(gt=0, le=1e9)] = None,
) -> Response:
    now = m.clock.time()
    with m.engine.begin() as conn:
        registry.require_admin(conn, m.settings, tok, now)
        return json(accounting.report(conn, group_by, since, until, bucket, now))


@router.get(
    "/fleet/load", summary="Fleet load over time: mean load, heartbeating VMs, running payloads"
)
def fleet_load(
    m: ManagerDep,
    tok: TokenDep,
    since: Time = None,
    bucket: Annotated[float, Query(ge=1, le=1e7)] = 60,
) -> Response:
    now = m.clock.time()
    with m.engine.begin() as conn:
        registry.require_admin(conn, m.settings, tok, now)
        return json(accounting.fleet_load(conn, now - 3600 if since is None else since, bucket))


@router.post("/sweep", summary="Run the periodic sweep now (stalled VMs, expired leases)")
def sweep(m: ManagerDep, tok: TokenDep) -> Response:
    now = m.clock.time()
    with m.engine.begin() as conn:
        registry.require_admin(conn, m.settings, tok, now)
    return json(sweeper.sweep(m.engine, m.settings, now))
