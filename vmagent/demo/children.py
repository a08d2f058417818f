"""The demo's children and files: a command run to its end, a server waited for, atomic writes."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any, List

from ..core.files import write_atomic
from ..errors import CommandFailed


def check(argv: List[str], stderr: Any = None) -> None:
    """Run ``argv`` to its end; ``CommandFailed`` with its stderr's tail when it fails."""
    done = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr or subprocess.PIPE,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        tail = (done.stderr or "").strip()[-500:]
        raise CommandFailed(
            f"{' '.join(argv[3:6])} failed with {done.returncode}: {tail}",
            hint="see agent.log in the demo directory",
        )


def wait_file(path: str, timeout: float, proc: subprocess.Popen) -> str:
    """The content of ``path`` once ``proc`` has written it; ``CommandFailed`` if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.exists(path):
            return read(path)
        time.sleep(0.1)
    raise CommandFailed(
        f"the manager did not start (no {path})", hint="see manager.log in the demo directory"
    )


def read(path: str) -> str:
    """The text of ``path``, stripped."""
    with open(path, encoding="utf-8") as fh:
        return fh.read().strip()


def write(path: str, text: str, mode: int) -> None:
    """Write ``text`` with a final newline to ``path`` atomically, with ``mode``."""
    write_atomic(path, text + ("" if text.endswith("\n") else "\n"), mode)
