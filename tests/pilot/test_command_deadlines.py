"""Pilot command deadlines without signal handlers: a worker thread for Python, time left for children."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

import vmagent.pilot.runner as runner_mod
from vmagent.errors import PipelineFailed
from vmagent.pilot.runner import Runner
from vmagent.testing import make_config, write_config

PY = sys.executable


def status_of(root) -> dict:
    with open(os.path.join(str(root), "var/lib/vmagent/pilot-status.json")) as fh:
        return json.load(fh)


class Busy:
    """A command busy in Python until released; records what it saw of SIGALRM while running."""

    name = "exec"
    release = threading.Event()
    started: list = []
    seen: list = []

    def run(self, ctx):
        type(self).started.append(ctx.step)
        type(self).seen.append(
            (signal.getsignal(signal.SIGALRM), signal.getitimer(signal.ITIMER_REAL))
        )
        while not self.release.is_set():
            sum(range(1000))  # pure Python, never waiting on anything the runner could interrupt
        return {}


@pytest.fixture
def busy():
    """The Busy command with fresh records, released (so its threads end) after the test."""
    Busy.release = threading.Event()
    Busy.started = []
    Busy.seen = []
    yield Busy
    Busy.release.set()


def test_python_busy_past_its_timeout_is_timed_out_without_a_signal_handler(
    tmp_path, clock, busy, monkeypatch
):
    """A command busy in Python past its timeout fails with code timeout while SIGALRM stays untouched."""
    before = signal.getsignal(signal.SIGALRM)
    config = make_config(
        tmp_path, [{"name": "exec", "timeout": 0.5, "options": {"argv": ["true"]}}]
    )
    monkeypatch.setattr(runner_mod.plugins, "load", lambda group, name: Busy)
    runner = Runner(config, clock=clock)
    with pytest.raises(PipelineFailed) as failed:
        runner.run()
    assert "[timeout]" in failed.value.message
    error = status_of(tmp_path)["steps"][0]["error"]
    assert error["code"] == "timeout" and error["message"] == "exec did not finish within 0.5 s"
    assert busy.seen == [(before, (0.0, 0.0))]
    assert signal.getsignal(signal.SIGALRM) is before
    busy.release.set()
    for worker in runner.abandoned:
        worker.thread.join(30)
        assert not worker.thread.is_alive()


def test_command_still_running_is_not_retried_and_later_steps_run(
    tmp_path, clock, busy, monkeypatch
):
    """A timed-out command still running is not started again; on_failure continue goes on with the next."""
    steps = [
        {"name": "exec", "timeout": 0.3, "retries": 2, "on_failure": "continue"},
        {"name": "exec", "timeout": 0.3, "on_failure": "continue"},
    ]
    for spec in steps:
        spec["options"] = {"argv": ["true"]}
    config = make_config(tmp_path, steps)
    monkeypatch.setattr(runner_mod.plugins, "load", lambda group, name: Busy)
    status = Runner(config, clock=clock).run()
    assert [s.attempts for s in status.steps] == [1, 1]
    assert [s.outcome for s in status.steps] == ["failed", "failed"]
    assert busy.started == ["exec", "exec"] and status.outcome == "degraded"


def test_child_gets_the_time_left_and_is_stopped_by_the_time_the_step_fails(
    tmp_path, clock, monkeypatch
):
    """A child started late in a command gets only the time left and is gone when the runner reports."""
    pidfile = tmp_path / "child.pid"
    code = f"import os,time; open({str(pidfile)!r},'w').write(str(os.getpid())); time.sleep(60)"

    class Late:
        name = "exec"

        def run(self, ctx):
            ctx.clock.sleep(9)  # nine of the ten seconds spent (on the fake clock)
            ctx.run([PY, "-c", code])
            return {}

    config = make_config(tmp_path, [{"name": "exec", "timeout": 10, "options": {"argv": ["true"]}}])
    monkeypatch.setattr(runner_mod.plugins, "load", lambda group, name: Late)
    with pytest.raises(PipelineFailed):
        Runner(config, clock=clock).run()
    error = status_of(tmp_path)["steps"][0]["error"]
    assert error["code"] == "timeout" and error["timeout"] == 1.0
    child = int(pidfile.read_text())
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_a_command_exit_reaches_the_caller(tmp_path, clock, monkeypatch):
    """A command raising SystemExit in its worker thread ends the run as it did in the main thread."""

    class Exiting:
        name = "exec"

        def run(self, ctx):
            raise SystemExit(7)

    config = make_config(tmp_path, [{"name": "exec", "options": {"argv": ["true"]}}])
    monkeypatch.setattr(runner_mod.plugins, "load", lambda group, name: Exiting)
    with pytest.raises(SystemExit) as exited:
        Runner(config, clock=clock).run()
    assert exited.value.code == 7


def test_interrupted_runner_leaves_no_child_behind(tmp_path):
    """Ctrl-C to a pilot run while a command waits on a child stops that child's process group too."""
    pidfile = tmp_path / "child.pid"
    code = f"import os,time; open({str(pidfile)!r},'w').write(str(os.getpid())); time.sleep(120)"
    path = write_config(
        tmp_path, [{"name": "exec", "timeout": 300, "options": {"argv": [PY, "-c", code]}}]
    )
    pilot = subprocess.Popen(
        [PY, "-m", "vmagent", "--config", path, "pilot", "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        child = wait_for(
            lambda: pidfile.exists() and pidfile.read_text() and int(pidfile.read_text())
        )
        pilot.send_signal(signal.SIGINT)
        pilot.wait(timeout=60)
        assert wait_for(lambda: not alive(child)), f"child {child} still runs after the pilot ended"
    finally:
        if pilot.poll() is None:
            pilot.kill()
            pilot.wait()


def wait_for(probe, seconds: float = 60.0):
    """The first true value of ``probe`` within ``seconds``, else None."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.05)
    return None


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
