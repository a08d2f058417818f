"""The vac endpoint against a Vcycle-like joboutputs server: HTTPS that takes a PUT only with the VM's
client certificate (a real TLS server on 127.0.0.1 verifying client certificates against a test CA)."""

from __future__ import annotations

import datetime
import http.server
import json
import random
import shutil
import ssl
import subprocess
import sys
import threading
from typing import Any, Dict, Iterator, List

import pytest
from conftest import Recorder, run_for
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vmagent.errors import ManagerRefused, ManagerUnavailable
from vmagent.monitor.endpoints.vac import VacEndpoint
from vmagent.monitor.loop import Monitor
from vmagent.monitor.policies import Decision
from vmagent.testing import make_config

DECISION = Decision("no-payloads", "no payload or pilot ran for 300 s", 200)
VM_DN = "/DC=org/DC=example/O=vmagent tests/CN=vm-1"
SHORT = {"domainComponent": "DC", "organizationName": "O", "commonName": "CN"}
OID = {"DC": NameOID.DOMAIN_COMPONENT, "O": NameOID.ORGANIZATION_NAME, "CN": NameOID.COMMON_NAME}
JOBOUTPUTS = "/machines/space1/vm-1/joboutputs"


def _name(dn: str) -> x509.Name:
    pairs = [part.split("=", 1) for part in dn.strip("/").split("/")]
    return x509.Name([x509.NameAttribute(OID[key], value) for key, value in pairs])


def _pem(key: Any, password: bytes = b"") -> bytes:
    crypt: Any = serialization.NoEncryption()
    if password:
        crypt = serialization.BestAvailableEncryption(password)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, crypt)


class Authority:
    """A test CA issuing a server certificate for 127.0.0.1 and client certificates by DN."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name("/O=vmagent tests/CN=test joboutputs CA")
        constraints = x509.BasicConstraints(ca=True, path_length=None)
        self.cert = self._builder(self.name, self.key).add_extension(constraints, True)
        self.cert = self.cert.sign(self.key, hashes.SHA256())
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def _builder(self, subject: x509.Name, key: Any) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def issue(self, dn: str, server: bool = False) -> Dict[str, bytes]:
        """A certificate for ``dn`` (for 127.0.0.1 when ``server``): its PEM and its key's PEM."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = self._builder(_name(dn), key)
        if server:
            import ipaddress

            names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), False)
        cert = builder.sign(self.key, hashes.SHA256())
        return {"cert": cert.public_bytes(serialization.Encoding.PEM), "key": _pem(key), "obj": key}

    def proxy(self, dn: str) -> bytes:
        """One PEM file holding certificate, key and issuer, in the order of an X.509 proxy file."""
        issued = self.issue(dn)
        return issued["cert"] + issued["key"] + self.pem


def subject_dn(peer: Dict[str, Any]) -> str:
    """The peer certificate's subject as Apache's SSL_CLIENT_S_DN (which Vcycle compares) writes it."""
    rdns = peer.get("subject", ())
    return "".join(f"/{SHORT.get(k, k)}={v}" for rdn in rdns for k, v in rdn)


class JoboutputsServer(http.server.ThreadingHTTPServer):
    """HTTPS requiring a client certificate of the test CA; a PUT lands only from ``VM_DN``."""

    daemon_threads = True

    def __init__(self, authority: Authority, workdir: Any) -> None:
        super().__init__(("127.0.0.1", 0), JoboutputsHandler)
        issued = authority.issue("/O=vmagent tests/CN=127.0.0.1", server=True)
        (workdir / "server.pem").write_bytes(issued["cert"] + issued["key"])
        (workdir / "ca.pem").write_bytes(authority.pem)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(workdir / "server.pem"))
        self.context.load_verify_locations(str(workdir / "ca.pem"))
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.url = f"https://127.0.0.1:{self.server_address[1]}"
        self.puts: Dict[str, List[bytes]] = {}
        self.subjects: List[str] = []
        self.refused: List[str] = []

    def get_request(self) -> Any:
        sock, address = super().get_request()
        # the handshake happens in the request's own thread, so a failing client holds up no other
        wrapped = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return wrapped, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.refused.append(repr(sys.exc_info()[1]))


class JoboutputsHandler(http.server.BaseHTTPRequestHandler):
    server: JoboutputsServer

    def setup(self) -> None:
        self.request.settimeout(60)
        self.request.do_handshake()  # raises without a certificate of the test CA
        super().setup()

    def do_PUT(self) -> None:  # noqa: N802 - the stdlib's naming
        data = self.rfile.read(int(self.headers["Content-Length"] or 0))
        subject = subject_dn(self.connection.getpeercert() or {})
        self.server.subjects.append(subject)
        if subject != VM_DN:  # vcycle-cgi: 403 unless the DN is the one recorded for this VM
            return self._answer(403)
        self.server.puts.setdefault(self.path, []).append(data)
        return self._answer(200)

    def _answer(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def authority() -> Authority:
    """One test CA for the module (key generation is the slow part)."""
    return Authority()


@pytest.fixture
def server(authority, tmp_path_factory) -> Iterator[JoboutputsServer]:
    """A running joboutputs server on 127.0.0.1, stopped after the test."""
    found = JoboutputsServer(authority, tmp_path_factory.mktemp("joboutputs-server"))
    thread = threading.Thread(target=found.serve_forever, daemon=True)
    thread.start()
    yield found
    found.shutdown()
    found.server_close()


def grid_security(root: Any, authority: Authority, proxy_dn: str = VM_DN) -> Any:
    """The VM's /etc/grid-security under ``root``: the CA, an X.509-proxy-like file, cert and key."""
    where = root / "etc/grid-security"
    where.mkdir(parents=True, exist_ok=True)
    (where / "ca.pem").write_bytes(authority.pem)
    (where / "proxy.pem").write_bytes(authority.proxy(proxy_dn))
    issued = authority.issue(VM_DN)
    (where / "vm.cert.pem").write_bytes(issued["cert"])
    (where / "vm.key.pem").write_bytes(issued["key"])
    (where / "vm.key.encrypted.pem").write_bytes(_pem(issued["obj"], b"secret"))
    return where


def vac_monitor(root: Any, clock: Any, options: Dict[str, Any]) -> Monitor:
    """A monitor whose only endpoint is ``vac`` with ``options``; booted now."""
    config = make_config(
        root,
        [],
        monitor={
            "endpoints": [{"name": "vac", "options": options}],
            "halt_action": "exit",
            "fizzle_seconds": None,
        },
    )
    return Monitor(
        config, clock=clock, rng=random.Random(1), halt_action=Recorder(), boot_time=clock.time()
    )


def test_heartbeat_and_shutdown_message_land_with_the_proxy(tmp_path, clock, authority, server):
    """With cert_file an X.509-proxy-like PEM (certificate, key and issuer in one file) the monitor's
    heartbeats and shutdown_message land on the HTTPS server, under the configured heartbeat name."""
    grid_security(tmp_path, authority)
    options = {
        "joboutputs": f"{server.url}{JOBOUTPUTS}",
        "heartbeat_file": "vm-heartbeat",
        "cert_file": "/etc/grid-security/proxy.pem",
        "ca_file": "/etc/grid-security/ca.pem",
    }
    monitor = vac_monitor(tmp_path, clock, options)
    run_for(monitor, clock, 5)
    beats = server.puts[f"{JOBOUTPUTS}/vm-heartbeat"]
    assert json.loads(beats[0])["seq"] == 1 and server.subjects[0] == VM_DN
    monitor.halt(DECISION)
    assert server.puts[f"{JOBOUTPUTS}/shutdown_message"] == [DECISION.message.encode()]
    assert server.refused == []


def test_separate_certificate_and_key_files(tmp_path, authority, server):
    """cert_file with key_file presents the certificate as well as a proxy file does."""
    grid_security(tmp_path, authority)
    options = {
        "joboutputs": f"{server.url}{JOBOUTPUTS}",
        "cert_file": "/etc/grid-security/vm.cert.pem",
        "key_file": "/etc/grid-security/vm.key.pem",
        "ca_file": "/etc/grid-security/ca.pem",
    }
    vac = VacEndpoint(make_config(tmp_path, []), options)
    vac.halting(Decision("lifetime", "lifetime of 3600 s reached", 100))
    assert server.puts[f"{JOBOUTPUTS}/shutdown_message"] == [b"100 lifetime of 3600 s reached"]


def test_without_a_certificate_the_write_is_an_outage(tmp_path, clock, authority, server):
    """Without a client certificate the server refuses the handshake: the endpoint raises
    ManagerUnavailable, and the monitor keeps running with the heartbeats counted as missed."""
    grid_security(tmp_path, authority)
    options = {"joboutputs": f"{server.url}{JOBOUTPUTS}", "ca_file": "/etc/grid-security/ca.pem"}
    vac = VacEndpoint(make_config(tmp_path, []), options)
    with pytest.raises(ManagerUnavailable):
        vac.send({"instance_id": "i-test", "seq": 1, "time": 1.0}, {})
    monitor = vac_monitor(tmp_path, clock, options)
    run_for(monitor, clock, 130)
    assert monitor.decision is None and monitor.links[0].last_ok is None
    assert len(monitor.links[0].missed) >= 2 and monitor.links[0].failures >= 2
    assert server.puts == {} and server.refused


def test_another_subject_is_refused_and_a_renewed_proxy_is_read_again(tmp_path, authority, server):
    """A certificate with another subject gets 403 (ManagerRefused); once the proxy file is rewritten
    in place with the VM's own, the next PUT presents the new one and lands."""
    where = grid_security(tmp_path, authority, proxy_dn="/DC=org/DC=example/CN=someone-else")
    options = {
        "joboutputs": f"{server.url}{JOBOUTPUTS}",
        "cert_file": "/etc/grid-security/proxy.pem",
        "ca_file": "/etc/grid-security/ca.pem",
    }
    vac = VacEndpoint(make_config(tmp_path, []), options)
    with pytest.raises(ManagerRefused) as caught:
        vac.send({"instance_id": "i-test", "seq": 1, "time": 1.0}, {})
    assert caught.value.status == 403 and server.puts == {}
    (where / "proxy.pem").write_bytes(authority.proxy(VM_DN))
    vac.send({"instance_id": "i-test", "seq": 2, "time": 2.0}, {})
    assert json.loads(server.puts[f"{JOBOUTPUTS}/heartbeat"][0])["seq"] == 2
    assert server.subjects[-1] == VM_DN


def test_a_directory_of_hashed_ca_certificates(tmp_path, authority, server):
    """ca_file may name a directory of hashed CA certificates, as /etc/grid-security/certificates is."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to hash the CA directory")
    where = grid_security(tmp_path, authority)
    certificates = where / "certificates"
    certificates.mkdir()
    (certificates / "testca.pem").write_bytes(authority.pem)
    subprocess.run([openssl, "rehash", str(certificates)], check=True, timeout=60)
    options = {
        "joboutputs": f"{server.url}{JOBOUTPUTS}",
        "cert_file": "/etc/grid-security/proxy.pem",
        "ca_file": "/etc/grid-security/certificates",
    }
    VacEndpoint(make_config(tmp_path, []), options).halting(DECISION)
    assert server.puts[f"{JOBOUTPUTS}/shutdown_message"] == [DECISION.message.encode()]


ENCRYPTED_KEY = """
import sys
from vmagent.errors import VmagentError
from vmagent.monitor.endpoints.vac import VacEndpoint
from vmagent.testing import make_config

options = {"joboutputs": sys.argv[2], "cert_file": "/etc/grid-security/vm.cert.pem",
           "key_file": "/etc/grid-security/vm.key.encrypted.pem"}
try:
    VacEndpoint(make_config(sys.argv[1], []), options).send({"seq": 1}, {})
except VmagentError as exc:
    print(type(exc).__name__, exc.message)
"""


def test_an_encrypted_key_is_an_error_not_a_prompt(tmp_path, authority, server):
    """An encrypted key is refused with a message saying so, without waiting for a passphrase
    (in a child without a terminal, as the monitor runs under systemd)."""
    grid_security(tmp_path, authority)
    done = subprocess.run(
        [sys.executable, "-c", ENCRYPTED_KEY, str(tmp_path), f"{server.url}{JOBOUTPUTS}"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )
    assert done.stdout.startswith("ManagerRefused") and "encrypted" in done.stdout, done
    assert "pass phrase" not in done.stderr and server.puts == {}
