"""Instructions from heartbeat answers: untrusted, validated one by one, each carried out at most once.

An endpoint answers a heartbeat with a list of instructions (vmagent/schemas/instruction.json):
``drain``, ``halt`` or ``shutdown_at``. Anything else (an unknown action, a missing field, a wrong
type, an answer that is not a list) is refused and logged, never executed. The manager re-sends an
instruction until a later heartbeat acknowledges its id, so ids already carried out are only
acknowledged again.

Carrying one out (``carry_out``) is a ``handle_<action>`` function of this module: a drain writes
the drain request, a shutdown_at moves the MJF shutdowntime, a halt returns the decision to halt,
which the monitor acts on.
"""

from __future__ import annotations

import json
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from .. import mjf
from ..clock import Clock
from ..config import Config
from ..core import drain as drain_request
from .policies import Decision

log = logging.getLogger("vmagent.monitor")

MAX_ACKS = 256  # the heartbeat schema's limit
REMEMBERED = 1024
ACTIONS = ("drain", "halt", "shutdown_at")  # vmagent/schemas/instruction.json, checked by a test
FIELDS = ("id", "action", "shutdown_at", "reason")


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
    found = problems(raw)
    if found:
        detail = "; ".join(f"{path or '(top)'}: {message}" for path, message in found[:5])
        log.error("refused an instruction from %s: %s; got %s", source, detail, _shown(raw))
        return None
    at = raw.get("shutdown_at")
    return Instruction(
        id=int(raw["id"]),
        action=str(raw["action"]),
        source=source,
        shutdown_at=float(at) if at is not None else None,
        reason=str(raw.get("reason") or ""),
    )


def problems(raw: Any) -> List[Tuple[str, str]]:
    """``(path, message)`` for what vmagent/schemas/instruction.json refuses in ``raw``.

    Written out by hand so that the long-lived monitor does not load a JSON Schema library for four
    fields; a property test holds it to the schema's verdicts. Stricter in one respect: a
    ``shutdown_at`` that is not finite is refused.
    """
    if not isinstance(raw, dict):
        return [("", f"{_shown(raw)} is not of type 'object'")]
    found = [
        (key, "unknown key; allowed: " + ", ".join(sorted(FIELDS)))
        for key in raw
        if key not in FIELDS
    ]
    found += [("", f"{key!r} is a required property") for key in ("id", "action") if key not in raw]
    if "id" in raw and not (_is_integer(raw["id"]) and raw["id"] >= 0):
        found.append(("id", "must be an integer >= 0"))
    if "action" in raw and raw["action"] not in ACTIONS:
        found.append(
            ("action", f"{_shown(raw['action'])} is not allowed; use one of: {', '.join(ACTIONS)}")
        )
    if "shutdown_at" in raw and not (
        _is_number(raw["shutdown_at"])
        and math.isfinite(raw["shutdown_at"])
        and raw["shutdown_at"] >= 0
    ):
        found.append(("shutdown_at", "must be a finite number >= 0 (UNIX seconds)"))
    if "reason" in raw and not (isinstance(raw["reason"], str) and len(raw["reason"]) <= 1024):
        found.append(("reason", "must be a string of at most 1024 characters"))
    if raw.get("action") == "shutdown_at" and "shutdown_at" not in raw:
        found.append(("", "'shutdown_at' is a required property"))
    return found


def _is_integer(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer()
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
            log.error(
                "refused the answer of %s: instructions must be a list, got %s",
                self.source,
                _shown(answer),
            )
            return []
        fresh = []
        for raw in answer[:MAX_ACKS]:
            instruction = parse(raw, self.source)
            if instruction is None:
                continue
            self._ack(instruction.id)
            if instruction.id in self.done:
                log.info(
                    "instruction %d from %s was already carried out", instruction.id, self.source
                )
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


def carry_out(instruction: Instruction, config: Config, clock: Clock) -> Optional[Decision]:
    """Carry out one validated instruction; a halt instruction returns its decision, others None."""
    log.warning(
        "instruction %d from %s: %s%s",
        instruction.id,
        instruction.source,
        instruction.action,
        f" ({instruction.reason})" if instruction.reason else "",
    )
    return HANDLERS[instruction.action](instruction, config, clock)


def handle_drain(instruction: Instruction, config: Config, clock: Clock) -> None:
    """Drain, giving the instruction's reason or who asked."""
    drain(config, instruction.reason or f"requested by {_sender(instruction)}")


def handle_halt(instruction: Instruction, config: Config, clock: Clock) -> Decision:
    """The decision to halt (vacuum code 100), naming who asked and why."""
    reason = f"halt requested by {_sender(instruction)}"
    if instruction.reason:
        reason += f": {instruction.reason}"
    return Decision("instruction", reason, 100)


def handle_shutdown_at(instruction: Instruction, config: Config, clock: Clock) -> None:
    """Announce the new shutdown time (never closer than grace_secs: ``mjf.update_shutdowntime``)."""
    asked = float(instruction.shutdown_at or 0)
    written = mjf.update_shutdowntime(config, asked, clock=clock)
    log.warning("shutdown time now %d (asked %d)", written, int(asked))


Handler = Callable[[Instruction, Config, Clock], Optional[Decision]]
HANDLERS: Dict[str, Handler] = {
    "drain": handle_drain,
    "halt": handle_halt,
    "shutdown_at": handle_shutdown_at,
}


def drain(config: Config, reason: str) -> None:
    """Ask the slot manager to start nothing new, and DIRAC pilots to stop matching jobs."""
    drain_request.request(config, reason)
    log.warning("draining: %s", reason)


def _sender(instruction: Instruction) -> str:
    """The endpoint's plugin name (``http`` for link ``http#0``)."""
    return instruction.source.split("#")[0]
