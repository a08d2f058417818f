"""A pilot command's ``run`` in a worker thread that the runner waits for until the deadline.

Nothing raises from a signal handler into whatever runs. A child process the command starts gets
the time left (``Context.run``), so ``process.run`` stops its process group at the deadline; the
runner waits for that to be done. A command still busy in Python at the deadline is reported as
timed out and its thread is left to end on its own as a daemon: a thread cannot be stopped.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

from .command import Children

# process.run's SIGTERM grace (5 s) and SIGKILL wait (10 s) for a child stopped at the deadline
CHILD_STOP_SECONDS = 20.0


class Worker:
    """One call of ``target`` in a daemon thread; what it returned or raised, once it ended."""

    def __init__(self, name: str, target: Callable[[], Any]) -> None:
        self.target = target
        self.returned: Any = None
        self.raised: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._main, name=f"pilot {name}", daemon=True)

    def _main(self) -> None:
        try:
            self.returned = self.target()
        except BaseException as exc:  # noqa: BLE001 - handed to the runner's thread as is
            self.raised = exc

    def finished(self, seconds: float, children: Children) -> bool:
        """Start, wait up to ``seconds`` (then for a child being stopped); False if still running."""
        self.thread.start()
        try:
            self.thread.join(max(0.0, seconds))
            if self.thread.is_alive() and children.running:
                self.thread.join(CHILD_STOP_SECONDS)
        except BaseException:  # noqa: BLE001 - Ctrl-C while waiting: leave no child behind
            children.stop_all()
            raise
        return not self.thread.is_alive()

    def outcome(self) -> Any:
        """What the call returned; raises what it raised."""
        if self.raised is not None:
            raise self.raised
        return self.returned
