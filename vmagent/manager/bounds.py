"""What a VM's claims and results may say: bounded by its enrolment, registration and leases.

A VM's credential proves which VM speaks, not that what it says is true. The manager therefore
takes the VO and RunningPod from the registration (a claim naming others is refused), free cores
and memory as the registered totals less what is leased to the VM, and counts a result's cores,
wall and CPU time no higher than its lease allows (the VM's own report is kept beside them).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

from sqlalchemy import select
from sqlalchemy.engine import Connection, Row

from ..errors import ManagerRefused
from .db import payloads

TAGS = ("running_pod", "vo")


def check_tags(vm: Row, request: Mapping[str, Any]) -> None:
    """Refuse a claim naming another RunningPod or VO than the VM was registered with."""
    for key in TAGS:
        asked = request.get(key)
        registered = getattr(vm, key) or ""
        if asked and asked != registered:
            raise ManagerRefused(
                403,
                f"VM {vm.id} is registered with {key} {registered!r}; "
                f"a claim cannot ask for {key} {asked!r}",
            )


def free_capacity(conn: Connection, vm: Row, request: Mapping[str, Any]) -> Tuple[int, int, int]:
    """``(free_cores, free_memory_mb, total_cores)`` the manager grants this claim.

    The registered totals less what is leased to the VM now (a peek leases nothing, so only the
    totals bound it); never more than the claim itself says.
    """
    total = min(request.get("total_cores") or vm.total_cores, vm.total_cores)
    busy_cores, busy_memory = 0, 0
    if not request.get("peek"):
        busy_cores, busy_memory = _leased(conn, vm)
    free_cores = max(0, min(request["free_cores"], vm.total_cores - busy_cores))
    free_memory = max(0, vm.total_memory_mb - busy_memory)
    if request.get("free_memory_mb") is not None:
        free_memory = min(free_memory, request["free_memory_mb"])
    return free_cores, free_memory, total


def _leased(conn: Connection, vm: Row) -> Tuple[int, int]:
    """Cores and memory of the payloads leased to ``vm``; a whole-node payload holds every core."""
    rows = conn.execute(
        select(payloads.c.cores, payloads.c.whole_node, payloads.c.memory_mb).where(
            payloads.c.vm_id == vm.id, payloads.c.state == "leased"
        )
    ).all()
    cores = sum(vm.total_cores if r.whole_node else r.cores for r in rows)
    return cores, sum(r.memory_mb for r in rows)


def bound_result(
    row: Row, vm: Row, doc: Mapping[str, Any], now: float, slack: float
) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """The ``cores``, ``wall_seconds`` and ``cpu_seconds`` to count for a result, and what was bounded.

    Bounds: the payload's cores (whole node: the VM's registered cores); the time since the lease
    began; CPU time no more than wall time times cores. ``slack`` seconds are tolerated for
    clock differences and reporting delays before a value counts as out of bounds.
    """
    adjusted: Dict[str, str] = {}
    leased_at = row.leased_at if row.leased_at is not None else now
    lease_age = max(0.0, now - leased_at)
    limit_cores = vm.total_cores if row.whole_node else row.cores
    cores = doc.get("cores") or limit_cores
    if cores > limit_cores:
        adjusted["cores"] = (
            f"{cores} is more than the {limit_cores} leased: counted as {limit_cores}"
        )
        cores = limit_cores
    _check_times(doc, leased_at, now, slack, adjusted)
    wall = _wall(doc)
    if wall > lease_age + slack:
        adjusted["wall_seconds"] = (
            f"{wall:g} s is longer than the {lease_age:g} s since the lease: "
            f"counted as {lease_age:g}"
        )
        wall = lease_age
    cpu: Optional[float] = doc.get("cpu_seconds")
    if cpu is not None and cpu > (wall + slack) * cores:
        adjusted["cpu_seconds"] = (
            f"{cpu:g} s is more than {wall:g} s of wall time on {cores} cores: "
            f"counted as {wall * cores:g}"
        )
        cpu = wall * cores
    return {"cores": cores, "wall_seconds": wall, "cpu_seconds": cpu}, adjusted


def _wall(doc: Mapping[str, Any]) -> float:
    wall = doc.get("wall_seconds")
    if wall is None and doc.get("started_at") is not None and doc.get("finished_at") is not None:
        wall = doc["finished_at"] - doc["started_at"]
    return max(0.0, float(wall or 0.0))


def _check_times(
    doc: Mapping[str, Any], leased_at: float, now: float, slack: float, adjusted: Dict[str, str]
) -> None:
    started, finished = doc.get("started_at"), doc.get("finished_at")
    if started is not None and not leased_at - slack <= started <= now + slack:
        adjusted["started_at"] = f"{started:g} is outside the lease window [{leased_at:g}, {now:g}]"
    if finished is not None and not leased_at - slack <= finished <= now + slack:
        adjusted["finished_at"] = (
            f"{finished:g} is outside the lease window [{leased_at:g}, {now:g}]"
        )
    elif finished is not None and started is not None and finished < started:
        adjusted["finished_at"] = f"{finished:g} is before started_at {started:g}"
