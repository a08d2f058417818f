"""HTTP(S) for the monitor's endpoints, on the standard library's ``http.client`` and ``ssl``.

The monitor lives as long as the VM, so it keeps its memory small: importing ``requests`` (the
manager client's transport) would add about 10 MiB to its resident size for two calls a minute.
``JsonSession`` speaks the manager's API with the same error contract as ``ManagerClient``: a
connection error, a timeout, a TLS failure or a 5xx answer raise ``ManagerUnavailable``; a 4xx
raises ``ManagerRefused`` with the manager's ``detail``. TLS is verified against ``ca_file`` (a CA
bundle, or a directory of hashed CA certificates such as /etc/grid-security/certificates; else the
system CAs); a client certificate is presented when configured: ``cert_file`` with ``key_file``, or
``cert_file`` alone holding both, as an X.509 proxy does. The certificate files are read again
whenever they change (a proxy is renewed in place), and an encrypted key is an error, not a prompt.

Every call has one deadline, ``timeout`` seconds after it starts: the connection, the TLS
handshake, sending and reading the whole answer all fit in it. A socket timeout alone bounds
only one wait, so a server sending a byte every few seconds would hold a call for ever; here
each operation gets only the time left.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import time
from typing import Any, Dict, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from ... import __version__
from ...client import API
from ...errors import ManagerRefused, ManagerUnavailable

MAX_ANSWER_BYTES = 4 * 2**20


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout("the call's deadline passed")
    return left


def tls_context(ca_file: Optional[str], cert_file: Optional[str], key_file: Optional[str]) -> Any:
    """An ``ssl`` client context verifying against ``ca_file`` and presenting the client certificate.

    Raises ``OSError`` (a file missing or unreadable) or ``ValueError`` (an encrypted key, a key
    without a certificate).
    """
    import ssl  # about 4 MiB resident: only for https

    if key_file and not cert_file:
        raise ValueError(f"key file {key_file} given without a certificate file")
    if ca_file and os.path.isdir(ca_file):
        context = ssl.create_default_context(capath=ca_file)
    else:
        context = ssl.create_default_context(cafile=ca_file)
    if cert_file:
        holder = key_file or cert_file

        def no_passphrase() -> str:
            # without a callback OpenSSL would prompt on the terminal and wait
            raise ValueError(f"the private key in {holder} is encrypted; give an unencrypted key")

        context.load_cert_chain(cert_file, key_file or None, password=no_passphrase)
    return context


def file_stamps(paths: Sequence[Optional[str]]) -> Tuple[Any, ...]:
    """What tells a changed file apart: inode, size and change times of each path (None: absent)."""
    stamps = []
    for path in paths:
        try:
            found = os.stat(path) if path else None
        except OSError:
            found = None
        stamps.append(found and (found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns))
    return tuple(stamps)


class _BoundedSocket:
    """A connected socket as ``http.client`` sees it: every send and read gets only the time left.

    Closing it is left to the session, which closes the real socket once the call is over.
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline

    def sendall(self, data: bytes) -> None:
        self.sock.settimeout(_left(self.deadline))
        self.sock.sendall(data)

    def recv_into(self, buffer: Any) -> int:
        self.sock.settimeout(_left(self.deadline))
        return self.sock.recv_into(buffer)

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_Reader(self))

    def close(self) -> None:
        pass


class _Reader(io.RawIOBase):
    """The raw stream under ``http.client``'s reader: reads through a ``_BoundedSocket``."""

    def __init__(self, sock: _BoundedSocket) -> None:
        super().__init__()
        self.bounded = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self.bounded.recv_into(buffer)


class HttpSession:
    """Requests below ``url``, each within ``timeout`` seconds overall; one short connection per call."""

    hint = "check the URL, the network and the CA file"

    def __init__(
        self,
        url: str,
        *,
        ca_file: Optional[str] = None,
        cert_file: Optional[str] = None,
        key_file: Optional[str] = None,
        timeout: float = 10.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base = parts.path.rstrip("/")
        self.tls_files = (ca_file, cert_file, key_file)
        self.stamps: Tuple[Any, ...] = ()
        self.context: Any = None
        if parts.scheme == "https":
            self.stamps = file_stamps(self.tls_files)
            self.context = tls_context(ca_file, cert_file, key_file)

    def request(
        self, method: str, path: str, data: bytes, headers: Dict[str, str]
    ) -> Tuple[int, bytes]:
        """``method`` ``data`` to ``<url><path>``: the status and up to MAX_ANSWER_BYTES + 1 of the answer.

        Raises ``ManagerUnavailable`` when there is no complete answer within ``timeout`` seconds or
        the connection fails.
        """
        self._reload()
        deadline = time.monotonic() + self.timeout
        sock: Optional[socket.socket] = None
        try:
            sock = self._connect(deadline)
            conn = self._connection()
            # a stand-in socket: every operation within the deadline (http.client only sends and reads)
            conn.sock = _BoundedSocket(sock, deadline)
            conn.request(
                method,
                f"{self.base}{path}",
                body=data,
                headers={"Content-Length": str(len(data)), **headers},
            )
            response = conn.getresponse()
            raw = response.read(MAX_ANSWER_BYTES + 1)
            if (
                response.length and len(raw) <= MAX_ANSWER_BYTES
            ):  # the server hung up before the end
                raise http.client.IncompleteRead(raw, response.length)
            return response.status, raw
        except (OSError, http.client.HTTPException) as exc:
            raise self._unavailable(method, path, exc, deadline) from None
        finally:
            if sock is not None:
                sock.close()

    def _reload(self) -> None:
        """A new TLS context when the CA or certificate files changed since the last one was made."""
        if self.context is None:
            return
        stamps = file_stamps(self.tls_files)
        if stamps == self.stamps:
            return
        try:
            context = tls_context(*self.tls_files)
        except (OSError, ValueError) as exc:  # perhaps half rewritten: the next call tries again
            raise ManagerUnavailable(
                f"{self.url}: the changed CA or certificate files do not load: {exc}",
                hint="check ca_file, cert_file and key_file",
            ) from None
        self.context = context
        self.stamps = stamps

    def _connect(self, deadline: float) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=_left(deadline))
        if self.context is None:
            return sock
        try:
            sock.settimeout(_left(deadline))  # the whole handshake within what is left
            return self.context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise

    def _connection(self) -> http.client.HTTPConnection:
        if self.context is not None:
            return http.client.HTTPSConnection(self.host, self.port, context=self.context)
        return http.client.HTTPConnection(self.host, self.port)

    def _unavailable(
        self, method: str, path: str, exc: BaseException, deadline: float
    ) -> ManagerUnavailable:
        where = f"{method} {self.url}{path}"
        if isinstance(exc, socket.timeout) or time.monotonic() >= deadline:
            return ManagerUnavailable(
                f"{where}: no complete answer within {self.timeout:g} s",
                hint="check the network and the server's load, or raise its timeout",
            )
        return ManagerUnavailable(f"{where}: {exc.__class__.__name__}: {exc}", hint=self.hint)


class JsonSession(HttpSession):
    """POSTs JSON bodies below ``<url>/api/v1`` with a bearer token."""

    hint = "check manager.url, the network and manager.ca_file"

    def __init__(
        self,
        url: str,
        *,
        token: Optional[str] = None,
        ca_file: Optional[str] = None,
        cert_file: Optional[str] = None,
        key_file: Optional[str] = None,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(
            url, ca_file=ca_file, cert_file=cert_file, key_file=key_file, timeout=timeout
        )
        self.token = token

    def post(self, path: str, body: Any) -> Any:
        """POST ``body`` to ``/api/v1<path>`` and answer the decoded JSON (``{}`` when empty)."""
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"vmagent-monitor/{__version__}",
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        status, raw = self.request("POST", f"{API}{path}", json.dumps(body).encode(), headers)
        return self._decode(path, status, raw)

    def _decode(self, path: str, status: int, raw: bytes) -> Any:
        where = f"POST {self.url}{API}{path}"
        if status >= 500 or status == 429:  # 429: too many failed authentications here, try later
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
            raise ManagerRefused(
                status, detail if isinstance(detail, str) else json.dumps(detail)[:2000]
            )
        return doc
