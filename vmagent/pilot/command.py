"""What a pilot command sees (``Context``) and returns (``Result``).

A command is a small class with a ``name``, a JSON Schema for its ``options`` and ``run(ctx)``.
It returns facts (a mapping, or a ``Result`` to also export environment or to report a skip) and
raises a ``CommandFailed`` subclass to stop. Every side effect goes through the context, so that
``--dry-run`` lists it instead of doing it.

Time is the command's deadline (``Context.deadline`` on ``Context.clock``): every child process
started through ``Context.run`` gets only the time left, so that it is stopped at the deadline.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, List, Mapping, Optional, Sequence

from .. import process
from ..clock import Clock
from ..config import Config, host_path
from ..core.files import write_atomic
from ..errors import CommandTimeout


@dataclass(frozen=True)
class Result:
    """A command's outcome: new facts, environment for later commands and pilots, or a skip."""

    facts: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    skipped: Optional[str] = None


class Actions:
    """Every external effect of a run, in order; in dry-run mode the effects are only recorded."""

    def __init__(self, dry_run: bool):
        self.dry_run = dry_run
        self.entries: List[dict] = []
        self.index = 0  # which pipeline step is running; set by the runner

    def record(self, step: str, kind: str, what: str, executed: bool) -> None:
        self.entries.append(
            {"step": step, "index": self.index, "kind": kind, "what": what, "executed": executed}
        )


class Children:
    """The child processes a command has running now, as the runner sees them from outside.

    At the deadline the runner waits for a command that is inside ``Context.run`` until
    ``process.run`` has stopped the child's process group, instead of leaving it behind; when the
    runner itself is interrupted (Ctrl-C, SIGTERM turned into an exception), it stops them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._procs: List[subprocess.Popen] = []

    @property
    def running(self) -> int:
        with self._lock:
            return self._running

    @contextmanager
    def one(self) -> Iterator[Callable[[subprocess.Popen], None]]:
        """Count one child process for as long as the block runs; yields where to register it."""
        registered: List[subprocess.Popen] = []

        def started(proc: subprocess.Popen) -> None:
            with self._lock:
                self._procs.append(proc)
                registered.append(proc)

        with self._lock:
            self._running += 1
        try:
            yield started
        finally:
            with self._lock:
                self._running -= 1
                for proc in registered:
                    self._procs.remove(proc)

    def stop_all(self, grace: float = 5.0) -> None:
        """Stop every child still running, each with its process group (TERM, grace, KILL)."""
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            if proc.poll() is None:
                process.stop_child(proc, grace)


@dataclass(frozen=True)
class Context:
    """Everything a command may use. Immutable: a command returns facts instead of writing here."""

    config: Config
    instance_id: str
    options: Mapping[str, Any]
    facts: Mapping[str, Any]
    env: Mapping[str, str]
    clock: Clock
    deadline: float
    actions: Actions
    step: str
    log: logging.Logger = logging.getLogger("vmagent.pilot")
    children: Children = field(default_factory=Children)

    @property
    def dry_run(self) -> bool:
        return self.actions.dry_run

    def path(self, path: str) -> str:
        """``path`` as seen inside the VM, mapped below the configured root."""
        return host_path(self.config.root, path)

    def remaining(self) -> float:
        """Seconds left before this command's timeout."""
        left = self.deadline - self.clock.monotonic()
        if left <= 0:
            raise CommandTimeout(
                f"{self.step} ran out of time", hint="raise its timeout in the config"
            )
        return left

    def child_env(self, extra: Optional[Mapping[str, str]] = None) -> dict:
        env = dict(os.environ)
        env.update(self.env)
        env.update(extra or {})
        return env

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: Optional[float] = None,
        read_only: bool = False,
        check: bool = True,
        input: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
    ) -> process.Completed:
        """Run an external command; in dry-run mode only ``read_only`` probes really run."""
        argv = [str(a) for a in argv]
        shown = shlex.join(argv)
        if self.dry_run and not read_only:
            self.actions.record(self.step, "run", shown, executed=False)
            return process.Completed(tuple(argv), 0, "", "", 0.0)
        self.actions.record(self.step, "run", shown, executed=True)
        limit = self.remaining() if timeout is None else min(timeout, self.remaining())
        self.log.debug("%s: running %s", self.step, shown)
        with self.children.one() as started:
            return process.run(
                argv,
                timeout=limit,
                env=self.child_env(env),
                cwd=cwd,
                input=input,
                check=check,
                on_start=started,
            )

    def write_file(self, path: str, content: str, mode: int = 0o644) -> None:
        """Write ``path`` (a VM path) atomically with ``mode``; recorded only in dry-run mode."""
        target = self.path(path)
        self.actions.record(
            self.step, "write", f"{path} (mode {mode:04o})", executed=not self.dry_run
        )
        if self.dry_run:
            return
        write_atomic(target, content, mode)


def summary(command: Any) -> str:
    """The first line of a command's docstring."""
    doc = (getattr(command, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else "(no description)"
