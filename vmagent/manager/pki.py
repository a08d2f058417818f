"""``vmagent manager init``: a private CA, a server certificate signed by it, the admin token."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from typing import Dict, List, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import auth

FILES = ("ca.pem", "ca.key", "server.pem", "server.key", "admin.token")


def init(state_dir: str, names: Sequence[str] = (), days: int = 825) -> Dict[str, str]:
    """Create whatever of ``FILES`` is missing in ``state_dir``; never overwrite. Answers file -> action."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    done: Dict[str, str] = {}
    path = {name: os.path.join(state_dir, name) for name in FILES}
    if not os.path.exists(path["ca.pem"]) or not os.path.exists(path["ca.key"]):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vmagent manager CA")])
        cert = (
            _builder(subject, subject, key.public_key(), 3650)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write(path["ca.key"], _key_pem(key), 0o600)
        _write(path["ca.pem"], cert.public_bytes(serialization.Encoding.PEM), 0o644)
        done.update({"ca.pem": "created", "ca.key": "created"})
        for stale in ("server.pem", "server.key"):  # a new CA needs a new server certificate
            if os.path.exists(path[stale]):
                os.unlink(path[stale])
    if not os.path.exists(path["server.pem"]) or not os.path.exists(path["server.key"]):
        _server_cert(path, list(names), days)
        done.update({"server.pem": "created", "server.key": "created"})
    if not os.path.exists(path["admin.token"]):
        _write(path["admin.token"], (auth.new_token("admin") + "\n").encode(), 0o600)
        done["admin.token"] = "created"
    return {name: done.get(name, "kept") for name in FILES}


def _server_cert(path: Dict[str, str], names: List[str], days: int) -> None:
    with open(path["ca.key"], "rb") as fh:
        ca_key = serialization.load_pem_private_key(fh.read(), password=None)
    with open(path["ca.pem"], "rb") as fh:
        ca = x509.load_pem_x509_certificate(fh.read())
    key = ec.generate_private_key(ec.SECP256R1())
    hosts = ["localhost", "127.0.0.1", socket.gethostname(), *names]
    alt: List[x509.GeneralName] = []
    for host in dict.fromkeys(h for h in hosts if h):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vmagent manager")])
    cert = (
        _builder(subject, ca.subject, key.public_key(), days)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    _write(path["server.key"], _key_pem(key), 0o600)
    _write(path["server.pem"], cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: object, days: int
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: str, data: bytes, mode: int) -> None:
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
