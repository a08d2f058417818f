"""The one way vmagent starts a child process: argv list, no shell, stdin closed, a timeout.

A child runs in its own session, so a timeout (or any exception while waiting, such as a
pipeline-level deadline) stops its whole process group: SIGTERM, a grace period, SIGKILL, reap.
Nothing is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from .errors import ProcessFailed, ProcessTimeout, UsageError

STDERR_TAIL_CHARS = 2000


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


def stop_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the child's process group, wait ``grace`` seconds, SIGKILL it, then reap."""
    pid = getattr(proc, "pid", 0)
    if not isinstance(pid, int) or pid <= 0:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; make sure no member of its group outlives it.
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[str] = None,
    input: Optional[str] = None,
    check: bool = True,
    grace: float = 5.0,
) -> Completed:
    """Run ``argv`` to completion and return what it printed.

    Raises ``ProcessTimeout`` after ``timeout`` seconds (the process group is stopped first) and,
    with ``check``, ``ProcessFailed`` carrying the exit code and the tail of stderr.
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
    try:
        stdout, stderr = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(proc, grace)
        stdout, stderr = _drain(proc)
        raise ProcessTimeout(argv, timeout, tail(stderr or "")) from None
    finally:
        if proc.poll() is None:  # interrupted by anything else: leave nothing running
            stop_group(proc, grace)
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
