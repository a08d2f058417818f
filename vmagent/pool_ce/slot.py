"""One payload's slot (its cores, memory, process and state) and the table of them all.

A slot moves through ``states.SlotState`` by ``to`` only, which refuses a transition the state
machine does not allow. ``entry`` is its running entry in the state document and pid file
(docs/contracts.md, "Slot manager state"); ``from_entry`` reads one back after a restart.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .allocator import Allocator
from .cgroups import PayloadGroups
from .sources import Offer
from .states import SlotState, check


@dataclass
class Slot:
    """A payload given cores and memory: starting, running, stopping, or ended."""

    offer: Offer
    cores: int
    memory_mb: int
    workdir: str
    started_at: float
    estimated_end: float
    slots: List[int] = field(default_factory=list)  # the allocator's core numbers
    cpus: List[int] = field(default_factory=list)  # the real CPUs those map to
    pid: int = 0
    pgid: int = 0
    create_time: Optional[float] = None
    popen: Optional[subprocess.Popen] = None  # None: adopted after a restart, not our child
    deadline: Optional[float] = None  # its wall limit
    kill_at: Optional[float] = None  # SIGKILL due (stopping)
    stopped_because: Optional[str] = None
    spawn_rss: Optional[int] = None
    cpus_unknown: bool = False  # recovered without its CPUs: it may use any core
    state_lost: bool = False  # recovered without a state entry: "lost" if gone without exit code
    # stopping, its leader reaped while others of its group live on: how the leader ended
    leader_end: Optional[Tuple[Optional[int], Optional[float], Optional[int]]] = None
    state: SlotState = SlotState.STARTING

    @property
    def id(self) -> str:
        return self.offer.id

    @property
    def payload(self) -> Dict[str, Any]:
        return self.offer.payload

    def to(self, new: SlotState) -> None:
        """Move to ``new``; an internal error if the state machine does not allow it from here."""
        check(f"slot {self.id}", self.state, new)
        self.state = new

    def entry(self) -> Dict[str, Any]:
        """The running entry of the state document and the pid file."""
        found: Dict[str, Any] = {
            "id": self.id,
            "payload": self.payload,
            "cores": self.cores,
            "slots": list(self.slots),
            "cpus": list(self.cpus),
            "memory_mb": self.memory_mb,
            "pid": self.pid,
            "pgid": self.pgid,
            "create_time": self.create_time,
            "started_at": self.started_at,
            "estimated_end": self.estimated_end,
            "workdir": self.workdir,
            "deadline": self.deadline,
            "kill_at": self.kill_at,
            "stopped_because": self.stopped_because,
            "spawn_rss": self.spawn_rss,
            "state": self.state.value,
        }
        if self.cpus_unknown:
            found["cpus_unknown"] = True
        return found

    @classmethod
    def from_entry(cls, entry: Dict[str, Any], state_lost: bool = False) -> Slot:
        """A slot from a checked running entry (``state.read``, ``state.read_pidfile``)."""
        stopping = bool(entry.get("stopped_because"))
        return cls(
            offer=Offer(entry["payload"]),
            cores=entry["cores"],
            memory_mb=entry["memory_mb"],
            workdir=entry["workdir"],
            started_at=entry["started_at"],
            estimated_end=entry["estimated_end"],
            slots=list(entry.get("slots", [])),
            cpus=list(entry.get("cpus", [])),
            pid=entry["pid"],
            pgid=entry["pgid"],
            create_time=entry.get("create_time"),
            deadline=entry.get("deadline"),
            kill_at=entry.get("kill_at"),
            stopped_because=entry.get("stopped_because"),
            spawn_rss=entry.get("spawn_rss"),
            cpus_unknown=bool(entry.get("cpus_unknown")),
            state_lost=state_lost,
            state=SlotState.STOPPING if stopping else SlotState.RUNNING,
        )


@dataclass
class Table:
    """What the slot manager holds now, shared by its parts (refill, reaper, recovery)."""

    allocator: Allocator
    running: Dict[str, Slot] = field(default_factory=dict)
    held: Dict[str, Offer] = field(default_factory=dict)  # taken from the source, not started
    groups: Optional[PayloadGroups] = None  # cgroup v2 payload groups, set up at the start

    def cpus_unknown(self) -> bool:
        """A payload runs whose CPUs are not known: every core may be busy."""
        return any(slot.cpus_unknown for slot in self.running.values())
