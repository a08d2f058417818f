"""What every route needs: the manager's context, bearer tokens, JSON bodies in and out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Dict, List, Optional, Tuple

import orjson
from fastapi import Depends, Path, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine

from ..clock import Clock
from ..errors import ManagerRefused
from . import bodies
from .settings import Settings

bearer_scheme = HTTPBearer(auto_error=False, description="admin, enrolment or VM token")


@dataclass(frozen=True)
class Manager:
    """One manager process: its database engine, settings and clock."""

    engine: Engine
    settings: Settings
    clock: Clock


async def manager(request: Request) -> Manager:
    # async on purpose, like ``token``: FastAPI runs plain ``def`` dependencies in a thread pool,
    # which costs more than the whole database work of a heartbeat.
    found: Manager = request.app.state.manager
    return found


async def token(
    creds: Annotated[Optional[HTTPAuthorizationCredentials], Depends(bearer_scheme)],
) -> Optional[str]:
    """The presented bearer token; None when there is none (routes answer 401 themselves)."""
    if creds is None or not creds.credentials or len(creds.credentials) > 512:
        return None
    return creds.credentials


ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"  # VM and payload ids, as in the payload schema
NO_NUL = r"^[^\x00]*$"
VmId = Annotated[str, Path(pattern=ID, description="a VM id as answered by registration")]
PayloadId = Annotated[str, Path(pattern=ID, description="a payload id")]
ManagerDep = Annotated[Manager, Depends(manager)]
TokenDep = Annotated[Optional[str], Depends(token)]


def json(data: Any, status: int = 200) -> Response:
    body = orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)  # column names are str subclasses
    return Response(body, status_code=status, media_type="application/json")


async def read_body(request: Request, name: str, limit: int) -> Any:
    """The request's JSON body if it is valid ``name``; else ``(None, problem)`` to raise after auth."""
    raw = await request.body()
    if len(raw) > limit:
        raise ManagerRefused(413, f"{name} body of {len(raw)} bytes exceeds the limit of {limit}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Invalid(f"invalid {name}: body is not JSON ({exc})")
    found = bodies.problems(name, doc)
    if found:
        return Invalid(bodies.explain(name, found))
    return storable(name, raw, doc)


INT_LIMIT = 2**63 - 1


def storable(name: str, raw: bytes, doc: Any) -> Any:
    """``doc`` if every value fits the database (no NUL in text, numbers within 64 bits), else ``Invalid``."""
    if b"\\u0000" in raw:
        return Invalid(f"invalid {name}: text must not contain NUL characters")
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, (int, float)) and not -INT_LIMIT <= item <= INT_LIMIT:
            # Beyond 64 bits orjson hands over floats: an "integer" 2**70 arrives as 1.18e21.
            return Invalid(
                f"invalid {name}: number {item} is out of range (magnitude at most 2**63 - 1)"
            )
    return doc


async def read_payloads(request: Request, limit: int) -> Any:
    """``(documents, was_a_list)`` for one payload or a list of them, or ``Invalid``."""
    raw = await request.body()
    if len(raw) > limit:
        raise ManagerRefused(413, f"payload body of {len(raw)} bytes exceeds the limit of {limit}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Invalid(f"invalid payload description: body is not JSON ({exc})")
    docs = doc if isinstance(doc, list) else [doc]
    if not docs or len(docs) > 1000:
        return Invalid("invalid payload list: give 1 to 1000 payloads")
    found: List[Tuple[str, str]] = []
    for index, item in enumerate(docs):
        prefix = f"[{index}]." if isinstance(doc, list) else ""
        found.extend((prefix + path, message) for path, message in bodies.problems("payload", item))
    if found:
        return Invalid(bodies.explain("payload", found))
    checked = storable("payload", raw, doc)
    return checked if isinstance(checked, Invalid) else (docs, isinstance(doc, list))


class Invalid:
    """A body that failed validation; raised as 422 once the caller has been authenticated."""

    def __init__(self, detail: str):
        self.detail = detail


def valid(doc: Any) -> Any:
    if isinstance(doc, Invalid):
        raise ManagerRefused(422, doc.detail)
    return doc


def body_doc(name: str, *, array_too: bool = False) -> Dict[str, Any]:
    """``openapi_extra`` publishing a body's JSON Schema (raw bodies are not pydantic models)."""
    schema: Dict[str, Any] = bodies.schema(name)
    if array_too:
        schema = {
            "anyOf": [schema, {"type": "array", "items": schema, "minItems": 1, "maxItems": 1000}]
        }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


ERRORS: Dict[int | str, Dict[str, Any]] = {
    code: {
        "description": text,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"detail": {"type": "string"}},
                    "required": ["detail"],
                }
            }
        },
    }
    for code, text in (
        (401, "no, unknown, expired or revoked credential"),
        (403, "credential of another VM or of the wrong kind"),
        (404, "no such VM or payload"),
        (409, "not allowed in the current state"),
        (413, "body too large"),
        (422, "invalid body or query"),
    )
}
