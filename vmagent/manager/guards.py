"""ASGI guards around the manager: security headers on every answer, a limit on failed authentications.

The failure limit is per client address and per manager process, in memory: after
``auth_failures`` answers of 401 to one address within ``auth_failure_window`` seconds, that
address is answered 429 with Retry-After until its oldest failure leaves the window. Only 401s
count (no, unknown, expired or revoked credential), so VMs of other addresses are never affected,
and a VM's own valid requests never add to its count. At most ``auth_tracked_addresses`` are
remembered; the least recently failing is forgotten first.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from typing import Any, Awaitable, Callable, Deque, List, MutableMapping, Optional, Tuple

import orjson

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGI = Callable[[Scope, Receive, Send], Awaitable[None]]

# The dashboard loads only its own files; nothing may frame it.
STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# FastAPI's /docs and /redoc pages load Swagger UI and ReDoc from public CDNs with inline scripts.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
    "https://cdn.redoc.ly; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")
HSTS = "max-age=31536000"


class SecurityHeaders:
    """Add CSP, X-Frame-Options, X-Content-Type-Options, Referrer-Policy (and HSTS over TLS)."""

    def __init__(self, app: ASGI, tls: bool):
        self.app = app
        common = [
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
        ]
        if tls:
            common.append((b"strict-transport-security", HSTS.encode()))
        self.strict = common + [(b"content-security-policy", STRICT_CSP.encode())]
        self.docs = common + [(b"content-security-policy", DOCS_CSP.encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        extra = self.docs if path.startswith(DOCS_PATHS) else self.strict

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                added = [(k, v) for k, v in extra if k not in present]
                message = dict(message, headers=list(message.get("headers", [])) + added)
            await send(message)

        await self.app(scope, receive, sending)


class FailureLimiter:
    """Recent authentication failures per address, bounded in addresses and in entries per address."""

    def __init__(self, limit: int, window: float, addresses: int):
        self.limit, self.window, self.addresses = limit, window, addresses
        self.failures: OrderedDict[str, Deque[float]] = OrderedDict()

    def fail(self, address: str, now: float) -> None:
        times = self.failures.pop(address, None) or deque(maxlen=max(1, self.limit))
        times.append(now)
        self.failures[address] = times  # now the most recent
        while len(self.failures) > self.addresses:
            self.failures.popitem(last=False)

    def retry_after(self, address: str, now: float) -> Optional[float]:
        """Seconds until ``address`` may try again, or None when it is not blocked."""
        times = self.failures.get(address)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self.failures[address]
            return None
        if len(times) < self.limit:
            return None
        return times[0] + self.window - now


class AuthFailureLimit:
    """Answer 429 to an address with too many recent 401s; count the 401s the app answers."""

    def __init__(self, app: ASGI, limiter: FailureLimiter, now: Callable[[], float]):
        self.app, self.limiter, self.now = app, limiter, now

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client: Optional[Tuple[str, int]] = scope.get("client")
        address = client[0] if client else "unknown"
        wait = self.limiter.retry_after(address, self.now())
        if wait is not None:
            await _too_many(send, wait, self.limiter)
            return

        async def watching(message: Any) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                self.limiter.fail(address, self.now())
            await send(message)

        await self.app(scope, receive, watching)


async def _too_many(send: Send, wait: float, limiter: FailureLimiter) -> None:
    seconds = max(1, math.ceil(wait))
    detail = (
        f"too many failed authentications from this address ({limiter.limit} within "
        f"{limiter.window:g} s); retry after {seconds} s"
    )
    body = orjson.dumps({"detail": detail})
    headers: List[Tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(seconds).encode()),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})
