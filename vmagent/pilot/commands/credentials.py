"""``check-credentials``: host certificate and key, an X.509 proxy, or a token file. Never logs secrets."""

from __future__ import annotations

import datetime
import os
import stat
from typing import Any, Dict, List, Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ...errors import CommandFailed
from ..command import Context, Result

PEM_CERT = b"-----BEGIN CERTIFICATE-----"


class CheckCredentials:
    """Check that credentials exist, match, are valid long enough and are readable by root only."""

    name = "check-credentials"
    options_schema: Dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "cert_file": {
                "type": ["string", "null"],
                "default": None,
                "description": "host or robot certificate (PEM)",
            },
            "key_file": {
                "type": ["string", "null"],
                "default": None,
                "description": "its private key (PEM)",
            },
            "proxy_file": {
                "type": ["string", "null"],
                "default": None,
                "description": "RFC 3820 proxy: certificate, key and chain in one PEM file",
            },
            "token_file": {
                "type": ["string", "null"],
                "default": None,
                "description": "bearer token file (default: manager.token_file when set)",
            },
            "min_valid_hours": {"type": "number", "minimum": 0, "default": 24},
            "fix_modes": {
                "type": "boolean",
                "default": True,
                "description": "chmod 0600 secret files readable by others (else refuse)",
            },
        },
    }

    def run(self, ctx: Context) -> Result:
        o = ctx.options
        token = o["token_file"] or ctx.config.section("manager")["token_file"]
        if not (o["cert_file"] or o["proxy_file"] or token):
            return Result(skipped="no credentials configured")
        facts: Dict[str, Any] = {}
        env: Dict[str, str] = {}
        if o["proxy_file"]:
            path = self._secret(ctx, o["proxy_file"])
            facts.update(self._check_pem(ctx, path, path, "proxy"))
            env["X509_USER_PROXY"] = path
        if o["cert_file"]:
            if not o["key_file"]:
                raise CommandFailed("check-credentials: cert_file needs key_file")
            key = self._secret(ctx, o["key_file"])
            facts.update(self._check_pem(ctx, ctx.path(o["cert_file"]), key, "host"))
            env.update(X509_USER_CERT=ctx.path(o["cert_file"]), X509_USER_KEY=key)
        if token:
            path = self._secret(ctx, token)
            with open(path, encoding="utf-8") as fh:
                if not fh.read().strip():
                    raise CommandFailed(f"{path}: token file is empty")
            facts["token_file"] = path
        return Result(facts=facts, env=env)

    def _secret(self, ctx: Context, vm_path: str) -> str:
        """The host path of a secret file, after making sure only its owner can read it."""
        path = ctx.path(vm_path)
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError as exc:
            raise CommandFailed(
                f"{path}: {exc.strerror}", hint="check the user data or the image"
            ) from None
        if mode & 0o077:
            if not ctx.options["fix_modes"]:
                raise CommandFailed(
                    f"{path} has mode {mode:04o}: others may read a secret",
                    hint=f"chmod 600 {path} or set fix_modes: true",
                )
            ctx.log.warning("%s had mode %04o: set to 0600", path, mode)
            if not ctx.dry_run:
                os.chmod(path, 0o600)
        return path

    def _check_pem(self, ctx: Context, cert_path: str, key_path: str, kind: str) -> Dict[str, Any]:
        with open(cert_path, "rb") as fh:
            certs = _certificates(fh.read())
        if not certs:
            raise CommandFailed(f"{cert_path}: no PEM certificate found")
        with open(key_path, "rb") as fh:
            key = _private_key(fh.read(), key_path)
        leaf = certs[0]
        if _spki(leaf.public_key()) != _spki(key.public_key()):
            raise CommandFailed(f"{key_path} does not belong to the certificate in {cert_path}")
        now = datetime.datetime.fromtimestamp(ctx.clock.time(), datetime.timezone.utc)
        end = min(_not_after(c) for c in certs)
        if _not_before(leaf) > now:
            raise CommandFailed(f"{cert_path} is not valid before {_not_before(leaf).isoformat()}")
        if end <= now:
            raise CommandFailed(
                f"{cert_path} expired at {end.isoformat()}", hint="renew the credential"
            )
        left_hours = (end - now).total_seconds() / 3600
        if left_hours < ctx.options["min_valid_hours"]:
            needed = ctx.options["min_valid_hours"]
            raise CommandFailed(
                f"{cert_path} expires in {left_hours:.1f} h, {needed:g} h needed",
                hint="renew it, or lower min_valid_hours",
            )
        if kind == "proxy":
            _check_chain(certs, cert_path)
        return {
            f"{kind}_subject": leaf.subject.rfc4514_string(),
            f"{kind}_issuer": leaf.issuer.rfc4514_string(),
            f"{kind}_expires": end.isoformat(),
        }


def _spki(public_key: Any) -> bytes:
    data: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def _certificates(data: bytes) -> List[x509.Certificate]:
    found = []
    for block in data.split(PEM_CERT)[1:]:
        found.append(x509.load_pem_x509_certificate(PEM_CERT + block.split(b"-----BEGIN", 1)[0]))
    return found


def _private_key(data: bytes, path: str) -> Any:
    start = data.find(b"-----BEGIN") if b"PRIVATE KEY" in data else -1
    for block in data[start:].split(b"-----BEGIN")[1:] if start >= 0 else []:
        if b"PRIVATE KEY" in block.split(b"\n", 1)[0]:
            try:
                return serialization.load_pem_private_key(b"-----BEGIN" + block, password=None)
            except (ValueError, TypeError) as exc:
                raise CommandFailed(f"{path}: unreadable private key ({exc})") from None
    raise CommandFailed(f"{path}: no unencrypted PEM private key found")


def _check_chain(certs: List[x509.Certificate], path: str) -> None:
    """Each proxy certificate is issued by the next one and extends its subject (RFC 3820)."""
    for child, parent in zip(certs, certs[1:]):
        if child.issuer != parent.subject:
            raise CommandFailed(
                f"{path}: broken chain: {child.subject.rfc4514_string()} not issued by "
                f"{parent.subject.rfc4514_string()}"
            )
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, AttributeError) as exc:
            raise CommandFailed(f"{path}: chain signature check failed: {exc}") from None


def _not_after(cert: x509.Certificate) -> datetime.datetime:
    value: Optional[datetime.datetime] = getattr(cert, "not_valid_after_utc", None)
    return value or cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def _not_before(cert: x509.Certificate) -> datetime.datetime:
    value: Optional[datetime.datetime] = getattr(cert, "not_valid_before_utc", None)
    return value or cert.not_valid_before.replace(tzinfo=datetime.timezone.utc)
