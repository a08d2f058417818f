"""Every halt policy fires when its time has come and not a check earlier; vacuum codes come from all slots."""

from __future__ import annotations

import json
import random

import pytest
from conftest import monitor_for, run_for

from vmagent import mjf
from vmagent.core.files import write_atomic
from vmagent.monitor.policies import Policies, vm_vacuum_code
from vmagent.pool_ce import state as pool_state


def ticks_until_decision(monitor, clock, seconds):
    """Run up to ``seconds`` and return how many virtual seconds passed before the decision (or None)."""
    start = clock.time()
    run_for(monitor, clock, seconds)
    return None if monitor.decision is None else clock.time() - start


def test_lifetime_fires_at_the_lifetime_and_not_before(tmp_path, endpoint, clock):
    """The strict lifetime halts with code 100 once boot + lifetime is reached."""
    monitor, _, _ = monitor_for(tmp_path, endpoint, clock, check_seconds=1, lifetime_seconds=1000)
    run_for(monitor, clock, 995)
    assert monitor.decision is None
    run_for(monitor, clock, 10)
    assert monitor.decision.policy == "lifetime" and monitor.decision.vacuum_code == 100


def test_retire_jitter_spreads_a_fleet_before_its_lifetime(tmp_path, endpoint, clock):
    """With retire jitter each VM retires at its own time, within the jitter before the lifetime."""
    times = []
    for seed in range(6):
        monitor, _, _ = monitor_for(
            tmp_path / str(seed),
            endpoint,
            clock,
            check_seconds=1,
            lifetime_seconds=3600,
            retire_jitter_seconds=600,
        )
        monitor.policies.retire_early = random.Random(seed).uniform(0, 600)
        start = clock.time()
        run_for(monitor, clock, 3700)
        times.append(clock.time() - start)
    assert all(3000 <= t <= 3601 for t in times) and len({round(t, -1) for t in times}) >= 4


def test_mjf_shutdowntime_minus_grace(tmp_path, endpoint, clock):
    """The MJF policy halts at shutdowntime minus grace_secs (code 100), not earlier, and follows a new time."""
    monitor, _, config = monitor_for(tmp_path, endpoint, clock, check_seconds=1)
    mjf.write_features(
        mjf.machine_dir(config), {"shutdowntime": int(clock.time() + 1000), "grace_secs": 300}
    )
    run_for(monitor, clock, 400)
    mjf.write_features(
        mjf.machine_dir(config), {"shutdowntime": int(clock.time() + 1000)}
    )  # moved later
    run_for(monitor, clock, 690)
    assert monitor.decision is None
    run_for(monitor, clock, 20)
    assert monitor.decision.policy == "mjf" and monitor.decision.vacuum_code == 100
    assert endpoint.heartbeats[-1]["remaining_seconds"] <= 400


def test_mjf_policy_can_be_switched_off(tmp_path, endpoint, clock):
    """With mjf_shutdown false a past shutdowntime halts nothing."""
    monitor, _, config = monitor_for(tmp_path, endpoint, clock, check_seconds=1, mjf_shutdown=False)
    mjf.write_features(mjf.machine_dir(config), {"shutdowntime": int(clock.time() - 10)})
    run_for(monitor, clock, 100)
    assert monitor.decision is None


def test_fizzle_when_no_work_comes(tmp_path, endpoint, clock):
    """No payload within fizzle_seconds of boot halts with 300; not before."""
    monitor, _, config = monitor_for(tmp_path, endpoint, clock, check_seconds=1, fizzle_seconds=600)
    pool_state.save(config, {"running": [], "counts": {}, "last_started_at": None})
    assert ticks_until_decision(monitor, clock, 595) is None
    run_for(monitor, clock, 10)
    assert monitor.decision.policy == "fizzle" and monitor.decision.vacuum_code == 300


def test_fizzle_waits_for_the_pipeline_and_spares_a_vm_that_worked(tmp_path, endpoint, clock):
    """Fizzle never fires while the pipeline runs, counts from its end, and never once a payload started."""
    monitor, _, config = monitor_for(tmp_path, endpoint, clock, check_seconds=1, fizzle_seconds=600)
    status = config.path("pilot.status_file")
    write_atomic(status, json.dumps({"outcome": "running", "steps": []}), 0o644)
    run_for(monitor, clock, 900)
    assert monitor.decision is None
    write_atomic(
        status, json.dumps({"outcome": "done", "finished": clock.time(), "steps": []}), 0o644
    )
    run_for(monitor, clock, 590)
    assert monitor.decision is None
    pool_state.save(config, {"running": [], "counts": {"done": 1}, "last_started_at": clock.time()})
    run_for(monitor, clock, 600)
    assert monitor.decision is None


def test_no_payloads_nor_pilots_for_a_period(tmp_path, endpoint, clock):
    """Once work ran, an empty VM halts after no_payloads_seconds with the code of all its slots."""
    monitor, _, config = monitor_for(
        tmp_path, endpoint, clock, check_seconds=1, no_payloads_seconds=300
    )
    pool_state.save(
        config,
        {
            "running": [{"id": "p1", "pid": 0, "pgid": 0}],
            "counts": {},
            "last_started_at": clock.time(),
        },
    )
    run_for(monitor, clock, 1000)
    assert monitor.decision is None, "a running payload keeps the VM"
    pool_state.save(
        config, {"running": [], "counts": {"done": 3, "failed": 1}, "last_started_at": clock.time()}
    )
    run_for(monitor, clock, 295)
    assert monitor.decision is None
    run_for(monitor, clock, 10)
    assert monitor.decision.policy == "no-payloads" and monitor.decision.vacuum_code == 200


def test_no_payloads_counts_pilots(tmp_path, endpoint, clock):
    """In pilots mode a running pilot keeps the VM; once all pilots retired the VM halts with their code."""
    monitor, _, config = monitor_for(
        tmp_path, endpoint, clock, check_seconds=1, no_payloads_seconds=300
    )
    pilot = {
        "id": "pilot-0-1",
        "pid": 0,
        "pgid": 0,
        "payload": {"kind": "pilot"},
        "started_at": clock.time(),
    }
    pool_state.save(
        config,
        {
            "mode": "pilots",
            "running": [pilot],
            "counts": {},
            "vacuum_codes": [],
            "last_started_at": clock.time(),
        },
    )
    run_for(monitor, clock, 600)
    assert monitor.decision is None
    pool_state.save(
        config,
        {
            "mode": "pilots",
            "running": [],
            "counts": {"done": 2},
            "vacuum_codes": [300, 300, 700],
            "last_started_at": clock.time() - 600,
        },
    )
    run_for(monitor, clock, 295)
    assert monitor.decision is None
    run_for(monitor, clock, 10)
    assert monitor.decision.vacuum_code == 300 and monitor.decision.policy == "no-payloads"


def test_idle_cpu_after_minimum_uptime(tmp_path, endpoint, clock, monkeypatch):
    """Idle CPU halts only after the minimum uptime and a full idle period; a busy moment resets it."""
    import vmagent.monitor.sampler as sampler

    cpu = {"percent": 1.0}
    monkeypatch.setattr(
        sampler.psutil, "cpu_percent", lambda interval=None, percpu=False: [cpu["percent"]] * 2
    )
    monitor, _, _ = monitor_for(
        tmp_path,
        endpoint,
        clock,
        check_seconds=1,
        idle_cpu_percent=5,
        idle_seconds=600,
        idle_min_uptime_seconds=300,
    )
    run_for(monitor, clock, 850)  # idle from 300 s on: 550 s is not yet 600
    assert monitor.decision is None
    cpu["percent"] = 80.0
    run_for(monitor, clock, 5)
    cpu["percent"] = 1.0
    run_for(monitor, clock, 590)
    assert monitor.decision is None
    run_for(monitor, clock, 30)
    assert monitor.decision.policy == "idle-cpu" and monitor.decision.vacuum_code == 300


def test_failed_pipeline_halts_with_500(tmp_path, endpoint, clock):
    """A failed pilot pipeline halts the VM with vacuum code 500; a running one does not."""
    monitor, _, config = monitor_for(tmp_path, endpoint, clock, check_seconds=1)
    status = config.path("pilot.status_file")
    write_atomic(status, json.dumps({"outcome": "running", "steps": []}), 0o644)
    run_for(monitor, clock, 30)
    assert monitor.decision is None
    write_atomic(
        status,
        json.dumps(
            {"outcome": "failed", "steps": [{"outcome": "failed", "error": {"code": "node-unfit"}}]}
        ),
        0o644,
    )
    run_for(monitor, clock, 3)
    assert monitor.decision.vacuum_code == 500 and "node-unfit" in monitor.decision.reason


def test_endpoint_instruction_is_a_policy_too(tmp_path, endpoint, clock):
    """A halt instruction decides with code 100 at the first heartbeat that carries it, not before."""
    monitor, _, _ = monitor_for(tmp_path, endpoint, clock, check_seconds=1)
    run_for(monitor, clock, 30)
    endpoint.instructions = [{"id": 1, "action": "halt"}]
    run_for(monitor, clock, 20)
    assert monitor.decision is None
    run_for(monitor, clock, 60)
    assert monitor.decision.policy == "instruction" and monitor.decision.vacuum_code == 100


@pytest.mark.parametrize(
    "pool,pipeline,code",
    [
        ({}, "done", 300),
        ({"counts": {"done": 1, "failed": 5}}, "done", 200),
        ({"counts": {"failed": 2, "lost": 1}}, "done", 700),
        ({"vacuum_codes": [700, 300, 300]}, "done", 300),
        ({"vacuum_codes": [300, 700]}, "done", 700),
        ({"vacuum_codes": [300, 300, 300, 200]}, "done", 200),
        ({"vacuum_codes": [200]}, "failed", 500),
    ],
)
def test_vm_code_comes_from_all_slots(pool, pipeline, code):
    """The VM's vacuum code weighs every slot's result, whatever order they finished in."""
    assert vm_vacuum_code(pool, pipeline) == code
    if pool.get("vacuum_codes"):
        assert (
            vm_vacuum_code({"vacuum_codes": list(reversed(pool["vacuum_codes"]))}, pipeline) == code
        )


def test_retire_offset_is_drawn_within_the_jitter():
    """The random retire offset lies between zero and retire_jitter_seconds."""
    settings = {"retire_jitter_seconds": 900}
    offsets = [Policies(settings, 0.0, 0.0, random.Random(i)).retire_early for i in range(50)]
    assert all(0 <= o <= 900 for o in offsets) and max(offsets) - min(offsets) > 300
