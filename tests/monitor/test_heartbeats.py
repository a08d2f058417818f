"""Heartbeats on a fake clock against a real HTTP endpoint: period, jitter, outages, instructions."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from conftest import monitor_for, run_for

from vmagent import mjf
from vmagent.core import layout


def test_heartbeats_keep_a_jittered_period(tmp_path, endpoint, clock):
    """Heartbeats arrive every 60 s give or take the 10 % jitter, valid, with increasing sequence numbers."""
    monitor, _, _ = monitor_for(tmp_path, endpoint, clock)
    run_for(monitor, clock, 1200)
    times = [h["time"] for h in endpoint.heartbeats]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert 18 <= len(times) <= 23
    assert all(53 <= g <= 67 for g in gaps), gaps
    assert len({round(g) for g in gaps}) > 3, "no jitter"
    seqs = [h["seq"] for h in endpoint.heartbeats]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert endpoint.invalid == []


def test_hour_long_outage_no_halt_summary_and_recovery_within_a_period(tmp_path, endpoint, clock):
    """A 1-hour outage halts nothing; within one period after it a heartbeat arrives summarising all it missed."""
    monitor, action, config = monitor_for(tmp_path, endpoint, clock, buffer_size=10)
    run_for(monitor, clock, 120)
    endpoint.down = True
    outage_start = clock.time()
    run_for(monitor, clock, 3600)
    link = monitor.links[0]
    assert monitor.decision is None and action.calls == []
    assert len(link.missed) >= 55 and len(link.missed.kept) == 10  # bounded buffer, complete count
    endpoint.down = False
    back = clock.time()
    before = len(endpoint.heartbeats)
    run_for(monitor, clock, 61)
    first = endpoint.heartbeats[before]
    assert first["time"] - back <= 60
    missed = first["missed"]
    assert (
        missed["count"] >= 55 and outage_start <= missed["first"] < missed["last"] < first["time"]
    )
    assert endpoint.invalid == []
    run_for(monitor, clock, 70)
    assert "missed" not in endpoint.heartbeats[-1]


def test_backoff_grows_then_stays_at_the_period(tmp_path, endpoint, clock):
    """Retries after failures come after 5, 10, 20, 40 s (jittered), then never more than a period apart."""
    monitor, _, _ = monitor_for(tmp_path, endpoint, clock, endpoints=[{"name": "http"}])
    endpoint.down = True
    attempts = []
    for _ in range(600):
        before = monitor.seq
        monitor.tick()
        monitor.settle(60)
        if monitor.seq != before:
            attempts.append(clock.time())
        clock.advance(1)
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert 4 <= gaps[0] <= 7 and 9 <= gaps[1] <= 12 and 18 <= gaps[2] <= 23
    assert all(g <= 61 for g in gaps) and max(gaps) >= 54


def test_endpoint_period_is_followed_within_bounds(tmp_path, endpoint, clock, caplog):
    """A period answered by the manager is used; an absurd one is ignored with a warning."""
    monitor, _, _ = monitor_for(
        tmp_path, endpoint, clock, endpoints=[{"name": "http"}], jitter_fraction=0
    )
    endpoint.period = 300
    run_for(monitor, clock, 700)
    times = [h["time"] for h in endpoint.heartbeats]
    assert [b - a for a, b in zip(times, times[1:])] == [300, 300]
    endpoint.period = 0.001
    with caplog.at_level(logging.WARNING, logger="vmagent.monitor"):
        run_for(monitor, clock, 400)
    assert "ignoring heartbeat period 0.001" in caplog.text
    times = [h["time"] for h in endpoint.heartbeats]
    assert times[-1] - times[-2] == 60


def test_instructions_drain_shutdown_and_refusal(tmp_path, endpoint, clock, caplog):
    """drain writes the drain files, shutdown_at updates MJF, malformed ones are refused, all valid ones acked."""
    monitor, action, config = monitor_for(tmp_path, endpoint, clock)
    mjf.write_features(mjf.machine_dir(config), {"grace_secs": 300})
    endpoint.instructions = [
        {"id": 1, "action": "drain", "reason": "site downtime"},
        {"id": 2, "action": "shutdown_at", "shutdown_at": clock.time() + 5000},
        {"id": 3, "action": "rm -rf /"},
        {"action": "halt"},
        "halt",
        {"id": 5, "action": "shutdown_at"},
        {"id": 6, "action": "halt", "argv": ["sh"]},
    ]
    with caplog.at_level(logging.INFO, logger="vmagent.monitor"):
        run_for(monitor, clock, 5)
    assert Path(layout.drain_request(config)).read_text() == "site downtime\n"
    assert (tmp_path / "var/lib/dirac_drain").exists() and monitor.status() == "draining"
    assert mjf.read_features(mjf.machine_dir(config)).values["shutdowntime"] == int(
        clock.time() - 5 + 5000
    )
    assert monitor.decision is None and action.calls == []
    assert caplog.text.count("refused an instruction") == 5
    run_for(monitor, clock, 65)
    assert (
        endpoint.heartbeats[-1]["acks"] == [1, 2]
        and endpoint.heartbeats[-1]["status"] == "draining"
    )
    run_for(monitor, clock, 65)
    assert "acks" not in endpoint.heartbeats[-1]


def test_a_resent_instruction_is_carried_out_once(tmp_path, endpoint, clock, monkeypatch):
    """An instruction the endpoint repeats (its ack was lost) is acknowledged again but not redone."""
    monitor, _, config = monitor_for(tmp_path, endpoint, clock)
    done = []
    monkeypatch.setattr(mjf, "update_shutdowntime", lambda cfg, at, clock: done.append(at) or at)
    endpoint.sticky = [{"id": 7, "action": "shutdown_at", "shutdown_at": clock.time() + 9000}]
    run_for(monitor, clock, 200)
    assert len(done) == 1 and len(endpoint.heartbeats) >= 3
    assert all(h.get("acks") == [7] for h in endpoint.heartbeats[1:])


def test_answer_that_is_not_a_list_is_refused(tmp_path, endpoint, clock, caplog):
    """An instructions field that is not a list is refused and logged, and the monitor carries on."""
    monitor, _, config = monitor_for(tmp_path, endpoint, clock)
    endpoint.sticky = {"action": "halt"}  # type: ignore[assignment]
    endpoint.instructions = []

    def odd_answer(body, sample):
        return {"action": "halt", "id": 1}

    monitor.links[0].plugin.send = odd_answer
    with caplog.at_level(logging.ERROR, logger="vmagent.monitor"):
        run_for(monitor, clock, 5)
    assert "instructions must be a list" in caplog.text and monitor.decision is None


def test_shutdown_at_never_closer_than_grace(tmp_path, endpoint, clock):
    """A shutdown_at closer than grace_secs is announced at now + grace_secs."""
    monitor, _, config = monitor_for(tmp_path, endpoint, clock)
    mjf.write_features(mjf.machine_dir(config), {"grace_secs": 300})
    endpoint.instructions = [{"id": 4, "action": "shutdown_at", "shutdown_at": clock.time() + 5}]
    run_for(monitor, clock, 1)
    assert mjf.read_features(mjf.machine_dir(config)).values["shutdowntime"] == int(
        clock.time() - 1 + 300
    )


def test_halt_instruction_halts_once_with_final_reports(tmp_path, endpoint, clock):
    """A halt instruction ends in a final heartbeat, one halting notice, a shutdown_message and one halt action."""
    monitor, action, config = monitor_for(tmp_path, endpoint, clock)
    endpoint.instructions = [{"id": 9, "action": "halt", "reason": "by operator"}]
    decision = monitor.run()
    monitor.halt(decision)  # a second request changes nothing
    assert (
        decision.policy == "instruction" and decision.vacuum_code == 100 and len(action.calls) == 1
    )
    assert [h["status"] for h in endpoint.heartbeats] == ["running", "halting"]
    assert endpoint.heartbeats[-1]["acks"] == [9]
    assert len(endpoint.halting) == 1 and endpoint.halting[0]["vacuum_code"] == 100
    message = (tmp_path / "var/lib/vmagent/joboutputs/shutdown_message").read_text()
    assert message == "100 halt requested by http: by operator"
    assert (tmp_path / "var/lib/vmagent/shutdown_message").read_text() == message
    assert os.path.exists(layout.drain_request(config))


def test_outage_limit_halts_only_when_configured(tmp_path, endpoint, clock):
    """An unreachable endpoint halts the VM (code 700) only past a configured outage limit."""
    monitor, _, _ = monitor_for(tmp_path, endpoint, clock, outage_halt_seconds=1800)
    endpoint.down = True
    run_for(monitor, clock, 1790)
    assert monitor.decision is None
    run_for(monitor, clock, 20)
    assert monitor.decision.policy == "outage" and monitor.decision.vacuum_code == 700
    assert "http endpoint silent" in monitor.decision.reason


def test_a_broken_endpoint_plugin_does_not_stop_the_others(tmp_path, endpoint, clock):
    """An endpoint raising an unexpected error is treated as down; the http endpoint keeps its period."""
    monitor, _, _ = monitor_for(tmp_path, endpoint, clock)

    def broken(body, sample):
        raise KeyError("bug")

    monitor.links[1].plugin.send = broken
    run_for(monitor, clock, 600)
    assert monitor.decision is None and 9 <= len(endpoint.heartbeats) <= 12
    assert len(monitor.links[1].missed) >= 10
