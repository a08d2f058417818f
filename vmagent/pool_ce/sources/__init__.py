"""Payload sources (entry point group ``vmagent.payload_sources``).

A source is a class built with ``(config)`` offering:
- ``offer(capacity) -> list[dict]``: validated payload descriptions that could run; ``capacity`` has
  free_cores, free_memory_mb, remaining_seconds, total_cores, total_memory_mb. A source may return
  more than fits (the spool and the manager show the head of their queue so the masonry policy can
  plan) or only what fits. It never offers what could not run on this VM even empty (more memory than
  total_memory_mb, more cores than total_cores unless whole_node): the spool rejects such files, the
  manager does not list them.
- ``leased`` (optional, default False): what ``offer`` answers already belongs to this VM and
  must be kept until it runs.
- ``claim(payload) -> bool``: take it for good before it starts (False: someone else took it).
- ``report(result)``: a result document (vmagent/schemas/result.json).
- ``close()``.
"""

from __future__ import annotations

from typing import Any, Dict, List

from ... import schemas
from ...config import apply_defaults


def validated(document: Any, source: str) -> Dict[str, Any]:
    """A payload description checked against the payload schema, defaults filled in."""
    payload: Dict[str, Any] = schemas.check("payload", document, source)
    apply_defaults(schemas.get("payload"), payload)
    return payload


def as_list(found: Any) -> List[Dict[str, Any]]:
    return list(found) if isinstance(found, list) else [found]
