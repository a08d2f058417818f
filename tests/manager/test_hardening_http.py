"""The manager's answers over HTTP(S): security headers, TLS settings, failed-login limits, clean names."""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import time
import uuid
import warnings

import pytest
import requests

from vmagent.clock import FakeClock
from vmagent.errors import ManagerRefused
from vmagent.manager import auth, db, inventory, registry
from vmagent.manager.settings import Settings
from vmagent.manager.testing import heartbeat, new_vm

HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def _get(manager, path, **kwargs):
    return requests.get(
        f"{manager.url}{path}", verify=manager.ca_file or True, timeout=10, **kwargs
    )


# --- security headers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/dashboard/", "/dashboard/app.js", "/api/v1/health", "/api/v1/vms", "/api/v1/nothing-here"],
)
def test_answers_carry_security_headers(manager, path):
    """Dashboard, API, refusals and 404s carry a strict CSP, no framing, nosniff, a referrer policy and HSTS."""
    answer = _get(manager, path)
    for name, value in HEADERS.items():
        assert answer.headers.get(name) == value, (name, answer.headers)
    csp = answer.headers["content-security-policy"]
    assert (
        "script-src 'self';" in csp
        and "frame-ancestors 'none'" in csp
        and "unsafe-inline" not in csp
    )
    assert answer.headers["strict-transport-security"].startswith("max-age=")


def test_dashboard_has_no_inline_script_or_style(manager):
    """The dashboard's page loads its scripts and styles from files, as its CSP requires."""
    page = _get(manager, "/dashboard/").text
    assert "<script>" not in page and "<style" not in page and " style=" not in page
    assert re.search(r"\son[a-z]+\s*=", page) is None  # no inline event handlers


def test_api_docs_get_their_own_policy(manager):
    """/docs may load Swagger UI from its CDN; it still cannot be framed."""
    answer = _get(manager, "/docs")
    assert answer.status_code == 200
    csp = answer.headers["content-security-policy"]
    assert "https://cdn.jsdelivr.net" in csp and "frame-ancestors 'none'" in csp
    assert answer.headers["x-frame-options"] == "DENY"


def test_plain_http_has_no_hsts(start):
    """HSTS is only sent when the manager itself serves TLS."""
    manager = start("sqlite", tls=False)
    answer = _get(manager, "/api/v1/health")
    assert (
        answer.headers["x-frame-options"] == "DENY"
        and "strict-transport-security" not in answer.headers
    )


# --- TLS: 1.2 or later, AEAD ciphers only --------------------------------------------------------


def _handshake(manager, context):
    """The negotiated (version, cipher) of a TLS handshake with ``context``, or the SSLError."""
    port = int(manager.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                return tls.version(), tls.cipher()[0]
        except (ssl.SSLError, ConnectionResetError) as exc:
            return exc


def _client(manager, oldest=None, newest=None, ciphers=None):
    context = ssl.create_default_context(cafile=manager.ca_file)
    if ciphers or oldest:
        context.set_ciphers(
            (ciphers or "ALL") + ":@SECLEVEL=0"
        )  # let the client offer what it is told
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", DeprecationWarning
        )  # TLS 1.0 and 1.1 are, which is the point
        if oldest:
            context.minimum_version = oldest
        if newest:
            context.maximum_version = newest
    return context


def test_server_context_sets_its_own_floor_and_ciphers():
    """The manager's TLS context itself demands TLS 1.2+ and AEAD ciphers, whatever OpenSSL's defaults."""
    from vmagent.manager.server import harden

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("ALL:@SECLEVEL=0")
    harden(context)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    ciphers = context.get_ciphers()
    assert ciphers and all(c["aead"] for c in ciphers)
    assert all(c["kea"] == "kx-ecdhe" for c in ciphers if c["protocol"] == "TLSv1.2")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_older_than_1_2_is_refused(manager, version):
    """A client that speaks at most TLS 1.0 or 1.1 gets no connection."""
    found = _handshake(manager, _client(manager, oldest=version, newest=version))
    assert isinstance(found, Exception), found


@pytest.mark.parametrize(
    "cipher",
    [
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA384",
        "AES128-SHA",
        "ECDHE-ECDSA-AES128-SHA256",
    ],
)
def test_non_aead_ciphers_are_refused(manager, cipher):
    """A TLS 1.2 client offering only a CBC (non-AEAD) cipher gets no connection."""
    found = _handshake(manager, _client(manager, newest=ssl.TLSVersion.TLSv1_2, ciphers=cipher))
    assert isinstance(found, Exception), found


@pytest.mark.parametrize(
    ("newest", "version"), [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (None, "TLSv1.3")]
)
def test_ordinary_clients_connect_with_aead(manager, newest, version):
    """A default client connects with TLS 1.3, a TLS 1.2 one with an ECDHE AEAD cipher."""
    found = _handshake(manager, _client(manager, newest=newest))
    assert not isinstance(found, Exception), found
    assert found[0] == version
    assert found[0] == "TLSv1.3" or (
        "ECDHE" in found[1] and ("GCM" in found[1] or "CHACHA20" in found[1])
    )


# --- names a VM gives: no control characters -----------------------------------------------------


@pytest.mark.parametrize(
    "hostname", ["evil\r\nvmagent.manager: vm-1 registered", "tab\there", "esc\x1b[31m"]
)
def test_hostname_with_control_characters_is_refused(manager, hostname):
    """A registration whose hostname holds CR, LF or other control characters is refused with 422."""
    token = manager.client().enrol()["enrolment_token"]
    with pytest.raises(ManagerRefused) as err:
        manager.client(token).register(
            instance_id="i-ctl", hostname=hostname, ip="10.0.0.1", total_cores=1, total_memory_mb=1
        )
    assert err.value.status == 422 and "hostname" in err.value.detail


def test_halting_reason_cannot_split_a_log_line(manager):
    """A VM's halting reason with CR/LF is logged on one line, its control characters escaped."""
    vm = new_vm(manager)
    vm["client"].heartbeat(vm["vm_id"], heartbeat(vm["instance_id"], 1))
    marker = uuid.uuid4().hex
    vm["client"].halting(vm["vm_id"], f"bye\r\n{marker} forged line", 200, "")
    deadline = time.monotonic() + 30
    while marker not in manager.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    (line,) = [x for x in manager.log().splitlines() if marker in x]
    assert vm["vm_id"] in line and "bye\\x0d\\x0a" + marker in line


# --- the admin search: LIKE wildcards are literal ------------------------------------------------


@pytest.mark.parametrize(
    ("q", "found"),
    [("_", ["a_b"]), ("%", ["c%d"]), ("a_b", ["a_b"]), ("\\", ["e\\f"]), ("x", ["axb"])],
)
def test_search_treats_wildcards_literally(tmp_path, q, found):
    """q=_ matches only a literal underscore, q=% only a percent sign, a backslash only itself."""
    engine = db.make_engine(f"sqlite:///{tmp_path}/m.db")
    db.create_all(engine)
    settings = Settings(db_url="", admin_token_hash=auth.digest("adm"))
    with engine.begin() as conn:
        for i, host in enumerate(["a_b", "axb", "c%d", "e\\f"]):
            registry.register(
                conn,
                settings,
                "adm",
                {
                    "instance_id": f"i-{i}",
                    "hostname": host,
                    "ip": "10.0.0.1",
                    "total_cores": 1,
                    "total_memory_mb": 1,
                },
                1.0,
            )
        rows = inventory.table(conn, {"q": q}, 100, 0, 2.0)["vms"]
    assert sorted(r["hostname"] for r in rows) == found


# --- failed authentications: limited per client address ------------------------------------------


def test_limiter_blocks_an_address_after_its_failures_until_the_window_passes():
    """After N failures within the window an address waits; others do not; old failures age out."""
    from vmagent.manager.guards import FailureLimiter

    clock = FakeClock()
    limiter = FailureLimiter(3, 60.0, 100)
    for _ in range(2):
        limiter.fail("10.0.0.1", clock.time())
        clock.advance(10)
    assert limiter.retry_after("10.0.0.1", clock.time()) is None
    limiter.fail("10.0.0.1", clock.time())
    assert limiter.retry_after("10.0.0.1", clock.time()) == pytest.approx(40.0)
    assert limiter.retry_after("10.0.0.2", clock.time()) is None
    clock.advance(41)
    assert limiter.retry_after("10.0.0.1", clock.time()) is None


def test_limiter_remembers_a_bounded_number_of_addresses():
    """Failures from more addresses than the bound forget the least recently failing ones."""
    from vmagent.manager.guards import FailureLimiter

    limiter = FailureLimiter(1, 60.0, 100)
    for i in range(1000):
        limiter.fail(f"10.0.{i // 256}.{i % 256}", 1.0)
    assert len(limiter.failures) == 100
    assert (
        limiter.retry_after("10.0.0.0", 1.0) is None
        and limiter.retry_after("10.0.3.231", 1.0) == 60.0
    )


def _status_from(manager, source, token):
    """Status and Retry-After of GET /api/v1/vms with ``token``, sent from the local address ``source``."""
    port = int(manager.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        conn.request("GET", "/api/v1/vms", headers={"Authorization": f"Bearer {token}"})
        answer = conn.getresponse()
        answer.read()
        return answer.status, answer.getheader("Retry-After")
    finally:
        conn.close()


def test_served_manager_answers_429_after_repeated_failures(start):
    """A real manager answers 429 with Retry-After to the failing address only, even for a valid token."""
    manager = start("sqlite", "--auth-failures", "3", "--auth-failure-window", "600", tls=False)
    admin = manager.admin_token
    assert [_status_from(manager, "127.0.0.2", "vma_wrong")[0] for _ in range(3)] == [401] * 3
    status, retry = _status_from(manager, "127.0.0.2", admin)
    assert status == 429 and 1 <= int(retry) <= 600
    assert _status_from(manager, "127.0.0.1", admin)[0] == 200
    assert _status_from(manager, "127.0.0.3", "vma_wrong")[0] == 401
