"""JSON Schemas of the API's request bodies and their validation into clear 422 details.

Heartbeats, payloads, results and instructions use the shared schemas in ``vmagent/schemas``; the
manager-only bodies (enrolment, registration, halting, claim) are defined here.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any, Callable, Dict, List, Tuple

import jsonschema

from .. import schemas
from ..config import apply_defaults

# No control characters (CR, LF, ESC...) in names that end up in logs and on the dashboard; NUL
# is refused for every text by web.storable, with its own message.
NAME = {
    "type": "string",
    "maxLength": 256,
    "pattern": "^[^\\x01-\\x1f\\x7f]*$",
    "description": "no control characters",
}
IDENT = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"}
COUNT = {"type": "integer", "minimum": 0, "maximum": 1 << 40}

LOCAL: Dict[str, Dict[str, Any]] = {
    "enrolment": {
        "title": "enrolment request",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "site": NAME,
            "ce": NAME,
            "image": NAME,
            "running_pod": NAME,
            "vo": NAME,
            "ttl_seconds": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 30 * 86400,
                "default": 3600,
            },
            "uses": {
                "type": "integer",
                "minimum": 1,
                "maximum": 100000,
                "default": 1,
                "description": "VMs the token registers; more than one (a vacuum platform's "
                "machinetype) needs site and running_pod or vo",
            },
        },
    },
    "register": {
        "title": "VM registration",
        "type": "object",
        "additionalProperties": False,
        "required": ["instance_id", "hostname", "ip", "total_cores", "total_memory_mb"],
        "properties": {
            "instance_id": IDENT,
            "hostname": NAME,
            "ip": dict(NAME, maxLength=64),
            "total_cores": {"type": "integer", "minimum": 1, "maximum": 4096},
            "total_memory_mb": COUNT,
            "site": NAME,
            "ce": NAME,
            "image": NAME,
            "running_pod": NAME,
            "vo": NAME,
            "vmagent_version": {"type": "string", "maxLength": 64},
        },
    },
    "halting": {
        "title": "halting declaration",
        "type": "object",
        "additionalProperties": False,
        "required": ["reason"],
        "properties": {
            "reason": {"type": "string", "maxLength": 1024},
            "vacuum_code": {"type": "integer", "minimum": 0, "maximum": 999, "default": 200},
            "message": {"type": "string", "maxLength": 4096, "default": ""},
        },
    },
    "claim": {
        "title": "payload claim",
        "type": "object",
        "additionalProperties": False,
        "required": ["free_cores"],
        "properties": {
            "free_cores": {"type": "integer", "minimum": 0, "maximum": 4096},
            "free_memory_mb": {
                "type": ["integer", "null"],
                "minimum": 0,
                "maximum": 1 << 40,
                "default": None,
            },
            "remaining_seconds": {"type": ["number", "null"], "default": None},
            "total_cores": {
                "type": ["integer", "null"],
                "minimum": 1,
                "maximum": 4096,
                "default": None,
            },
            "running_pod": {"type": ["string", "null"], "maxLength": 256, "default": None},
            "vo": {"type": ["string", "null"], "maxLength": 256, "default": None},
            "max": {"type": "integer", "minimum": 1, "maximum": 4096, "default": 1},
            "ids": {
                "type": ["array", "null"],
                "maxItems": 64,
                "default": None,
                "items": {"type": "string", "minLength": 1, "maxLength": 128},
                "description": "lease only these payloads (after a peek)",
            },
            "peek": {
                "type": "boolean",
                "default": False,
                "description": "list up to max matching payloads, each fitting on its own, "
                "without leasing them",
            },
        },
    },
}


@cache
def schema(name: str) -> Dict[str, Any]:
    """The JSON Schema of body ``name``, without ``$schema`` (as published in the OpenAPI document)."""
    if name in LOCAL:
        found = copy.deepcopy(LOCAL[name])
    elif name == "instruction_request":  # what an operator sends: an instruction without its id
        found = copy.deepcopy(schemas.get("instruction"))
        found["title"] = "instruction request"
        del found["properties"]["id"]
        found["required"] = ["action"]
    else:
        found = copy.deepcopy(schemas.get(name))
    found.pop("$schema", None)
    return found


@cache
def _fast(name: str) -> Callable[[Any], bool]:
    """A quick yes for valid documents: fastjsonschema's compiled check when installed.

    Its drafts (4 to 7) cover every keyword our schemas use. Only a yes is trusted; on a no,
    jsonschema decides and explains, so the two can never disagree about what is accepted
    unless fastjsonschema accepts something jsonschema refuses (tests check they agree).
    """
    try:
        import fastjsonschema
    except ImportError:
        return jsonschema.Draft202012Validator(schema(name)).is_valid
    draft7 = dict(schema(name), **{"$schema": "http://json-schema.org/draft-07/schema#"})
    check = fastjsonschema.compile(draft7)

    def valid(doc: Any) -> bool:
        try:
            check(doc)
        except fastjsonschema.JsonSchemaException:
            return False
        return True

    return valid


def problems(name: str, doc: Any) -> List[Tuple[str, str]]:
    """``(path, message)`` pairs; empty when ``doc`` is valid. The fast path skips error collection."""
    if _fast(name)(doc):
        return []
    if name in LOCAL or name == "instruction_request":
        from ..config import validation_problems

        return validation_problems(schema(name), doc)
    return schemas.problems(name, doc)


def explain(name: str, found: List[Tuple[str, str]]) -> str:
    """One line naming the body and each problem, e.g. ``invalid heartbeat: seq: -1 is less than...``."""
    listed = "; ".join(f"{path or '(top)'}: {message}" for path, message in found[:10])
    more = f" (and {len(found) - 10} more)" if len(found) > 10 else ""
    return f"invalid {schema(name).get('title', name)}: {listed}{more}"


def with_defaults(name: str, doc: Dict[str, Any]) -> Dict[str, Any]:
    apply_defaults(schema(name), doc)
    return doc
