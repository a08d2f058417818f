"""Credentials: random bearer tokens, stored only as SHA-256 digests, compared in constant time.

Tokens carry 256 bits of randomness, so a plain digest is as good as a slow password hash here and
lets a token be found by its digest with one index lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Optional

PREFIXES = {"admin": "vma_", "enrolment": "vme_", "vm": "vmv_"}


def new_token(kind: str) -> str:
    """A fresh token; the prefix tells operators what kind it is, nothing else depends on it."""
    return PREFIXES[kind] + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def same(stored_digest: Optional[str], token_digest: str) -> bool:
    """Constant-time comparison of two digests; a missing stored digest never matches."""
    if not stored_digest:
        return False
    return hmac.compare_digest(stored_digest.encode(), token_digest.encode())


def bearer(header: Optional[str]) -> Optional[str]:
    """The token in an ``Authorization: Bearer ...`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 512:
        return None
    return token
