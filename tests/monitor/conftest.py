"""A small real HTTP endpoint speaking the manager's VM API (and taking PUTs), whose outages tests control."""

from __future__ import annotations

import http.server
import json
import random
import threading
from typing import Any, Dict, Iterator, List

import pytest

from vmagent import schemas
from vmagent.monitor.loop import Monitor
from vmagent.testing import make_config, send_json


class Endpoint:
    """Records registrations, heartbeats, halting notices and PUTs; answers 503 while ``down``.

    Every heartbeat is checked against the heartbeat schema; what it rejects lands in ``invalid``.
    """

    def __init__(self) -> None:
        self.down = False
        self.heartbeats: List[Dict[str, Any]] = []
        self.invalid: List[Any] = []
        self.halting: List[Dict[str, Any]] = []
        self.instructions: List[Any] = []
        self.sticky: List[
            Any
        ] = []  # answered with every heartbeat, as the manager re-sends unacked ones
        self.puts: Dict[str, List[bytes]] = {}
        self.period: Any = None
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> Any:
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's naming
                body = json.loads(
                    self.rfile.read(int(self.headers["Content-Length"] or 0)) or b"{}"
                )
                if endpoint.down:
                    return self._answer(503, {"detail": "down for maintenance"})
                if self.path == "/api/v1/register":
                    return self._answer(
                        201, {"vm_id": "vm-1", "token": "vm-token", "heartbeat_period": None}
                    )
                if self.path.endswith("/heartbeat"):
                    endpoint.heartbeats.append(body)
                    if schemas.problems("heartbeat", body):
                        endpoint.invalid.append(body)
                    pending, endpoint.instructions = endpoint.instructions, []
                    return self._answer(
                        200,
                        {
                            "instructions": pending + endpoint.sticky,
                            "heartbeat_period": endpoint.period,
                        },
                    )
                if self.path.endswith("/halting"):
                    endpoint.halting.append(body)
                    return self._answer(200, {})
                return self._answer(404, {"detail": "no such route"})

            def do_PUT(self) -> None:  # noqa: N802 - the stdlib's naming
                data = self.rfile.read(int(self.headers["Content-Length"] or 0))
                if endpoint.down:
                    return self._answer(503, {"detail": "down"})
                endpoint.puts.setdefault(self.path, []).append(data)
                return self._answer(201, {})

            def _answer(self, code: int, doc: Any) -> None:
                send_json(self, code, doc)

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


class Recorder:
    """A halt action that only records its calls."""

    def __init__(self) -> None:
        self.calls: List[Any] = []

    def __call__(self, decision: Any) -> None:
        self.calls.append(decision)


def monitor_for(tmp_path: Any, endpoint: Endpoint, clock: Any, **settings: Any) -> Any:
    """A monitor rooted at ``tmp_path`` heartbeating to ``endpoint`` (http) and a vac directory; booted now."""
    token = tmp_path / "etc/vmagent/token"
    token.parent.mkdir(parents=True, exist_ok=True)
    token.write_text("enrol-me")
    token.chmod(0o600)
    monitor = {
        "period_seconds": 60,
        "check_seconds": 10,
        "fizzle_seconds": None,
        "endpoints": [{"name": "http"}, {"name": "vac"}],
        "halt_action": "exit",
        **settings,
    }
    config = make_config(
        tmp_path,
        [],
        monitor=monitor,
        manager={"url": endpoint.url, "token_file": "/etc/vmagent/token", "timeout": 2},
    )
    action = Recorder()
    found = Monitor(
        config, clock=clock, rng=random.Random(7), halt_action=action, boot_time=clock.time()
    )
    return found, action, config


def run_for(monitor: Monitor, clock: Any, seconds: float) -> None:
    """Tick the monitor each virtual second for ``seconds`` or until it decides to halt; after each tick
    wait (real time, up to a minute) for the endpoint calls it started, so runs do not depend on load."""
    end = clock.time() + seconds
    while clock.time() < end and monitor.decision is None:
        monitor.tick()
        monitor.settle(60)
        clock.advance(1)
