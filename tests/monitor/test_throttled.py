"""A manager that answers 429 (too many failed authentications) is an outage to retry, not a refusal."""

from __future__ import annotations

import http.server
import threading

import pytest

from vmagent.client.manager import ManagerClient, registration
from vmagent.errors import ManagerUnavailable
from vmagent.monitor.endpoints.session import JsonSession
from vmagent.testing import make_config, send_json


class Throttling(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        send_json(self, 429, {"detail": "too many failed authentications; retry in 300 s"})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def throttling_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Throttling)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_client_takes_429_as_unavailable(throttling_url):
    """ManagerClient raises ManagerUnavailable (retry with backoff) for 429, with the manager's detail."""
    with pytest.raises(ManagerUnavailable, match="429 too many failed"):
        ManagerClient(throttling_url, token="t").heartbeat("vm-1", {"seq": 1})


def test_monitor_session_takes_429_as_unavailable(throttling_url):
    """The monitor's JsonSession raises ManagerUnavailable for 429, so the monitor backs off."""
    with pytest.raises(ManagerUnavailable, match="HTTP 429"):
        JsonSession(throttling_url, token="t").post("/vms/vm-1/heartbeat", {"seq": 1})


def test_registration_gives_the_slot_managers_core_count(tmp_path):
    """A VM registers the cores its slot manager hands out (slots.cores), the count claims are held to."""
    config = make_config(str(tmp_path), slots={"cores": 7})
    assert registration(config, "http://127.0.0.1:9")["total_cores"] == 7
