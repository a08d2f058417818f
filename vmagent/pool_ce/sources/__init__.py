"""Payload sources (entry point group ``vmagent.payload_sources``): spool, manager, pilots.

A source is a class built with ``(config)`` (``PayloadSource``) offering:
- ``offer(capacity) -> list[Offer]``: validated payloads that could run, each with what the source
  needs to take it (``ticket``) and the account to run it as (``user``); ``capacity`` has
  free_cores, free_memory_mb, remaining_seconds, total_cores, total_memory_mb. A source may answer
  more than fits (the spool and the manager show the head of their queue so the masonry policy can
  plan) or only what fits. It never offers what could not run on this VM even empty (more memory than
  total_memory_mb, more cores than total_cores unless whole_node): the spool rejects such files, the
  manager does not list them.
- ``leased`` (optional, default False): what ``offer`` answers already belongs to this VM and
  must be kept until it runs.
- ``claim(offer) -> bool``: take it for good before it starts (False: someone else took it).
- ``report(result)``: a result document (vmagent/schemas/result.json).
- ``close()``.
- optional: ``exhausted() -> bool`` (nothing will ever be offered again: the slot manager leaves once
  nothing runs), ``drain()`` (a drain was requested), ``vacuum_codes`` and ``black_hole`` (shown in
  the slot manager's state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Protocol

from ... import schemas
from ...config import apply_defaults


@dataclass(frozen=True)
class Offer:
    """A payload a source offers, and what goes with it beside the payload document."""

    payload: Dict[str, Any]  # validated against the payload schema, defaults filled in
    user: Optional[str] = None  # run as this account (default: slots.payload_user)
    ticket: Any = None  # the source's own handle, given back to claim (spool file, pilot slot)

    @property
    def id(self) -> str:
        return str(self.payload["id"])


class PayloadSource(Protocol):
    """What the slot manager asks of a source (the optional parts: see the module's docstring)."""

    name: str

    def offer(self, capacity: Dict[str, Any]) -> List[Offer]: ...

    def claim(self, offer: Offer) -> bool: ...

    def report(self, result: Dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def validated(document: Any, source: str) -> Dict[str, Any]:
    """A payload description checked against the payload schema, defaults filled in."""
    payload: Dict[str, Any] = schemas.check("payload", document, source)
    apply_defaults(schemas.get("payload"), payload)
    return payload


def as_list(found: Any) -> List[Dict[str, Any]]:
    return list(found) if isinstance(found, list) else [found]
