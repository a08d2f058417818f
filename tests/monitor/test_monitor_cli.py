"""``vmagent monitor`` as real processes: sample, run --once/--dry-run, units, sd_notify and signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from vmagent import schemas
from vmagent.monitor import sd_notify
from vmagent.testing import write_config

VMAGENT = [sys.executable, "-m", "vmagent"]


def config_file(tmp_path, **monitor):
    settings = {
        "endpoints": [{"name": "log"}],
        "halt_action": "exit",
        "fizzle_seconds": None,
        **monitor,
    }
    return write_config(tmp_path, [], monitor=settings)


def vmagent(*args, env=None, timeout=60):
    return subprocess.run(
        [*VMAGENT, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_sample_prints_a_valid_heartbeat(tmp_path):
    """``monitor sample --heartbeat`` prints a body the heartbeat schema accepts."""
    done = vmagent(
        "-c", config_file(tmp_path), "monitor", "sample", "--heartbeat", "--interval", "0.1"
    )
    assert done.returncode == 0, done.stderr
    assert schemas.problems("heartbeat", json.loads(done.stdout)) == []


def test_dry_run_shows_the_decision_and_changes_nothing(tmp_path):
    """``run --dry-run`` prints the heartbeat and the decision a lifetime policy would take, writing nothing."""
    done = vmagent("-c", config_file(tmp_path, lifetime_seconds=1), "monitor", "run", "--dry-run")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["decision"]["policy"] == "lifetime" and shown["endpoints"] == ["log#0"]
    assert not (tmp_path / "var/log/vmagent/heartbeats.jsonl").exists()
    assert not (tmp_path / "var/lib/vmagent/shutdown_message").exists()


def test_once_sends_one_heartbeat_to_each_endpoint(tmp_path):
    """``run --once`` heartbeats each endpoint once and exits 0 without halting."""
    done = vmagent(
        "-c",
        config_file(tmp_path, endpoints=[{"name": "log"}, {"name": "vac"}]),
        "monitor",
        "run",
        "--once",
    )
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "var/log/vmagent/heartbeats.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["heartbeat"]["seq"] == 1
    assert (tmp_path / "var/lib/vmagent/joboutputs/heartbeat").exists()
    assert not (tmp_path / "var/lib/vmagent/shutdown_message").exists()


def test_a_policy_halt_through_the_command_line(tmp_path):
    """A fired policy halts with the exit action: shutdown_message written, 'halted' printed, exit 0."""
    done = vmagent("-c", config_file(tmp_path, lifetime_seconds=1), "monitor", "run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "halted: 100 lifetime of 1 s reached"
    assert (
        tmp_path / "var/lib/vmagent/shutdown_message"
    ).read_text() == "100 lifetime of 1 s reached"


def test_bad_endpoint_is_a_usage_error(tmp_path):
    """An unknown endpoint plugin exits 2 naming it and what is installed."""
    done = vmagent(
        "-c",
        config_file(tmp_path, endpoints=[{"name": "smoke-signals"}]),
        "monitor",
        "run",
        "--once",
    )
    assert (
        done.returncode == 2 and "smoke-signals" in done.stderr and "http, log, vac" in done.stderr
    )


def test_units_are_written_with_watchdog_and_restart(tmp_path):
    """``monitor units --output`` writes the three units; the monitor's is Type=notify with a watchdog."""
    done = vmagent("monitor", "units", "--output", str(tmp_path))
    assert done.returncode == 0, done.stderr
    names = sorted(os.listdir(tmp_path))
    assert names == ["vmagent-monitor.service", "vmagent-pilot.service", "vmagent-slots.service"]
    unit = (tmp_path / "vmagent-monitor.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "Restart=on-failure" in unit


@pytest.fixture
def notify_socket(tmp_path):
    """A datagram socket standing in for systemd's notify socket."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(20)
    yield path, sock
    sock.close()


def receive_until(sock, wanted, seconds=20):
    """Datagrams received until one contains ``wanted``."""
    got, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        got.append(sock.recv(4096).decode())
        if wanted in got[-1]:
            return got
    raise AssertionError(f"{wanted!r} never came: {got}")


def test_run_speaks_sd_notify_and_stops_on_sigterm_without_halting(tmp_path, notify_socket):
    """Under a notify socket the monitor says READY=1, pets the watchdog, and on SIGTERM stops without halting."""
    path, sock = notify_socket
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="1000000")
    proc = subprocess.Popen(
        [*VMAGENT, "-c", config_file(tmp_path), "monitor", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert receive_until(sock, "READY=1")[-1].startswith("READY=1")
        pets = [m for m in receive_until(sock, "WATCHDOG=1") if "WATCHDOG=1" in m]
        pets += [m for m in receive_until(sock, "WATCHDOG=1") if "WATCHDOG=1" in m]
        assert len(pets) >= 2 and "STATUS=running" in pets[-1]
        proc.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in receive_until(sock, "STOPPING=1")[-1]
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert "stopped by signal 15" in out
    assert not (tmp_path / "var/lib/vmagent/shutdown_message").exists()


def test_notify_without_a_socket_or_with_a_dead_one():
    """Without NOTIFY_SOCKET nothing is sent; a socket nobody listens on is not an error."""
    assert sd_notify.notify("READY=1", environ={}) is False
    assert sd_notify.notify("READY=1", environ={"NOTIFY_SOCKET": "/nonexistent/notify"}) is False
    assert sd_notify.watchdog_seconds({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert sd_notify.watchdog_seconds({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert sd_notify.watchdog_seconds({}) is None


def test_notify_to_an_abstract_socket():
    """An abstract notify socket ('@name') receives the message."""
    name = f"vmagent-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert sd_notify.notify("STATUS=hello", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"STATUS=hello"


def test_units_pass_systemd_analyze_verify(tmp_path):
    """systemd-analyze verify accepts the shipped units without a warning (ExecStart pointed at this vmagent)."""
    import shutil

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    assert vmagent("monitor", "units", "--output", str(tmp_path)).returncode == 0
    here = shutil.which("vmagent") or os.path.join(os.path.dirname(sys.executable), "vmagent")
    for unit in tmp_path.iterdir():
        unit.write_text(unit.read_text().replace("/opt/vmagent/bin/vmagent", here))
    done = subprocess.run(
        [analyze, "verify", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "ignoring" not in done.stderr and "Failed" not in done.stderr, (
        done.stderr
    )


def test_run_refuses_a_bad_config_and_stays_without_the_schema_library(tmp_path):
    """A bad config gives check-config's lines and exit 2; a good one runs without holding jsonschema or
    importlib.metadata (checked in a forked child, the plugins resolved from entry_points.txt)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("monitor: {period_seconds: -1, halt_action: explode}\n")
    done = vmagent("-c", str(bad), "monitor", "run", "--once")
    assert done.returncode == 2 and f"{bad}: monitor.period_seconds:" in done.stderr
    assert f"{bad}: monitor.halt_action: no plugin 'explode'" in done.stderr
    good = config_file(tmp_path)
    probe = (
        "import sys; from vmagent.cli import main; code = main(sys.argv[1:]); "
        "print(sorted(m for m in ('jsonschema', 'importlib.metadata', 'vmagent.monitor.loop') "
        "if m in sys.modules)); sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, "-c", good, "monitor", "run", "--once"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "['vmagent.monitor.loop']", done.stdout


def test_run_names_an_unknown_endpoint_plugin(tmp_path):
    """The start-up's check reports an unknown endpoint with what is installed: exit 2."""
    done = vmagent(
        "-c", config_file(tmp_path, endpoints=[{"name": "nolog"}]), "monitor", "run", "--once"
    )
    assert done.returncode == 2
    assert "no plugin 'nolog' in vmagent.endpoints; installed: http, log, vac" in done.stderr
