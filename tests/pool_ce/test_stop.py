"""Stopping process groups and knowing a process is still ours (vmagent.process), and slot states."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vmagent import process
from vmagent.clock import SystemClock
from vmagent.pool_ce.slot import Slot
from vmagent.pool_ce.sources import Offer
from vmagent.pool_ce.states import SlotState

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_groups_that_are_not_a_payloads_are_never_signalled():
    """Group 0 or 1, our own group and a non-integer are refused, never signalled."""
    for pgid in (0, 1, os.getpgid(0), "12", True):
        assert process.stop_group(pgid, 0.1, SystemClock()) == "refused"
        assert process.signal_group(pgid, 0) is False


def test_a_pid_reused_by_another_process_is_not_the_same_process():
    """same_process: the same pid started at another time is a stranger; a live one with its start is ours."""
    child = subprocess.Popen(SLEEPER, start_new_session=True)
    try:
        started = process.create_time(child.pid)
        assert process.same_process(child.pid, started)
        assert process.same_process(child.pid, None)
        assert not process.same_process(child.pid, started - 3600)
        assert not process.same_process(0, None)
    finally:
        child.kill()
        child.wait()


def test_a_group_whose_leader_exited_is_still_stopped():
    """Members left behind by a leader that exited are TERMed through the group, and gone after."""
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
    assert process.group_alive(leader.pid)
    assert process.stop_group(leader.pid, 30, SystemClock()) == "terminated"
    assert not process.group_alive(leader.pid)


def test_a_group_ignoring_sigterm_is_killed_after_the_grace():
    """A member ignoring SIGTERM is SIGKILLed once the grace is over; the child is then reaped."""
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    child = subprocess.Popen(
        [sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "ready"
    assert process.stop_group(child.pid, 0.3, SystemClock()) == "killed"
    assert child.wait(timeout=30) == -9
    child.stdout.close()


def test_a_transition_the_state_machine_does_not_allow_is_an_internal_error():
    """A slot that has ended cannot run again, a running one cannot start again: both raise, naming the slot."""
    slot = Slot(Offer({"id": "p1"}), 1, 0, "/w", 0.0, 0.0)
    slot.to(SlotState.RUNNING)
    with pytest.raises(RuntimeError, match="slot p1 cannot go from running to starting"):
        slot.to(SlotState.STARTING)
    slot.to(SlotState.STOPPING)
    slot.to(SlotState.ENDED)
    with pytest.raises(RuntimeError, match="from ended to running"):
        slot.to(SlotState.RUNNING)
    assert slot.state is SlotState.ENDED
