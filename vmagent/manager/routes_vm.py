"""Routes a VM calls with its own credential: register, heartbeat, halting, claim, result."""

from __future__ import annotations

from typing import Any, Dict, Optional

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..errors import ManagerRefused
from . import bodies, fleet, heartbeats, queue, registry
from .web import (
    ERRORS,
    Manager,
    ManagerDep,
    PayloadId,
    TokenDep,
    VmId,
    body_doc,
    json,
    read_body,
    valid,
)

router = APIRouter(prefix="/api/v1", tags=["vm"], responses=ERRORS)


@router.post(
    "/register",
    status_code=201,
    openapi_extra=body_doc("register"),
    summary="Register a VM with an enrolment (or the admin) credential; answers the VM's own token",
)
async def register(request: Request, m: ManagerDep, tok: TokenDep) -> Response:
    doc = await read_body(request, "register", m.settings.max_body_bytes)
    now = m.clock.time()
    with m.engine.begin() as conn:
        registry.kind_of(conn, m.settings, tok, now)
        answer = registry.register(
            conn, m.settings, tok, bodies.with_defaults("register", valid(doc)), now
        )
    return json(answer, 201)


@router.post(
    "/vms/{vm_id}/heartbeat",
    openapi_extra=body_doc("heartbeat"),
    summary="One heartbeat; answers the instructions not yet acknowledged",
)
async def heartbeat(vm_id: VmId, request: Request, m: ManagerDep, tok: TokenDep) -> Response:
    doc = await read_body(request, "heartbeat", m.settings.max_heartbeat_bytes)
    # Inline on the event loop, also for PostgreSQL: measured faster than a thread hop per request
    # (bench/manager_load.py), since the work is short and CPU-bound on both databases.
    return json(_heartbeat(m, vm_id, tok, doc))


def _heartbeat(m: Manager, vm_id: str, tok: Optional[str], doc: Any) -> Dict[str, Any]:
    now = m.clock.time()
    with m.engine.begin() as conn:
        vm = registry.authenticate_vm(conn, m.settings, vm_id, tok, now)
        doc = valid(doc)
        if doc["instance_id"] != vm.instance_id:
            raise ManagerRefused(
                422,
                f"invalid heartbeat: instance_id: {doc['instance_id']!r} is not "
                f"the instance registered as {vm_id}",
            )
        return heartbeats.heartbeat(conn, m.settings, vm, doc, now)


@router.post(
    "/vms/{vm_id}/halting",
    openapi_extra=body_doc("halting"),
    summary="The VM declares it is going away, with a vacuum outcome code",
)
async def halting(vm_id: VmId, request: Request, m: ManagerDep, tok: TokenDep) -> Response:
    doc = await read_body(request, "halting", m.settings.max_body_bytes)
    now = m.clock.time()
    with m.engine.begin() as conn:
        vm = registry.authenticate_vm(conn, m.settings, vm_id, tok, now)
        fleet.halting(conn, m.settings, vm, bodies.with_defaults("halting", valid(doc)), now)
    return json({})


@router.post(
    "/vms/{vm_id}/claim",
    openapi_extra=body_doc("claim"),
    summary="Lease payloads that fit the VM's free cores, memory, remaining time and tags",
)
async def claim(vm_id: VmId, request: Request, m: ManagerDep, tok: TokenDep) -> Response:
    doc = await read_body(request, "claim", m.settings.max_body_bytes)
    now = m.clock.time()
    with m.engine.begin() as conn:
        vm = registry.authenticate_vm(conn, m.settings, vm_id, tok, now)
        leased = queue.claim(conn, m.settings, vm, bodies.with_defaults("claim", valid(doc)), now)
    return json({"payloads": leased})


@router.post(
    "/vms/{vm_id}/payloads/{payload_id}/result",
    openapi_extra=body_doc("result"),
    summary="How a leased payload ended",
)
async def result(
    vm_id: VmId, payload_id: PayloadId, request: Request, m: ManagerDep, tok: TokenDep
) -> Response:
    doc = await read_body(request, "result", m.settings.max_body_bytes)
    now = m.clock.time()
    with m.engine.begin() as conn:
        vm = registry.authenticate_vm(conn, m.settings, vm_id, tok, now)
        answer = queue.record_result(conn, m.settings, vm, payload_id, valid(doc), now)
    return json(answer)
