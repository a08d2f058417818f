"""The one way vmagent starts a child process: argv list, no shell, stdin closed, a timeout.

A child runs in its own session, so a timeout (or any exception while waiting, such as a
pipeline-level deadline) stops its whole process group: SIGTERM, a grace period, SIGKILL, reap.
Nothing is left behind.

Also the one way to stop a process group (``stop_group``, ``signal_group``) and the one way to
know a process is still the one we started (``same_process``), for every part of vmagent.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

from .clock import Clock, SystemClock
from .errors import ProcessFailed, ProcessTimeout, UsageError

log = logging.getLogger("vmagent.process")
STDERR_TAIL_CHARS = 2000
SAME_START_TOLERANCE = 1.0  # seconds; why: see same_process
POLL_SECONDS = 0.1  # how often stop_group looks whether a group is gone


@dataclass(frozen=True)
class Completed:
    """What a finished child left: exit code, captured output and how long it took."""

    argv: tuple
    returncode: int
    stdout: str
    stderr: str
    duration: float


def tail(text: str, limit: int = STDERR_TAIL_CHARS) -> str:
    """The last ``limit`` characters of ``text``, cut at a line start where possible."""
    if len(text) <= limit:
        return text
    cut = text[-limit:]
    newline = cut.find("\n")
    return cut[newline + 1 :] if 0 <= newline < limit // 2 else cut


def create_time(pid: int) -> Optional[float]:
    """When process ``pid`` started (seconds since the epoch, as psutil reads it), None if gone."""
    import psutil  # here: process.run is used where psutil is not needed

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def same_process(pid: int, started: Optional[float]) -> bool:
    """``pid`` still runs (not a zombie) and is the process that started at ``started`` (if known).

    The one PID-reuse check of vmagent (psutil's ``is_running``). The tolerance is
    ``SAME_START_TOLERANCE``: a start time is the boot time plus clock ticks since boot, and the
    boot time is whole seconds of wall clock that the kernel recomputes after a clock step (NTP at
    boot, common in VMs), so two processes, or one slot manager before and after a restart, can see
    the same process start up to a second apart. A pid reused by another process within a second
    of its previous owner's start would pass, which takes the whole pid space in that second.
    """
    import psutil

    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if started is not None and abs(proc.create_time() - float(started)) >= SAME_START_TOLERANCE:
            return False
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False when it is gone, not ours, or refused.

    Refused (logged, never sent): a group id of 1 or less (0 and 1 would signal our own group or
    every process) and our own group.
    """
    if not isinstance(pgid, int) or isinstance(pgid, bool) or pgid <= 1:
        log.error("not signalling process group %r: not a payload's group", pgid)
        return False
    if pgid == os.getpgid(0):
        log.error("not signalling process group %d: it is our own", pgid)
        return False
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Some process of group ``pgid`` still runs (zombies do not count: their parent reaps them)."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return False
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # after the command's closing parenthesis: state, ppid, pgrp, ...
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == pgid:
            return True
    return False


def stop_group(
    pgid: int, grace: float, clock: Clock, tick: Optional[Callable[[], None]] = None
) -> str:
    """SIGTERM process group ``pgid``, wait up to ``grace`` seconds, SIGKILL what is left.

    Answers ``terminated`` (gone within the grace), ``killed``, ``gone`` (nothing to signal) or
    ``refused`` (see ``signal_group``). ``tick`` runs while waiting (a watchdog). The slot manager
    drives the same sequence a step per tick (``signal_group``, its grace, ``signal_group``), so
    that it keeps reaping and refilling while a payload stops.
    """
    if not isinstance(pgid, int) or isinstance(pgid, bool) or pgid <= 1 or pgid == os.getpgid(0):
        signal_group(pgid, signal.SIGTERM)  # logs the refusal
        return "refused"
    if not signal_group(pgid, signal.SIGTERM):
        return "gone"
    deadline = clock.monotonic() + grace
    while group_alive(pgid):
        if clock.monotonic() >= deadline:
            signal_group(pgid, signal.SIGKILL)
            return "killed"
        if tick is not None:
            tick()
        clock.sleep(POLL_SECONDS)
    return "terminated"


def stop_child(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Stop a child started in its own session (``run``, test servers): its group, then reap it."""
    pid = getattr(proc, "pid", 0)
    if not isinstance(pid, int) or pid <= 1:
        return
    if proc.poll() is None or group_alive(pid):
        stop_group(pid, grace, SystemClock())
    try:
        proc.wait(timeout=10.0)
    except subprocess.TimeoutExpired:
        log.error("pid %d still not reaped 10 s after SIGKILL", pid)


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[str] = None,
    input: Optional[str] = None,
    check: bool = True,
    grace: float = 5.0,
    on_start: Optional[Callable[[subprocess.Popen], None]] = None,
) -> Completed:
    """Run ``argv`` to completion and return what it printed.

    Raises ``ProcessTimeout`` after ``timeout`` seconds (the process group is stopped first) and,
    with ``check``, ``ProcessFailed`` carrying the exit code and the tail of stderr. ``on_start``
    is told the child as soon as it runs (so that another thread can stop it when it must).
    """
    argv = [str(a) for a in argv]
    if not argv:
        raise UsageError("empty command line")
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            text=True,
            errors="replace",
            start_new_session=True,
            close_fds=True,
        )
    except FileNotFoundError as exc:
        raise ProcessFailed(argv, 127, f"{argv[0]}: command not found ({exc.strerror})") from None
    except PermissionError as exc:
        raise ProcessFailed(argv, 126, f"{argv[0]}: {exc.strerror}") from None
    if on_start is not None:
        on_start(proc)
    try:
        stdout, stderr = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_child(proc, grace)
        stdout, stderr = _drain(proc)
        raise ProcessTimeout(argv, timeout, tail(stderr or "")) from None
    finally:
        if proc.poll() is None:  # interrupted by anything else: leave nothing running
            stop_child(proc, grace)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()
    done = Completed(
        tuple(argv), proc.returncode, stdout or "", stderr or "", time.monotonic() - started
    )
    if check and done.returncode != 0:
        raise ProcessFailed(argv, done.returncode, tail(done.stderr))
    return done


def _drain(proc: subprocess.Popen) -> tuple:
    try:
        return proc.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        return "", ""
