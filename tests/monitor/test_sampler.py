"""The sample of the VM and the heartbeat made of it, from a real slot manager state file and real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from vmagent import schemas
from vmagent.clock import FakeClock
from vmagent.core import layout
from vmagent.core.files import write_atomic
from vmagent.monitor.sampler import Sampler, heartbeat
from vmagent.pool_ce.state import save as pool_save
from vmagent.testing import make_config


def sampler_for(tmp_path, clock=None, **monitor):
    config = make_config(tmp_path, [], monitor={"stuck_seconds": 600, **monitor})
    clock = clock or FakeClock(time.time())
    return Sampler(config, clock, boot_time=clock.time() - 100), config, clock


def test_sample_of_an_idle_vm_makes_a_valid_heartbeat(tmp_path):
    """Without a slot manager the sample still has load, CPU per core, memory, disks and a valid heartbeat."""
    (tmp_path / "scratch").mkdir()
    sampler, config, clock = sampler_for(tmp_path)
    sample = sampler.take()
    assert len(sample["cpu_per_core"]) == psutil.cpu_count() and sample["uptime"] == 100
    assert sample["disk"]["scratch"]["total_mb"] > 0 and sample["slots"] is None
    body = heartbeat(sample, instance_id="i-test", seq=1, status="running", remaining=None)
    assert schemas.problems("heartbeat", body) == []
    assert body["disk"]["scratch_free_mb"] > 0 and body["memory"]["swap_total_mb"] >= 0
    assert "slots" not in body and "errors" not in body


def test_slots_pilots_and_stuck_pilots(tmp_path):
    """Slots busy/free come from the pool state; a pilot whose logs are silent past stuck_seconds is stuck."""
    sampler, config, clock = sampler_for(tmp_path)
    fresh, silent = tmp_path / "scratch/p0", tmp_path / "scratch/p1"
    for workdir in (fresh, silent):
        workdir.mkdir(parents=True)
        (workdir / "stdout").write_text("JobAgent cycle\n")
    old = clock.time() - 900
    os.utime(silent / "stdout", (old, old))
    me = psutil.Process()
    entries = [
        {
            "id": name,
            "pid": me.pid,
            "pgid": me.pid,
            "create_time": me.create_time(),
            "workdir": str(path),
            "started_at": old,
            "payload": {"kind": "pilot"},
        }
        for name, path in (("p0", fresh), ("p1", silent))
    ]
    pool_save(
        config,
        {
            "mode": "pilots",
            "pid": me.pid,
            "running": entries,
            "total_cores": 8,
            "free_cores": 2,
            "total_memory_mb": 16000,
            "free_memory_mb": 4000,
            "counts": {"done": 1},
            "vacuum_codes": [200, 999, "x"],
        },
    )
    sample = sampler.take()
    assert sample["slots"] == {
        "total_cores": 8,
        "free_cores": 2,
        "busy_cores": 6,
        "total_memory_mb": 16000,
        "free_memory_mb": 4000,
        "busy_memory_mb": 12000,
    }
    assert [(p["id"], p["stuck"], p["alive"]) for p in sample["pilots"]] == [
        ("p0", False, True),
        ("p1", True, True),
    ]
    assert 899 <= sample["pilots"][1]["log_age"] <= 901
    assert sample["pool"]["vacuum_codes"] == [200]
    body = heartbeat(sample, instance_id="i-test", seq=2, status="running", remaining=60.0)
    assert schemas.problems("heartbeat", body) == []
    assert body["pilots"] == {"running": 2, "stuck": 1} and body["errors"] == ["pilot-stuck:p1"]
    assert body["slots"]["free_cores"] == 2 and body["payloads"]["ids"] == ["p0", "p1"]


def test_a_reused_pid_is_not_a_live_payload(tmp_path):
    """A payload whose pid now belongs to a process started later counts as not alive."""
    sampler, config, _ = sampler_for(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        created = psutil.Process(other.pid).create_time()
        pool_save(
            config,
            {
                "running": [
                    {"id": "same", "pid": other.pid, "pgid": other.pid, "create_time": created},
                    {
                        "id": "reused",
                        "pid": other.pid,
                        "pgid": other.pid,
                        "create_time": created - 500,
                    },
                    {"id": "gone", "pid": 2**22 + 7, "pgid": 2**22 + 7},
                ]
            },
        )
        alive = {p["id"]: p["alive"] for p in sampler.take()["payloads"]}
        assert alive == {"same": True, "reused": False, "gone": False}
    finally:
        other.kill()
        other.wait()


def test_damaged_state_and_status_files_give_an_empty_pool(tmp_path):
    """A damaged pool state or pipeline status is read as nothing known, and the heartbeat stays valid."""
    sampler, config, _ = sampler_for(tmp_path)
    write_atomic(
        layout.pool_state(config),
        '{"version": 1, "running": "lots", "counts": [1], "free_cores": -3}',
        0o644,
    )
    write_atomic(config.path("pilot.status_file"), "[1, 2", 0o644)
    sample = sampler.take()
    assert (
        sample["payloads"] == []
        and sample["slots"] is None
        and sample["pipeline"]["outcome"] == "unknown"
    )
    body = heartbeat(sample, instance_id="i-test", seq=3, status="booting", remaining=None)
    assert schemas.problems("heartbeat", body) == []


def test_a_vanished_slot_manager_is_reported(tmp_path):
    """Running payloads in a state file whose slot manager is gone show up as an error code."""
    sampler, config, _ = sampler_for(tmp_path)
    pool_save(
        config, {"pid": 2**22 + 9, "running": [{"id": "a", "pid": 2**22 + 9, "pgid": 2**22 + 9}]}
    )
    body = heartbeat(sampler.take(), instance_id="i-test", seq=1, status="running", remaining=None)
    assert body["errors"] == ["slot-manager-gone"]
