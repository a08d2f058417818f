"""The VM life cycle: states and the only transitions allowed between them (no imports on purpose)."""

from __future__ import annotations

import enum


class VmState(str, enum.Enum):
    """Where a VM is in its life, as the manager sees it."""

    NEW = "new"  # registered, no heartbeat yet
    SUBMITTED = "submitted"  # heartbeating while its pilot pipeline boots the node
    RUNNING = "running"  # heartbeating, taking payloads
    DRAINING = "draining"  # takes nothing new, lets running payloads finish
    HALTED = "halted"  # declared it is going away; final
    STALLED = "stalled"  # no heartbeat for the configured time
    ERROR = "error"  # reports a failed pipeline or node


S = VmState
ALLOWED = {
    S.NEW: {S.SUBMITTED, S.RUNNING, S.DRAINING, S.STALLED, S.HALTED, S.ERROR},
    S.SUBMITTED: {S.RUNNING, S.DRAINING, S.STALLED, S.HALTED, S.ERROR},
    S.RUNNING: {S.DRAINING, S.STALLED, S.HALTED, S.ERROR},
    S.DRAINING: {S.STALLED, S.HALTED, S.ERROR},
    S.STALLED: {S.SUBMITTED, S.RUNNING, S.DRAINING, S.HALTED, S.ERROR},
    S.ERROR: {S.DRAINING, S.STALLED, S.HALTED},
    S.HALTED: set(),
}

# States a VM may be swept out of when its heartbeats stop.
LIVE = (S.NEW, S.SUBMITTED, S.RUNNING, S.DRAINING, S.ERROR)

# What a heartbeat's ``status`` says about the VM's state.
FROM_HEARTBEAT = {
    "booting": S.SUBMITTED,
    "running": S.RUNNING,
    "draining": S.DRAINING,
    "halting": S.DRAINING,
}


def allowed(current: str, target: str) -> bool:
    """True when a VM in state ``current`` may move to ``target``."""
    return VmState(target) in ALLOWED[VmState(current)]
