"""check-credentials on certificates made here, and check-node on os-release fixtures."""

from __future__ import annotations

import datetime
import os
import socket

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vmagent.errors import CommandFailed, NodeUnfit
from vmagent.pilot.commands.credentials import CheckCredentials
from vmagent.pilot.commands.node import CheckNode
from vmagent.testing import FakeClock, run_command

NOW = datetime.datetime.now(datetime.timezone.utc)


def check(config, options, days_later: float = 0):
    """check-credentials run on a clock at NOW (plus ``days_later``)."""
    clock = FakeClock(NOW.timestamp() + days_later * 86400)
    return run_command(CheckCredentials(), config, options, clock=clock)


def cert(
    subject: str, key, issuer_name: str, issuer_key, days: float, start_days: float = -1
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + datetime.timedelta(days=start_days))
        .not_valid_after(NOW + datetime.timedelta(days=days))
        .sign(issuer_key, hashes.SHA256())
    )


def pem(*items) -> bytes:
    out = b""
    for item in items:
        if isinstance(item, x509.Certificate):
            out += item.public_bytes(serialization.Encoding.PEM)
        else:
            out += item.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
    return out


@pytest.fixture
def host(tmp_path):
    """Write a host certificate and key (valid for the given days) below a VM root; return the config maker."""
    from vmagent.testing import make_config

    def make(days: float = 30, key_mode: int = 0o600, other_key: bool = False):
        ca_key, key = (
            ec.generate_private_key(ec.SECP256R1()),
            ec.generate_private_key(ec.SECP256R1()),
        )
        (tmp_path / "etc/grid-security").mkdir(parents=True, exist_ok=True)
        (tmp_path / "etc/grid-security/hostcert.pem").write_bytes(
            pem(cert("vm.example.org", key, "CA", ca_key, days))
        )
        keyfile = tmp_path / "etc/grid-security/hostkey.pem"
        keyfile.write_bytes(pem(ec.generate_private_key(ec.SECP256R1()) if other_key else key))
        os.chmod(keyfile, key_mode)
        return make_config(tmp_path, []), {
            "cert_file": "/etc/grid-security/hostcert.pem",
            "key_file": "/etc/grid-security/hostkey.pem",
        }

    return make


def test_valid_host_certificate(host):
    """A matching, long-valid certificate gives subject, issuer and expiry, and exports its paths."""
    config, options = host()
    result, _ = check(config, options)
    assert (
        result.facts["host_subject"] == "CN=vm.example.org"
        and result.facts["host_issuer"] == "CN=CA"
    )
    assert result.env["X509_USER_CERT"].endswith("hostcert.pem")


@pytest.mark.parametrize("days,message", [(-1, "expired"), (0.5, "expires in")])
def test_expired_or_expiring(host, days, message):
    """An expired certificate, or one valid for less than min_valid_hours, is refused."""
    config, options = host(days=days)
    with pytest.raises(CommandFailed) as refused:
        check(config, options)
    assert message in refused.value.message


def test_mismatched_key(host):
    """A key that does not belong to the certificate is refused."""
    config, options = host(other_key=True)
    with pytest.raises(CommandFailed) as refused:
        check(config, options)
    assert "does not belong" in refused.value.message


def test_world_readable_key_fixed_or_refused(host, tmp_path):
    """A world-readable key is set to 0600 by default, or refused when fix_modes is off."""
    config, options = host(key_mode=0o644)
    with pytest.raises(CommandFailed) as refused:
        check(config, {**options, "fix_modes": False})
    assert "others may read a secret" in refused.value.message
    check(config, options)
    assert os.stat(tmp_path / "etc/grid-security/hostkey.pem").st_mode & 0o777 == 0o600


def test_proxy_chain(tmp_path):
    """An RFC 3820 proxy chain (proxy, user certificate) is checked link by link; a broken chain is refused."""
    from vmagent.testing import make_config

    ca_key, user_key, proxy_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    user = cert("Jane Doe", user_key, "CA", ca_key, 300)
    proxy = cert("Jane Doe/CN=12345", proxy_key, "Jane Doe", user_key, 2)
    path = tmp_path / "tmp/x509up_u0"
    path.parent.mkdir(parents=True)
    path.write_bytes(pem(proxy, proxy_key, user))
    path.chmod(0o600)
    config = make_config(tmp_path, [])
    result, _ = check(config, {"proxy_file": "/tmp/x509up_u0"})
    assert (
        result.env["X509_USER_PROXY"] == str(path) and result.facts["proxy_issuer"] == "CN=Jane Doe"
    )
    stranger = cert("Someone", ec.generate_private_key(ec.SECP256R1()), "CA", ca_key, 300)
    path.write_bytes(pem(proxy, proxy_key, stranger))
    with pytest.raises(CommandFailed) as refused:
        check(config, {"proxy_file": "/tmp/x509up_u0"})
    assert "broken chain" in refused.value.message


@pytest.mark.parametrize(
    "os_name,family,version",
    [
        ("almalinux-9", "el", "9"),
        ("rocky-9", "el", "9"),
        ("rocky-8", "el", "8"),
        ("centos-stream-9", "el", "9"),
        ("debian-11", "debian", "11"),
        ("debian-12", "debian", "12"),
        ("ubuntu-22.04", "ubuntu", "22.04"),
        ("ubuntu-24.04", "ubuntu", "24.04"),
    ],
)
def test_check_node_supported_systems(vm_root, os_name, family, version):
    """Every supported system is recognised with its family and version."""
    _, config = vm_root(os_name)
    result, _ = run_command(
        CheckNode(), config, {"min_scratch_free_mb": 1, "min_memory_mb_per_core": 1}
    )
    assert (result.facts["os_family"], result.facts["os_version"]) == (family, version)
    assert result.facts["cores"] >= 1 and result.facts["scratch_free_mb"] > 0


def test_check_node_refuses_unfit_node_with_500(vm_root):
    """An unsupported OS, too little scratch or an unreachable endpoint stop the node with vacuum code 500."""
    _, config = vm_root("opensuse-leap-15")
    with pytest.raises(NodeUnfit) as refused:
        run_command(CheckNode(), config, {})
    assert refused.value.vacuum_code == 500 and "not supported" in refused.value.message
    _, config = vm_root("debian-12")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(NodeUnfit) as refused:
        run_command(
            CheckNode(),
            config,
            {
                "min_scratch_free_mb": 10**9,
                "endpoints": [f"127.0.0.1:{port}"],
                "connect_timeout": 1,
            },
        )
    assert (
        "MB needed" in refused.value.message
        and f"cannot connect to 127.0.0.1:{port}" in refused.value.message
    )


def test_validity_is_judged_on_the_injected_clock(host):
    """A certificate valid for 300 days counts as expired on a clock 400 days ahead."""
    config, options = host()
    with pytest.raises(CommandFailed) as refused:
        check(config, options, days_later=400)
    assert "expired" in refused.value.message
