"""``vmagent manager init`` and ``serve`` from the command line."""

from __future__ import annotations

import socket
import ssl
import stat
import subprocess
import sys

import pytest
from cryptography import x509

from vmagent.manager import pki
from vmagent.manager.testing import heartbeat, new_vm

CLI = [sys.executable, "-m", "vmagent", "manager"]


def test_init_creates_private_files_and_is_idempotent(tmp_path):
    """init writes a CA, a server certificate and an admin token (0600), and keeps them when run again."""
    first = pki.init(str(tmp_path))
    assert set(first.values()) == {"created"}
    token = (tmp_path / "admin.token").read_text()
    assert stat.S_IMODE((tmp_path / "admin.token").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "server.key").stat().st_mode) == 0o600
    assert set(pki.init(str(tmp_path)).values()) == {"kept"}
    assert (tmp_path / "admin.token").read_text() == token


def test_server_certificate_is_valid_for_loopback_names(tmp_path):
    """The server certificate verifies against the CA for 127.0.0.1 and localhost."""
    pki.init(str(tmp_path), names=["manager.example.org"])
    cert = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert "manager.example.org" in names.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_https_handshake_verifies_with_the_ca(start, tmp_path):
    """A TLS client trusting only ca.pem completes the handshake with the served certificate."""
    manager = start("sqlite")
    context = ssl.create_default_context(cafile=manager.ca_file)
    port = int(manager.url.rsplit(":", 1)[1])
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_serve_without_init_exits_2_with_a_hint(tmp_path):
    """Serving a directory that was never initialised fails with exit 2 and says what to run."""
    done = subprocess.run(
        CLI + ["serve", "--state-dir", str(tmp_path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "admin.token" in done.stderr and "vmagent manager init" in done.stderr


def test_serve_on_a_busy_port_exits_2(tmp_path):
    """A port already taken is reported as a usage error, not a traceback."""
    pki.init(str(tmp_path))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = subprocess.run(
            CLI + ["serve", "--state-dir", str(tmp_path), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2 and f"127.0.0.1:{port}" in done.stderr


@pytest.mark.parametrize(
    ("db", "words"),
    [
        ("mysql+nosuchdriver://x/y", "not a usable database URL"),
        ("postgresql://nobody@127.0.0.1:{port}/none", "cannot open the database"),
    ],
)
def test_serve_with_an_unusable_database_exits_2(tmp_path, db, words):
    """A database URL that cannot be used is reported with exit 2 before anything listens."""
    from vmagent.manager.testing import free_port

    pki.init(str(tmp_path))
    done = subprocess.run(
        CLI
        + [
            "serve",
            "--state-dir",
            str(tmp_path),
            "--port",
            "0",
            "--db",
            db.format(port=free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert not (tmp_path / "url").exists()


def test_operator_command_without_manager_exits_2(tmp_path):
    """``vmagent manager vms`` with no url file says where it looked."""
    done = subprocess.run(
        CLI + ["vms", "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and str(tmp_path / "url") in done.stderr


@pytest.mark.postgres
def test_two_manager_processes_share_one_postgresql_fleet(start):
    """With --workers 2 on PostgreSQL, every VM's heartbeats and instructions stay consistent."""
    manager = start("postgres", workers=2)
    vms = [new_vm(manager) for _ in range(4)]
    admin = manager.client()
    drains = {vm["vm_id"]: admin.instruct(vm["vm_id"], "drain") for vm in vms}
    for seq in range(1, 6):
        for vm in vms:
            answer = vm["client"].heartbeat(vm["vm_id"], heartbeat(vm["instance_id"], seq))
            assert [i["id"] for i in answer["instructions"]] == [drains[vm["vm_id"]]]
    assert all(len(admin.vm(vm["vm_id"])["heartbeats"]) == 5 for vm in vms)
