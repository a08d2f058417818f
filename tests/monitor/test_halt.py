"""Halting with a real slot manager and real payloads: the monitor asks, the slot manager alone signals."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

from vmagent.clock import SystemClock
from vmagent.core import stop
from vmagent.monitor.loop import Monitor
from vmagent.monitor.policies import Decision
from vmagent.pool_ce import state as pool_state
from vmagent.testing import make_config, write_config

DEADLINE = 60
# blocks SIGTERM and learns who sent each one (si_pid), until a SIGKILL ends it
STUBBORN = """
import os, signal
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
with open('ready.tmp', 'w') as fh:
    fh.write(str(os.getpid()))
os.rename('ready.tmp', 'ready')
while True:
    info = signal.sigwaitinfo({signal.SIGTERM})
    with open('senders', 'a') as fh:
        fh.write(f'{info.si_signo} {info.si_pid}\\n')
"""


def sections(tmp_path):
    return {
        "slots": {
            "cores": 1,
            "memory_mb": 1000,
            "poll_seconds": 0.2,
            "wall_grace_seconds": 1.5,
            "memory_limit": "none",
        },
        "monitor": {"endpoints": [{"name": "log"}], "halt_action": "exit", "fizzle_seconds": None},
    }


def wait_for(predicate, what):
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_only_the_slot_manager_signals_payloads_when_the_monitor_halts(tmp_path, caplog):
    """The monitor's halt (halt action exit) asks a real slot manager to stop a real payload that
    blocks SIGTERM: every signal the payload receives comes from the slot manager, which then kills
    it after its grace and records it killed for the halt; the monitor waits for that, then halts."""
    cfg = write_config(str(tmp_path), [], **sections(tmp_path))
    spool = tmp_path / "var/spool/vmagent/incoming"
    spool.mkdir(parents=True)
    payload = {"id": "stubborn", "cores": 1, "command": [sys.executable, "-c", STUBBORN]}
    (spool / "stubborn.json").write_text(json.dumps(payload))
    log = tmp_path / "pool.log"
    with open(log, "wb") as out:
        slots = subprocess.Popen(
            [sys.executable, "-m", "vmagent", "-c", cfg, "pool", "run"],
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    workdir = tmp_path / "scratch/payloads/stubborn"
    try:
        pid = int(wait_for(lambda: _read(workdir / "ready"), "the payload to start"))
        config = make_config(str(tmp_path), [], **sections(tmp_path))
        monitor = Monitor(config, clock=SystemClock())
        caplog.set_level(logging.INFO, logger="vmagent.monitor")
        monitor.halt(Decision("instruction", "halt requested by test: site downtime", 100))
        assert slots.wait(DEADLINE) == 0, log.read_text()
    finally:
        if slots.poll() is None:
            slots.kill()
            slots.wait()
    senders = [line.split() for line in (workdir / "senders").read_text().splitlines()]
    assert senders, "the payload got no SIGTERM"
    assert all(int(who) == slots.pid for _, who in senders), (senders, slots.pid)
    assert not alive(pid)
    result = json.loads((tmp_path / "var/lib/vmagent/pool/results.jsonl").read_text())
    assert result["outcome"] == "killed" and "halt requested by test" in result["reason"], result
    assert "the slot manager stopped every payload" in caplog.text, caplog.text
    with open(os.path.join(config.path("paths.state_dir"), "shutdown_message")) as fh:
        assert fh.read() == "100 halt requested by test: site downtime"
    assert stop.requested(config) == "halt: halt requested by test: site downtime"


def test_without_a_slot_manager_the_halt_goes_on_and_says_so(tmp_path, caplog):
    """A state that still lists a payload but no slot manager holding its lock: the monitor signals
    nothing, does not wait, logs what it found and halts."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        config = make_config(str(tmp_path), [], **sections(tmp_path))
        entry = {"id": "orphan", "pid": bystander.pid, "pgid": bystander.pid, "cores": 1}
        pool_state.save(config, {"running": [entry], "counts": {}})
        caplog.set_level(logging.INFO, logger="vmagent.monitor")
        Monitor(config, clock=SystemClock()).halt(Decision("instruction", "test", 100))
        assert bystander.poll() is None
        assert "the slot manager is not running; 1 payloads left" in caplog.text, caplog.text
        assert stop.requested(config) is None
    finally:
        bystander.send_signal(signal.SIGKILL)
        bystander.wait()


def _read(path):
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
