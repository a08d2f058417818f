"""JSON Schemas for what crosses a trust boundary: payload descriptions, heartbeats, instructions."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any, Dict, List, Tuple

from ..errors import InputRejected


@cache
def get(name: str) -> Dict[str, Any]:
    """The schema called ``name`` (``payload``, ``heartbeat``, ``instruction``)."""
    data: Dict[str, Any] = json.loads(
        resources.files(__name__).joinpath(f"{name}.json").read_text()
    )
    return data


def problems(name: str, document: Any) -> List[Tuple[str, str]]:
    """``(dotted.path, message)`` pairs for everything schema ``name`` rejects in ``document``."""
    from ..config import validation_problems

    return validation_problems(get(name), document)


def check(name: str, document: Any, source: str = "input") -> Any:
    """Return ``document`` if schema ``name`` accepts it, else raise ``InputRejected`` listing why."""
    found = problems(name, document)
    if found:
        detail = "; ".join(f"{path or '(top)'}: {msg}" for path, msg in found[:10])
        raise InputRejected(f"{source}: invalid {name}: {detail}")
    return document
