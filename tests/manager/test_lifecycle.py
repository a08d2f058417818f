"""The VM state machine, the sweeper, leases and heartbeat retention, driven with a fake clock."""

from __future__ import annotations

import time

import pytest

from vmagent.clock import FakeClock
from vmagent.errors import ManagerRefused
from vmagent.manager import auth, db, fleet, heartbeats, inventory, queue, registry, sweeper
from vmagent.manager.settings import Settings
from vmagent.manager.states import ALLOWED, VmState, allowed
from vmagent.manager.testing import heartbeat, new_vm


@pytest.fixture
def world(tmp_path):
    """An SQLite database, settings with short timings and a fake clock."""
    engine = db.make_engine(f"sqlite:///{tmp_path}/m.db")
    db.create_all(engine)
    settings = Settings(
        db_url="",
        admin_token_hash=auth.digest("adm"),
        stall_seconds=100,
        lease_seconds=50,
        max_attempts=2,
        history_per_vm=5,
        history_seconds=1000,
    )
    return engine, settings, FakeClock()


def _register(world, cores=4):
    engine, settings, clock = world
    with engine.begin() as conn:
        return registry.register(
            conn,
            settings,
            "adm",
            {
                "instance_id": "i-1",
                "hostname": "h",
                "ip": "1.1.1.1",
                "total_cores": cores,
                "total_memory_mb": 8000,
            },
            clock.time(),
        )


def _beat(world, vm, seq, status="running", **extra):
    engine, settings, clock = world
    with engine.begin() as conn:
        row = registry.authenticate_vm(conn, settings, vm["vm_id"], vm["token"], clock.time())
        return heartbeats.heartbeat(
            conn, settings, row, heartbeat("i-1", seq, status, **extra), clock.time()
        )


def _state(world, vm):
    with world[0].begin() as conn:
        return inventory.detail(conn, vm["vm_id"], world[2].time())


def test_halted_is_final_and_every_state_can_reach_halted():
    """Halted allows no way out; every other state may halt."""
    assert ALLOWED[VmState.HALTED] == set()
    assert all(allowed(s.value, "halted") for s in VmState if s is not VmState.HALTED)
    assert not allowed("draining", "running") and not allowed("halted", "running")


def test_silent_vm_is_stalled_by_the_sweep_and_recovers_on_heartbeat(world):
    """No heartbeat for longer than stall_seconds: Stalled with a reason; a heartbeat brings it back."""
    vm = _register(world)
    _beat(world, vm, 1)
    world[2].advance(101)
    assert sweeper.sweep(world[0], world[1], world[2].time())["stalled"] == 1
    detail = _state(world, vm)
    assert detail["state"] == "stalled" and "no heartbeat for 101 s" in detail["state_reason"]
    _beat(world, vm, 2)
    assert [t["to_state"] for t in _state(world, vm)["transitions"]] == [
        "new",
        "running",
        "stalled",
        "running",
    ]


def test_operator_cannot_force_a_forbidden_transition(world):
    """Marking a halted VM as in error is refused with 409."""
    vm = _register(world)
    engine, settings, clock = world
    with engine.begin() as conn:
        row = registry.authenticate_vm(conn, settings, vm["vm_id"], vm["token"], clock.time())
        fleet.halting(conn, settings, row, {"reason": "done", "vacuum_code": 200}, clock.time())
    with engine.begin() as conn, pytest.raises(ManagerRefused) as err:
        fleet.force(conn, vm["vm_id"], "error", "oops", clock.time())
    assert err.value.status == 409


def test_failed_pipeline_puts_the_vm_in_error(world):
    """A heartbeat whose pipeline failed moves the VM to Error, naming the error code."""
    vm = _register(world)
    _beat(world, vm, 1, "booting", pipeline={"outcome": "failed", "error_code": "node-unfit"})
    detail = _state(world, vm)
    assert detail["state"] == "error" and "node-unfit" in detail["state_reason"]


def test_expired_lease_is_requeued_then_lost_after_max_attempts(world):
    """A lease nobody renews is requeued by the sweep; after max_attempts the payload is lost."""
    engine, settings, clock = world
    vm = _register(world)
    with engine.begin() as conn:
        queue.submit(conn, [{"id": "p1", "command": ["true"]}], clock.time())
    for _attempt in (1, 2):
        with engine.begin() as conn:
            row = registry.authenticate_vm(conn, settings, vm["vm_id"], vm["token"], clock.time())
            assert [
                p["id"] for p in queue.claim(conn, settings, row, {"free_cores": 4}, clock.time())
            ] == ["p1"]
        clock.advance(51)
        assert sweeper.sweep(engine, settings, clock.time())["expired"] == 1
    with engine.begin() as conn:
        assert queue.one(conn, "p1")["state"] == "lost"


def test_heartbeat_renews_leases_of_running_payloads(world):
    """A payload id listed in heartbeats keeps its lease past the original expiry."""
    engine, settings, clock = world
    vm = _register(world)
    with engine.begin() as conn:
        queue.submit(conn, [{"id": "p1", "command": ["true"]}], clock.time())
        row = registry.authenticate_vm(conn, settings, vm["vm_id"], vm["token"], clock.time())
        queue.claim(conn, settings, row, {"free_cores": 4}, clock.time())
    for seq in range(1, 4):
        clock.advance(30)
        _beat(world, vm, seq, payloads={"running": 1, "ids": ["p1"]})
        sweeper.sweep(engine, settings, clock.time())
    with engine.begin() as conn:
        assert queue.one(conn, "p1")["state"] == "leased"


def test_whole_node_payload_needs_every_core_free(world):
    """A whole-node payload is only leased when all of the VM's cores are free."""
    engine, settings, clock = world
    vm = _register(world, cores=4)
    with engine.begin() as conn:
        queue.submit(conn, [{"id": "w", "command": ["true"], "whole_node": True}], clock.time())
        row = registry.authenticate_vm(conn, settings, vm["vm_id"], vm["token"], clock.time())
        assert queue.claim(conn, settings, row, {"free_cores": 3}, clock.time()) == []
        assert [
            p["id"] for p in queue.claim(conn, settings, row, {"free_cores": 4}, clock.time())
        ] == ["w"]


def test_heartbeat_history_is_pruned_to_the_retention_limit(world):
    """Only the newest history_per_vm heartbeats of a VM are kept after pruning."""
    vm = _register(world)
    for seq in range(1, 51):
        _beat(world, vm, seq)
    seqs = [h["seq"] for h in _state(world, vm)["heartbeats"]]
    assert seqs[0] > 40 and seqs[-1] == 50 and len(seqs) <= 5 + 10


def test_result_posted_twice_is_accepted_once(world):
    """Re-sending the same result (an answer lost on the way back) changes nothing."""
    engine, settings, clock = world
    vm = _register(world)
    with engine.begin() as conn:
        queue.submit(conn, [{"id": "p1", "command": ["true"]}], clock.time())
        row = registry.authenticate_vm(conn, settings, vm["vm_id"], vm["token"], clock.time())
        queue.claim(conn, settings, row, {"free_cores": 4}, clock.time())
    for _ in range(2):
        with engine.begin() as conn:
            queue.record_result(
                conn, settings, row, "p1", {"id": "p1", "outcome": "done"}, clock.time()
            )
    with engine.begin() as conn:
        assert len(queue.one(conn, "p1")["results"]) == 1


def test_served_manager_sweeps_silent_vms_to_stalled(start):
    """A real manager with --stall-after 1 marks a VM Stalled by itself once its heartbeats stop."""
    manager = start("sqlite", "--stall-after", "1", "--sweep-interval", "0.2")
    vm = new_vm(manager)
    vm["client"].heartbeat(vm["vm_id"], heartbeat(vm["instance_id"], 1))
    deadline = time.monotonic() + 30
    while manager.client().vm(vm["vm_id"])["state"] != "stalled" and time.monotonic() < deadline:
        time.sleep(0.2)
    detail = manager.client().vm(vm["vm_id"])
    assert detail["state"] == "stalled" and detail["transitions"][-1]["reason"].startswith(
        "no heartbeat for"
    )
