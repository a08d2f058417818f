"""Halting with real payload processes: TERM to each group, grace, KILL for the stubborn, outputs kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
from conftest import monitor_for

from vmagent.clock import SystemClock
from vmagent.monitor.halt import stop_payloads
from vmagent.pool_ce import state as pool_state

# each payload writes its output, starts a grandchild in its own process group, and waits
POLITE = (
    "import subprocess, sys, time; open('out', 'w').write('kept');"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
)
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); open('out', 'w').write('kept');"
    "time.sleep(60)"
)


def start_payload(tmp_path, name, code):
    """A real payload in its own session, as the slot manager starts them, and its state-file entry."""
    workdir = tmp_path / "scratch" / name
    workdir.mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=workdir, start_new_session=True)
    deadline = time.monotonic() + 20
    while not (workdir / "out").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    entry = {
        "id": name,
        "pid": proc.pid,
        "pgid": proc.pid,
        "create_time": psutil.Process(proc.pid).create_time(),
        "workdir": str(workdir),
        "cores": 1,
        "started_at": time.time(),
    }
    return proc, entry


def group_members(pgid):
    """Live (non-zombie) processes of a process group."""
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.info["pid"]) == pgid:
                found.append(proc.info["pid"])
        except (OSError, psutil.Error):
            continue
    return found


def test_halt_instruction_stops_real_payloads_and_keeps_outputs(tmp_path, endpoint):
    """A halt instruction TERMs each payload group, KILLs the one ignoring TERM after the grace, keeps outputs,
    writes shutdown_message, reports and calls the halt action once."""
    monitor, action, config = monitor_for(
        tmp_path, endpoint, SystemClock(), payload_grace_seconds=1.5
    )
    polite, polite_entry = start_payload(tmp_path, "polite", POLITE)
    stubborn, stubborn_entry = start_payload(tmp_path, "stubborn", STUBBORN)
    assert len(group_members(polite.pid)) == 2  # the payload and its grandchild
    pool_state.save(
        config,
        {
            "running": [polite_entry, stubborn_entry],
            "counts": {"done": 3},
            "total_cores": 2,
            "free_cores": 0,
            "total_memory_mb": 1000,
            "free_memory_mb": 0,
        },
    )
    endpoint.instructions = [{"id": 11, "action": "halt", "reason": "site downtime"}]
    started = time.monotonic()
    decision = monitor.run()
    took = time.monotonic() - started
    assert (
        polite.wait(timeout=10) == -signal.SIGTERM and stubborn.wait(timeout=10) == -signal.SIGKILL
    )
    assert group_members(polite.pid) == [] and group_members(stubborn.pid) == []
    assert took >= 1.5, "the stubborn payload had its grace"
    assert all(
        (tmp_path / "scratch" / n / "out").read_text() == "kept" for n in ("polite", "stubborn")
    )
    assert decision.vacuum_code == 100 and len(action.calls) == 1
    message = (tmp_path / "var/lib/vmagent/joboutputs/shutdown_message").read_text()
    assert message == "100 halt requested by http: site downtime"
    final = endpoint.heartbeats[-1]
    assert final["status"] == "halting" and final["acks"] == [11] and endpoint.invalid == []
    assert endpoint.halting == [
        {
            "reason": "instruction: halt requested by http: site downtime",
            "vacuum_code": 100,
            "message": message,
        }
    ]


def test_entries_that_do_not_name_a_payload_are_never_signalled(tmp_path):
    """Group 0 or 1, the monitor's own group, and a pid now owned by another process are skipped."""
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        reused = {
            "id": "reused",
            "pid": bystander.pid,
            "pgid": bystander.pid,
            "create_time": psutil.Process(bystander.pid).create_time() - 3600,
        }
        entries = [
            {"id": "zero", "pgid": 0},
            {"id": "init", "pgid": 1},
            {"id": "self", "pgid": os.getpgid(0)},
            {"id": "text", "pgid": "12"},
            reused,
        ]
        how = stop_payloads(entries, 0.2, SystemClock())
        assert all(v.startswith("skipped") for v in how.values()) and len(how) == 5
        assert "belongs to another process" in how["reused"]
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_a_group_whose_leader_exited_is_still_stopped(tmp_path):
    """Members left behind by a payload whose leader exited are still TERMed through the group."""
    code = (
        "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        "print('started', flush=True)"
    )
    leader = subprocess.Popen(
        [sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    assert leader.stdout.readline().strip() == "started"
    leader.wait(timeout=10)
    leader.stdout.close()
    assert group_members(leader.pid)
    how = stop_payloads(
        [{"id": "orphans", "pid": leader.pid, "pgid": leader.pid, "create_time": 1.0}],
        5,
        SystemClock(),
    )
    assert how == {"orphans": "terminated"}
    deadline = time.monotonic() + 10
    while group_members(leader.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_members(leader.pid) == []
