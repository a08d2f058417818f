"""Deadlines: a manager that answers one byte at a time holds up neither a call nor the monitor."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List

import pytest
from conftest import Recorder

from vmagent.errors import ManagerUnavailable
from vmagent.monitor.endpoints.session import JsonSession
from vmagent.monitor.endpoints.vac import VacEndpoint
from vmagent.monitor.loop import Monitor
from vmagent.monitor.policies import Decision
from vmagent.testing import make_config, write_config

VMAGENT = [sys.executable, "-m", "vmagent"]
GUARD = 60  # seconds a test waits before calling something stuck; never a measure of speed


class Trickler:
    """A server on 127.0.0.1 that answers registrations at once and every other request one byte at a time.

    ``part`` says where the trickle starts: in the ``body`` (after complete headers) or in the
    ``headers``. The trickle goes on until the client hangs up or the server is closed.
    """

    def __init__(self, part: str = "body", gap: float = 0.5) -> None:
        self.part, self.gap = part, gap
        self.paths: List[str] = []
        self.stopped = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def trickled(self) -> List[str]:
        """The paths of the requests being (or that were) answered slowly."""
        return [p for p in self.paths if not p.endswith("/register")]

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                path = self._read_request(conn)
                self.paths.append(path)
                if path.endswith("/register"):
                    answer = json.dumps(
                        {"vm_id": "vm-1", "token": "vm-token", "heartbeat_period": None}
                    ).encode()
                    conn.sendall(
                        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nConnection: close\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
                    )
                    return
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
                conn.sendall(head if self.part == "body" else b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while not self.stopped.wait(self.gap):
                    conn.sendall(b" " if self.part == "body" else b"x")
            except OSError:
                return

    @staticmethod
    def _read_request(conn: socket.socket) -> str:
        conn.settimeout(30)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                raise OSError("client went away")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            body += conn.recv(65536)
        return head.split(b" ")[1].decode()


@pytest.fixture
def trickler() -> Iterator[Trickler]:
    """A trickling server, closed after the test (which also ends any call still reading from it)."""
    server = Trickler()
    yield server
    server.close()


def registered(root: Any) -> None:
    """A VM that has registered already (its credential stored), so the first call is a heartbeat."""
    token = root / "etc/vmagent/token"
    token.parent.mkdir(parents=True)
    token.write_text("enrol-me")
    token.chmod(0o600)
    stored = root / "var/lib/vmagent/manager.json"
    stored.parent.mkdir(parents=True)
    stored.write_text(json.dumps({"vm_id": "vm-1", "token": "vm-token"}))
    stored.chmod(0o600)


def outcome_of(call: Callable[[], Any]) -> Dict[str, Any]:
    """Run ``call`` in a thread and give it ``GUARD`` seconds; what it raised, or that it never returned."""
    found: Dict[str, Any] = {}

    def target() -> None:
        try:
            found["answer"] = call()
        except Exception as exc:  # noqa: BLE001 - the test looks at what was raised
            found["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(GUARD)
    assert not thread.is_alive(), f"the call was still running after {GUARD} s"
    return found


@pytest.mark.parametrize("part", ["body", "headers"])
def test_a_trickling_answer_ends_at_the_deadline(part):
    """JsonSession.post raises ManagerUnavailable when no complete answer came within its timeout,
    however steadily the bytes trickle (in the body or in the headers)."""
    server = Trickler(part=part)
    try:
        found = outcome_of(
            lambda: JsonSession(server.url, timeout=2).post("/vms/vm-1/heartbeat", {"seq": 1})
        )
    finally:
        server.close()
    assert isinstance(found.get("error"), ManagerUnavailable), found
    assert "no complete answer within 2 s" in found["error"].message


def test_a_trickling_vac_url_ends_at_the_deadline(tmp_path, trickler):
    """The vac endpoint's PUT to a joboutputs URL raises ManagerUnavailable once its timeout has passed."""
    vac = VacEndpoint(make_config(tmp_path, []), {"joboutputs": f"{trickler.url}/jo", "timeout": 2})
    found = outcome_of(lambda: vac.send({"instance_id": "i-test", "seq": 1, "time": 1.0}, {}))
    assert isinstance(found.get("error"), ManagerUnavailable), found
    assert "no complete answer within 2 s" in found["error"].message


def test_final_reports_do_not_hold_the_halt(tmp_path, trickler, clock):
    """A manager trickling its answer to the final heartbeat delays the halt action by at most
    monitor.final_reports_seconds; the other endpoints still get their final reports."""
    registered(tmp_path)
    config = make_config(
        tmp_path,
        [],
        manager={"url": trickler.url, "token_file": "/etc/vmagent/token", "timeout": 600},
        monitor={
            "endpoints": [{"name": "http"}, {"name": "log"}],
            "halt_action": "exit",
            "fizzle_seconds": None,
            "final_reports_seconds": 3,
        },
    )
    action = Recorder()
    monitor = Monitor(config, clock=clock, halt_action=action, boot_time=clock.time())
    decision = Decision("lifetime", "lifetime of 60 s reached", 100)
    outcome_of(lambda: monitor.halt(decision))
    assert action.calls == [decision]
    assert trickler.trickled() == ["/api/v1/vms/vm-1/heartbeat"]
    logged = (tmp_path / "var/log/vmagent/heartbeats.jsonl").read_text().splitlines()
    assert [sorted(json.loads(line)) for line in logged] == [["heartbeat"], ["halting"]]


# --- the monitor as a real process, with one endpoint stuck -------------------------------------


class Child:
    """``vmagent monitor run`` heartbeating to a trickling manager (http) and a working vac URL."""

    def __init__(self, tmp_path: Any, trickler: Trickler, endpoint: Any) -> None:
        registered(tmp_path)
        path = write_config(
            tmp_path,
            [],
            manager={"url": trickler.url, "token_file": "/etc/vmagent/token", "timeout": 600},
            monitor={
                "endpoints": [
                    {"name": "http"},
                    {"name": "vac", "options": {"joboutputs": f"{endpoint.url}/jo"}},
                ],
                "period_seconds": 1,
                "check_seconds": 1,
                "halt_action": "exit",
                "fizzle_seconds": None,
            },
        )
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(tmp_path / "notify.sock"))
        self.notify.settimeout(1)
        env = {k: v for k, v in os.environ.items() if k != "WATCHDOG_PID"}
        env.update(NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="2000000")
        self.out, self.err = tmp_path / "stdout", tmp_path / "stderr"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                [*VMAGENT, "-c", path, "monitor", "run"],
                env=env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )

    def pets_after(self, started: Callable[[], bool], count: int) -> int:
        """WATCHDOG=1 messages received once ``started()`` holds, until ``count`` came or GUARD passed."""
        pets, deadline = 0, time.monotonic() + GUARD
        while pets < count and time.monotonic() < deadline:
            try:
                message = self.notify.recv(4096).decode()
            except socket.timeout:
                continue
            if "WATCHDOG=1" in message and started():
                pets += 1
        return pets

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.notify.close()


@pytest.fixture
def child(tmp_path, trickler, endpoint) -> Iterator[Child]:
    """The monitor child, once its heartbeat to the trickling manager is in flight."""
    found = Child(tmp_path, trickler, endpoint)
    try:
        deadline = time.monotonic() + GUARD
        while not trickler.trickled() and time.monotonic() < deadline and found.proc.poll() is None:
            time.sleep(0.1)
        assert trickler.trickled(), f"no heartbeat reached the manager: {found.err.read_text()}"
        yield found
    finally:
        found.stop()


def wait_for(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + GUARD
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


def test_a_stuck_endpoint_holds_up_neither_the_others_nor_the_watchdog(child, trickler, endpoint):
    """While one heartbeat to a trickling manager is in flight, the vac URL keeps getting heartbeats, the
    systemd watchdog keeps being petted, and no second request is queued to the stuck manager."""
    assert child.pets_after(lambda: bool(trickler.trickled()), 3) >= 3, child.err.read_text()
    assert wait_for(lambda: len(endpoint.puts.get("/jo/heartbeat", [])) >= 3), child.err.read_text()
    assert trickler.trickled() == ["/api/v1/vms/vm-1/heartbeat"]
    assert child.proc.poll() is None


def test_sigterm_stops_the_monitor_while_a_call_is_stuck(child, trickler, tmp_path):
    """SIGTERM while a heartbeat to a trickling manager is in flight stops the monitor without halting."""
    child.proc.send_signal(signal.SIGTERM)
    try:
        child.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the monitor did not stop within 30 s of SIGTERM")
    assert child.proc.returncode == 0, child.err.read_text()
    assert "stopped by signal 15" in child.out.read_text()
    assert "stopped by signal 15; the VM is not halted" in child.err.read_text()
    assert not (tmp_path / "var/lib/vmagent/shutdown_message").exists()
    assert not any(p.endswith("/halting") for p in trickler.paths)
