"""What the VM's two manager clients share: the API's root, this VM's stored credential, URL segments.

The operators' and slot manager's ``ManagerClient`` (on ``requests``) and the long-lived monitor's
``JsonSession`` (on ``http.client``, vmagent.monitor.endpoints.session) both use these; nothing here
imports ``requests``. Where the credential lives is vmagent.core.layout's.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional
from urllib.parse import quote

from ..errors import ConfigError

API = "/api/v1"


def read_stored(path: str) -> Optional[Dict[str, Any]]:
    """The ``{"vm_id", "token", ...}`` stored at ``path``; None before registration."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            path,
            [("", f"unreadable VM credential: {exc}")],
            hint="delete the file to register this VM again",
        ) from None
    if not isinstance(doc, dict) or not doc.get("vm_id") or not doc.get("token"):
        raise ConfigError(
            path, [("", "must hold vm_id and token")], hint="delete the file to register again"
        )
    return doc


def segment(value: str) -> str:
    """``value`` quoted as one URL path segment."""
    return quote(str(value), safe="")
