"""Test helpers: a real manager process on 127.0.0.1, and a throwaway PostgreSQL cluster.

For vmagent's own tests and for anyone testing against the manager (the monitor, the slot
manager's manager source). Imports no server dependency itself: the manager runs as a child.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence

import requests

from ..client.manager import ManagerClient
from ..process import run, signal_group, stop_child


class RunningManager:
    """A ``vmagent manager serve`` child process and what a client needs to talk to it."""

    def __init__(self, state_dir: str, proc: subprocess.Popen, url: str, log_path: str):
        self.state_dir, self.proc, self.url, self.log_path = state_dir, proc, url, log_path
        with open(os.path.join(state_dir, "admin.token"), encoding="utf-8") as fh:
            self.admin_token = fh.read().strip()
        ca = os.path.join(state_dir, "ca.pem")
        self.ca_file: Optional[str] = ca if url.startswith("https") else None

    def client(self, token: Optional[str] = None) -> ManagerClient:
        """A client with ``token``, by default the admin credential."""
        return ManagerClient(
            self.url, token=token or self.admin_token, ca_file=self.ca_file, timeout=10.0
        )

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def stop(self) -> None:
        """SIGTERM, grace, SIGKILL: a clean shutdown."""
        stop_child(self.proc, grace=10.0)

    def kill(self) -> None:
        """SIGKILL the whole process group at once: a crash."""
        signal_group(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


def start_manager(
    state_dir: str,
    *,
    db: Optional[str] = None,
    workers: int = 1,
    tls: bool = True,
    extra: Sequence[str] = (),
    timeout: float = 60.0,
) -> RunningManager:
    """Initialise ``state_dir`` if needed and serve it on a free port; return once it answers."""
    cli = [sys.executable, "-m", "vmagent"]
    run(cli + ["manager", "init", "--state-dir", state_dir], timeout=60)
    url_file = os.path.join(state_dir, "url")
    if os.path.exists(url_file):
        os.unlink(url_file)  # left behind by a killed manager
    argv = cli + [
        "-v",
        "manager",
        "serve",
        "--state-dir",
        state_dir,
        "--port",
        "0",
        "--workers",
        str(workers),
    ]
    argv += ["--db", db] if db else []
    argv += [] if tls else ["--insecure-http"]
    log_path = os.path.join(state_dir, f"serve-{int(time.time() * 1000)}.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            argv + list(extra),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"manager exited with {proc.returncode}:\n{_read(log_path)[-3000:]}")
        if os.path.exists(url_file):
            manager = RunningManager(state_dir, proc, _read(url_file).strip(), log_path)
            try:
                requests.get(
                    f"{manager.url}/api/v1/health", verify=manager.ca_file or True, timeout=2
                )
                return manager
            except requests.RequestException:
                pass
        time.sleep(0.1)
    stop_child(proc)
    raise RuntimeError(f"manager did not answer within {timeout} s:\n{_read(log_path)[-3000:]}")


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.read()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bin() -> Optional[str]:
    """Debian's PostgreSQL server binaries (newest major version), or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    return os.path.dirname(found[-1]) if found else None


class PostgresCluster:
    """A private PostgreSQL cluster on 127.0.0.1 and a free port, in a temporary directory.

    Run as the ``postgres`` user through ``runuser`` when we are root (PostgreSQL refuses root).
    ``fsync=off`` unless ``durable``: tests need speed, not crash safety of the test database.
    """

    def __init__(self, *, durable: bool = False):
        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError(
                "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin "
                "(apt-get install postgresql)"
            )
        self.bindir, self.durable = bindir, durable
        self.base = tempfile.mkdtemp(prefix="vmagent-pg-", dir="/tmp")
        self.data = os.path.join(self.base, "data")
        self.port = free_port()
        self.as_user: List[str] = []
        if os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam("postgres")
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def start(self) -> str:
        """Create and start the cluster; answers the URL of its ``postgres`` database."""
        run(
            self.as_user
            + [
                f"{self.bindir}/initdb",
                "-D",
                self.data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
            timeout=120,
        )
        options = f"-p {self.port} -k {self.base} -h 127.0.0.1 -c max_connections=200"
        options += "" if self.durable else " -F"
        run(
            self.as_user
            + [
                f"{self.bindir}/pg_ctl",
                "-D",
                self.data,
                "-o",
                options,
                "-l",
                os.path.join(self.base, "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            timeout=90,
        )
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; answers its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            run(
                self.as_user
                + [f"{self.bindir}/pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"],
                timeout=60,
                check=False,
            )
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def heartbeat(instance_id: str, seq: int, status: str = "running", **extra: Any) -> Dict[str, Any]:
    """A valid heartbeat body."""
    body: Dict[str, Any] = {
        "instance_id": instance_id,
        "seq": seq,
        "time": 1.7e9 + seq,
        "status": status,
        "load": [0.5, 0.4, 0.3],
        "uptime": 60.0 * seq,
    }
    body.update(extra)
    return body


def new_vm(manager: RunningManager, cores: int = 8, **enrolment: Any) -> Dict[str, Any]:
    """Enrol and register a fresh VM; answers vm_id, token, instance_id and a client with the VM's token."""
    admin = manager.client()
    token = admin.enrol(**enrolment)["enrolment_token"]
    instance_id = "i-" + uuid.uuid4().hex[:10]
    answer = admin.with_token(token).register(
        instance_id=instance_id,
        hostname=f"{instance_id}.example.org",
        ip="10.1.2.3",
        total_cores=cores,
        total_memory_mb=2000 * cores,
    )
    answer["instance_id"] = instance_id
    answer["client"] = admin.with_token(answer["token"])
    return answer
