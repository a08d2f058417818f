"""The monitor on a fake clock against a real HTTP endpoint, and halting real payloads."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

import pytest

from vmagent import mjf
from vmagent.clock import FakeClock, SystemClock
from vmagent.monitor.loop import Monitor
from vmagent.monitor.policies import Decision
from vmagent.pilot.command import write_atomic
from vmagent.pool_ce import state as pool_state
from vmagent.testing import make_config


class Recorder:
    """A halt action that only counts its calls."""

    def __init__(self) -> None:
        self.calls = []

    def __call__(self, decision) -> None:
        self.calls.append(decision)


def monitor_for(tmp_path, endpoint, clock, **settings):
    token = tmp_path / "etc/vmagent/token"
    token.parent.mkdir(parents=True, exist_ok=True)
    token.write_text("enrol-me")
    token.chmod(0o600)
    monitor = {"period_seconds": 60, "check_seconds": 10, "fizzle_seconds": None,
               "endpoints": [{"name": "http"}, {"name": "vac"}], "halt_action": "exit", **settings}
    config = make_config(tmp_path, [], monitor=monitor,
                         manager={"url": endpoint.url, "token_file": "/etc/vmagent/token", "timeout": 2})
    action = Recorder()
    return Monitor(config, clock=clock, rng=random.Random(7), halt_action=action), action, config


def run_for(monitor, clock, seconds):
    end = clock.time() + seconds
    while clock.time() < end and monitor.decision is None:
        monitor.tick()
        clock.advance(1)


def test_heartbeats_keep_a_jittered_period(tmp_path, endpoint, clock):
    """Heartbeats arrive every 60 s give or take the 10 % jitter, with increasing sequence numbers."""
    monitor, _, _ = monitor_for(tmp_path, endpoint, clock)
    run_for(monitor, clock, 1200)
    times = [h["time"] for h in endpoint.heartbeats]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert 18 <= len(times) <= 23
    assert all(53 <= g <= 67 for g in gaps), gaps
    assert len(set(gaps)) > 3, "no jitter"
    assert [h["seq"] for h in endpoint.heartbeats] == sorted(h["seq"] for h in endpoint.heartbeats)


def test_hour_long_outage_no_halt_summary_and_quick_recovery(tmp_path, endpoint, clock):
    """A 1-hour outage halts nothing, and within one period after it the missed heartbeats arrive summarised."""
    monitor, action, _ = monitor_for(tmp_path, endpoint, clock)
    run_for(monitor, clock, 120)
    endpoint.down = True
    outage_start = clock.time()
    run_for(monitor, clock, 3600)
    assert monitor.decision is None and action.calls == []
    endpoint.down = False
    back = clock.time()
    before = len(endpoint.heartbeats)
    run_for(monitor, clock, 70)
    first = endpoint.heartbeats[before]
    assert first["time"] - back <= 66
    assert first["missed"]["count"] >= 55 and first["missed"]["first"] >= outage_start
    assert "missed" not in endpoint.heartbeats[-1] or len(endpoint.heartbeats) == before + 1


def test_shutdown_at_never_closer_than_grace(tmp_path, endpoint, clock):
    """A shutdown_at closer than grace_secs is announced at now + grace_secs."""
    monitor, _, config = monitor_for(tmp_path, endpoint, clock)
    mjf.write_features(mjf.machine_dir(config), {"grace_secs": 300})
    endpoint.instructions = [{"id": 4, "action": "shutdown_at", "shutdown_at": clock.time() + 5}]
    run_for(monitor, clock, 1)
    assert mjf.read_features(mjf.machine_dir(config)).values["shutdowntime"] == int(clock.time() - 1 + 300)


def test_instructions_drain_shutdown_and_refusal(tmp_path, endpoint, clock):
    """drain writes the drain file, shutdown_at updates MJF, a malformed instruction is refused and ignored."""
    monitor, _, config = monitor_for(tmp_path, endpoint, clock)
    mjf.write_features(mjf.machine_dir(config), {"grace_secs": 300})
    endpoint.instructions = [{"id": 1, "action": "drain"}, {"id": 2, "action": "shutdown_at",
                                                            "shutdown_at": clock.time() + 5000},
                             {"id": 3, "action": "rm -rf /"}, {"action": "halt"}]
    run_for(monitor, clock, 5)
    assert os.path.exists(pool_state.drain_path(config)) and monitor.status == "draining"
    assert (tmp_path / "var/lib/dirac_drain").exists()
    assert mjf.read_features(mjf.machine_dir(config)).values["shutdowntime"] == int(clock.time() - 5 + 5000)
    assert monitor.decision is None
    run_for(monitor, clock, 65)
    assert endpoint.heartbeats[-1]["acks"] == [1, 2]


def test_halt_instruction_halts_once(tmp_path, endpoint, clock):
    """A halt instruction ends in one halting notice, a shutdown_message and one call of the halt action."""
    monitor, action, config = monitor_for(tmp_path, endpoint, clock)
    endpoint.instructions = [{"id": 9, "action": "halt", "reason": "by operator"}]
    decision = monitor.run()
    assert decision.vacuum_code == 100 and len(action.calls) == 1
    assert endpoint.halting[0]["vacuum_code"] == 100
    message = (tmp_path / "var/lib/vmagent/joboutputs/shutdown_message").read_text()
    assert message.startswith("100 ") and not message.endswith("\n")


STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); open('out', 'w').write('kept');"
            "time.sleep(60)")
POLITE = "import time; open('out', 'w').write('kept'); time.sleep(60)"


def test_halt_stops_real_payloads_and_keeps_output(tmp_path, endpoint):
    """Halting TERMs each payload group, kills the one ignoring TERM after the grace, keeps outputs."""
    monitor, action, config = monitor_for(tmp_path, endpoint, SystemClock(), payload_grace_seconds=1.0)
    running, procs = [], []
    for name, code in (("polite", POLITE), ("stubborn", STUBBORN)):
        workdir = tmp_path / name
        workdir.mkdir()
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=workdir, start_new_session=True)
        procs.append(proc)
        running.append({"id": name, "pid": proc.pid, "pgid": proc.pid, "workdir": str(workdir)})
    deadline = time.monotonic() + 10
    while not all((tmp_path / n / "out").exists() for n in ("polite", "stubborn")) and time.monotonic() < deadline:
        time.sleep(0.05)
    pool_state.save(config, {"running": running, "counts": {"done": 3}})
    started = time.monotonic()
    monitor.halt(Decision("no-payloads", "test", 200))
    assert all(p.wait(timeout=5) is not None for p in procs)
    assert procs[0].returncode == -15 and procs[1].returncode == -9
    assert time.monotonic() - started >= 1.0
    assert all((tmp_path / n / "out").read_text() == "kept" for n in ("polite", "stubborn"))
    assert (tmp_path / "var/lib/vmagent/joboutputs/shutdown_message").read_text() == "200 test"
    assert len(action.calls) == 1


@pytest.mark.parametrize("setting,value,state,expected", [
    ("lifetime_seconds", 1000, {}, "lifetime"),
    ("no_payloads_seconds", 300, {"counts": {"done": 2}, "last_started_at": 1.0}, "no-payloads"),
    ("fizzle_seconds", 600, {}, "fizzle"),
])
def test_policies_fire_in_time_and_not_before(tmp_path, endpoint, setting, value, state, expected):
    """Each halt policy fires once its time has come, and not a check earlier."""
    clock = FakeClock()
    monitor, _, config = monitor_for(tmp_path, endpoint, clock, check_seconds=1, **{setting: value})
    monitor.policies.boot_time = clock.time()
    pool_state.save(config, {"running": [], **state})
    run_for(monitor, clock, value - 5)
    assert monitor.decision is None
    run_for(monitor, clock, 20)
    assert monitor.decision is not None and monitor.decision.policy == expected


def test_mjf_shutdown_policy(tmp_path, endpoint, clock):
    """The MJF policy halts at shutdowntime minus grace_secs, not earlier."""
    monitor, _, config = monitor_for(tmp_path, endpoint, clock, check_seconds=1)
    mjf.write_features(mjf.machine_dir(config), {"shutdowntime": int(clock.time() + 1000), "grace_secs": 300})
    run_for(monitor, clock, 690)
    assert monitor.decision is None
    run_for(monitor, clock, 20)
    assert monitor.decision.policy == "mjf" and monitor.decision.vacuum_code == 100


def test_outage_limit_halts_only_when_configured(tmp_path, endpoint, clock):
    """An unreachable endpoint halts the VM only past a configured outage limit."""
    monitor, _, _ = monitor_for(tmp_path, endpoint, clock, outage_halt_seconds=1800, endpoints=[{"name": "http"}])
    endpoint.down = True
    run_for(monitor, clock, 1700)
    assert monitor.decision is None
    run_for(monitor, clock, 200)
    assert monitor.decision.policy == "outage"


def test_idle_cpu_policy(tmp_path, endpoint, monkeypatch):
    """Idle CPU halts only after the minimum uptime and a full idle period, and busy CPU resets it."""
    import vmagent.monitor.sampler as sampler

    clock = FakeClock()
    cpu = {"percent": 1.0}
    monkeypatch.setattr(sampler.psutil, "cpu_percent", lambda interval=None: cpu["percent"])
    monitor, _, _ = monitor_for(tmp_path, endpoint, clock, check_seconds=1, idle_cpu_percent=5,
                                idle_seconds=600, idle_min_uptime_seconds=300)
    monitor.policies.boot_time = clock.time()
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
    """A failed pilot pipeline halts the VM with vacuum code 500 (problem with the VM environment)."""
    monitor, _, config = monitor_for(tmp_path, endpoint, clock, check_seconds=1)
    write_atomic(config.path("pilot.status_file"), json.dumps(
        {"outcome": "failed", "steps": [{"outcome": "failed", "error": {"code": "node-unfit"}}]}), 0o644)
    run_for(monitor, clock, 3)
    assert monitor.decision.vacuum_code == 500 and "node-unfit" in monitor.decision.reason
