"""JSON over HTTP(S) for the monitor, on the standard library's ``http.client`` and ``ssl``.

The monitor lives as long as the VM, so it keeps its memory small: importing ``requests`` (the
manager client's transport) would add about 10 MiB to its resident size for two calls a minute.
This session speaks the same API with the same error contract as ``ManagerClient``: a connection
error, a timeout, a TLS failure or a 5xx answer raise ``ManagerUnavailable``; a 4xx raises
``ManagerRefused`` with the manager's ``detail``. TLS is verified against ``ca_file`` (else the
system CAs); a client certificate is presented when configured.
"""

from __future__ import annotations

import http.client
import json
from typing import Any, Optional
from urllib.parse import urlsplit

from ... import __version__
from ...errors import ManagerRefused, ManagerUnavailable

API = "/api/v1"
MAX_ANSWER_BYTES = 4 * 2**20


class JsonSession:
    """POSTs JSON bodies below ``<url>/api/v1`` with a bearer token; one short connection per call."""

    def __init__(self, url: str, *, token: Optional[str] = None, ca_file: Optional[str] = None,
                 cert_file: Optional[str] = None, key_file: Optional[str] = None, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout
        self.host, self.port, self.base = parts.hostname, parts.port, parts.path.rstrip("/")
        self.context: Any = None
        if parts.scheme == "https":
            import ssl  # about 4 MiB resident: only for https

            self.context = ssl.create_default_context(cafile=ca_file)
            if cert_file:
                self.context.load_cert_chain(cert_file, key_file)

    def post(self, path: str, body: Any) -> Any:
        """POST ``body`` to ``/api/v1<path>`` and answer the decoded JSON (``{}`` when empty)."""
        target = f"{self.base}{API}{path}"
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": f"vmagent-monitor/{__version__}", "Content-Length": str(len(data))}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = (http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.context)
                if self.context else http.client.HTTPConnection(self.host, self.port, timeout=self.timeout))
        try:
            conn.request("POST", target, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read(MAX_ANSWER_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise ManagerUnavailable(f"POST {self.url}{API}{path}: {exc.__class__.__name__}: {exc}",
                                     hint="check manager.url, the network and manager.ca_file") from None
        finally:
            conn.close()
        return self._decode(path, response.status, raw)

    def _decode(self, path: str, status: int, raw: bytes) -> Any:
        where = f"POST {self.url}{API}{path}"
        if status >= 500:
            raise ManagerUnavailable(f"{where}: HTTP {status}")
        if len(raw) > MAX_ANSWER_BYTES:
            raise ManagerRefused(status, f"answer larger than {MAX_ANSWER_BYTES} bytes")
        try:
            doc = json.loads(raw) if raw else {}
        except ValueError:
            if status >= 400:
                raise ManagerRefused(status, raw[:500].decode("utf-8", "replace")) from None
            raise ManagerUnavailable(f"{where}: answer is not JSON") from None
        if status >= 400:
            detail = doc.get("detail", "") if isinstance(doc, dict) else doc
            raise ManagerRefused(status, detail if isinstance(detail, str) else json.dumps(detail)[:2000])
        return doc
