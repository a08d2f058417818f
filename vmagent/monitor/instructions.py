"""Instructions from heartbeat answers: untrusted, validated one by one, each carried out at most once.

An endpoint answers a heartbeat with a list of instructions (vmagent/schemas/instruction.json):
``drain``, ``halt`` or ``shutdown_at``. Anything else (an unknown action, a missing field, a wrong
type, an answer that is not a list) is refused and logged, never executed. The manager re-sends an
instruction until a later heartbeat acknowledges its id, so ids already carried out are only
acknowledged again.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, List, Optional

from .. import schemas

log = logging.getLogger("vmagent.monitor")

MAX_ACKS = 256  # the heartbeat schema's limit
REMEMBERED = 1024


@dataclass(frozen=True)
class Instruction:
    """One validated instruction and the endpoint it came from."""

    id: int
    action: str
    source: str
    shutdown_at: Optional[float] = None
    reason: str = ""


def parse(raw: Any, source: str) -> Optional[Instruction]:
    """The instruction in ``raw``, or None (logged) when the schema refuses it."""
    found = schemas.problems("instruction", raw)
    if found:
        detail = "; ".join(f"{path or '(top)'}: {message}" for path, message in found[:5])
        log.error("refused an instruction from %s: %s; got %s", source, detail, _shown(raw))
        return None
    at = raw.get("shutdown_at")
    return Instruction(id=int(raw["id"]), action=str(raw["action"]), source=source,
                       shutdown_at=float(at) if at is not None else None, reason=str(raw.get("reason") or ""))


def _shown(raw: Any) -> str:
    try:
        text = json.dumps(raw, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        text = repr(raw)
    return text[:300]


class Inbox:
    """Per endpoint: which instructions to acknowledge next, and which were already carried out."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.pending_acks: List[int] = []
        self.done: OrderedDict[int, None] = OrderedDict()

    def accept(self, answer: Any) -> List[Instruction]:
        """The new, valid instructions in one answer; refused and repeated ones are only logged or acked."""
        if not isinstance(answer, list):
            log.error("refused the answer of %s: instructions must be a list, got %s", self.source, _shown(answer))
            return []
        fresh = []
        for raw in answer[:MAX_ACKS]:
            instruction = parse(raw, self.source)
            if instruction is None:
                continue
            self._ack(instruction.id)
            if instruction.id in self.done:
                log.info("instruction %d from %s was already carried out", instruction.id, self.source)
                continue
            self.done[instruction.id] = None
            while len(self.done) > REMEMBERED:
                self.done.popitem(last=False)
            fresh.append(instruction)
        return fresh

    def _ack(self, ident: int) -> None:
        if ident not in self.pending_acks:
            self.pending_acks = (self.pending_acks + [ident])[-MAX_ACKS:]

    def acks(self) -> List[int]:
        """Ids to acknowledge in the next heartbeat to this endpoint."""
        return list(self.pending_acks)

    def delivered(self, acked: List[int]) -> None:
        """A heartbeat carrying ``acked`` reached the endpoint."""
        self.pending_acks = [i for i in self.pending_acks if i not in acked]
