"""A slot's life: its states and the transitions allowed between them (supervisor's model).

``STARTING``: cores and memory allocated, the process being started. ``RUNNING``: the payload
runs. ``STOPPING``: SIGTERM sent to its process group, SIGKILL due at the end of the grace.
``ENDED``: reaped (or never started), its result recorded; the slot is then dropped.
"""

from __future__ import annotations

import enum
from typing import Dict, FrozenSet


class SlotState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    ENDED = "ended"


ALLOWED: Dict[SlotState, FrozenSet[SlotState]] = {
    SlotState.STARTING: frozenset({SlotState.RUNNING, SlotState.ENDED}),
    SlotState.RUNNING: frozenset({SlotState.STOPPING, SlotState.ENDED}),
    SlotState.STOPPING: frozenset({SlotState.ENDED}),
    SlotState.ENDED: frozenset(),
}


def check(what: str, current: SlotState, new: SlotState) -> None:
    """Raise when ``current`` -> ``new`` is not a transition: a bug in the slot manager, not input."""
    if new not in ALLOWED[current]:
        allowed = ", ".join(sorted(s.value for s in ALLOWED[current])) or "none"
        raise RuntimeError(
            f"internal error: {what} cannot go from {current.value} to {new.value} "
            f"(allowed from {current.value}: {allowed})"
        )
