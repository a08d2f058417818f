"""The manager's ASGI application: API v1 routes, error answers, body limits, the dashboard."""

from __future__ import annotations

import contextlib
import logging
from importlib import resources
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, MutableMapping, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..clock import Clock, SystemClock
from ..errors import ManagerRefused
from . import db, guards, routes_admin, routes_vm
from .settings import Settings
from .sweeper import Sweeper
from .web import Manager, json

log = logging.getLogger("vmagent.manager")
Scope = MutableMapping[str, Any]
ASGI = Callable[
    [Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]
]


def create_app(
    settings: Settings,
    *,
    clock: Optional[Clock] = None,
    engine: Optional[Engine] = None,
    sweep: bool = True,
) -> FastAPI:
    """The application for ``settings``; tables are created if missing."""
    engine = engine or db.make_engine(settings.db_url)
    db.create_all(engine)
    clock = clock or SystemClock()
    state = Manager(engine, settings, clock)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sweeper = Sweeper(engine, settings, clock.time) if sweep else None
        if sweeper:
            sweeper.start()
        log.info(
            "manager ready: %s, database %s",
            settings.url or "(no url)",
            engine.url.render_as_string(hide_password=True),
        )
        yield
        if sweeper:
            sweeper.stop()

    app = FastAPI(
        title="vmagent manager",
        version=__version__,
        lifespan=lifespan,
        description="Reference central manager for vmagent VMs: registry, heartbeats, "
        "instructions, payload queue, accounting. All routes under /api/v1.",
    )
    app.state.manager = state
    app.include_router(routes_vm.router)
    app.include_router(routes_admin.router)
    _add_errors(app)
    static = str(resources.files(__package__).joinpath("static"))
    app.mount("/dashboard", StaticFiles(directory=static, html=True), name="dashboard")

    @app.get("/api/v1/health", tags=["public"], summary="Liveness: answers without a credential")
    def health() -> Response:
        return json({"status": "ok", "version": __version__})

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        return RedirectResponse("/dashboard/")

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    limiter = guards.FailureLimiter(
        settings.auth_failures, settings.auth_failure_window, settings.auth_tracked_addresses
    )
    app.add_middleware(guards.AuthFailureLimit, limiter=limiter, now=clock.time)
    # Outermost, so that 413 and 429 answers carry the headers too.
    app.add_middleware(guards.SecurityHeaders, tls=(settings.url or "").startswith("https:"))
    return app


def factory() -> FastAPI:
    """Entry for uvicorn worker processes: settings from ``$VMAGENT_MANAGER_SETTINGS``."""
    return create_app(Settings.from_env())


def _add_errors(app: FastAPI) -> None:
    @app.exception_handler(ManagerRefused)
    async def refused(_request: Request, exc: ManagerRefused) -> Response:
        return json({"detail": exc.detail}, exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> Response:
        lines = []
        for error in exc.errors()[:10]:
            where = ".".join(
                str(p) for p in error.get("loc", ()) if p not in ("query", "path", "body")
            )
            lines.append(f"{where or '(request)'}: {error.get('msg', 'invalid')}")
        return json({"detail": "invalid request: " + "; ".join(lines)}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        return json({"detail": str(exc.detail)}, exc.status_code)

    @app.exception_handler(OperationalError)
    async def database_down(_request: Request, exc: OperationalError) -> Response:
        log.error("database error: %s", exc.orig)
        return json({"detail": "the manager's database is unavailable; retry later"}, 503)


class BodyLimit:
    """Refuse request bodies above ``limit`` bytes with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGI, limit: int):
        self.app, self.limit = app, limit

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: Dict[bytes, bytes] = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _too_large(send, self.limit)
            return
        seen = 0

        async def counting() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ManagerRefused(413, f"request body exceeds the limit of {self.limit} bytes")
            return message

        await self.app(scope, counting if length is None else receive, send)


async def _too_large(send: Callable[[Any], Awaitable[None]], limit: int) -> None:
    body = json({"detail": f"request body exceeds the limit of {limit} bytes"}, 413).body
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
