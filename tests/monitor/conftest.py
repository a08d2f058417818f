"""A small real HTTP endpoint speaking the manager's heartbeat API, whose outages tests control."""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any, Dict, Iterator, List

import pytest


class Endpoint:
    """Records registrations, heartbeats and halting notices; answers 503 while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.heartbeats: List[Dict[str, Any]] = []
        self.halting: List[Dict[str, Any]] = []
        self.instructions: List[Any] = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> Any:
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"] or 0)) or b"{}")
                if endpoint.down:
                    return self._answer(503, {"detail": "down for maintenance"})
                if self.path == "/api/v1/register":
                    return self._answer(201, {"vm_id": "vm-1", "token": "vm-token", "heartbeat_period": None})
                if self.path.endswith("/heartbeat"):
                    endpoint.heartbeats.append(body)
                    pending, endpoint.instructions = endpoint.instructions, []
                    return self._answer(200, {"instructions": pending, "heartbeat_period": None})
                if self.path.endswith("/halting"):
                    endpoint.halting.append(body)
                    return self._answer(200, {})
                return self._answer(404, {"detail": "no such route"})

            def _answer(self, code: int, doc: Any) -> None:
                data = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    """A running endpoint on 127.0.0.1, stopped after the test."""
    found = Endpoint()
    thread = threading.Thread(target=found.server.serve_forever, daemon=True)
    thread.start()
    yield found
    found.server.shutdown()
    found.server.server_close()
