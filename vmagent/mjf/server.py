"""A read-only loopback HTTP view of a features tree, for readers that open keys as URLs.

DIRAC reads Machine/Job Features two ways: its pilot and its job-parameter helpers call ``urlopen``
on ``$JOBFEATURES/<key>`` (a plain path fails there), its MJF helper takes plain paths and
``http(s)://`` but not ``file://``. An ``http://127.0.0.1:<port>/...`` location is the one form both
accept, so the slot manager serves its features tree this way for the payloads it starts
(``serve_tree``), while the spec's plain directories stay on disk for everyone else.
"""

from __future__ import annotations

import http.server
import logging
import os
import re
import threading
from typing import Optional, Tuple
from urllib.parse import unquote

from ..core.files import write_atomic

log = logging.getLogger("vmagent.mjf")
PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")  # keys, "machine", "jobs", payload ids


def make_server(
    root: str, host: str = "127.0.0.1", port: int = 0
) -> http.server.ThreadingHTTPServer:
    """A server (not yet serving) that answers GET /<dir>/.../<key> from files below ``root``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = 10  # a client that connects and sends nothing does not hold a thread for ever

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            parts = [unquote(p) for p in self.path.split("?", 1)[0].split("/") if p]
            if not parts or not all(PART.match(p) and ".." not in p for p in parts):
                self.send_error(404)
                return
            path = os.path.join(root, *parts)
            try:
                with open(path, "rb") as fh:
                    body = fh.read(4096)
            except OSError:  # missing, a directory, unreadable: the key is not provided
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Cache-Control", "no-cache")  # shutdown times can change at any time
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve_in_thread(
    root: str, host: str = "127.0.0.1", port: int = 0
) -> Tuple[http.server.ThreadingHTTPServer, str]:
    """Start serving ``root`` in a daemon thread; returns the server and its base URL."""
    server = make_server(root, host, port)
    threading.Thread(target=server.serve_forever, daemon=True, name="mjf-http").start()
    bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
    return server, f"http://{bound_host}:{bound_port}"


def serve_tree(
    root: str, port: int = 0, port_file: Optional[str] = None
) -> Tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``root`` on loopback in a daemon thread; returns the server and its base URL.

    ``port`` 0 picks a free port, preferring the one recorded in ``port_file`` by a previous run, so
    that payloads a restarted slot manager re-adopts keep reading their features at the same URL.
    """
    os.makedirs(root, exist_ok=True)
    wanted = port or _recorded(port_file)
    try:
        server, url = serve_in_thread(root, port=wanted)
    except OSError:
        if port or not wanted:
            raise
        log.info("features port %d is taken: serving on another port", wanted)
        server, url = serve_in_thread(root)
    if port_file:
        write_atomic(port_file, f"{server.server_address[1]}\n", 0o644)
    return server, url


def _recorded(port_file: Optional[str]) -> int:
    try:
        with open(port_file or "", encoding="ascii") as fh:
            value = int(fh.read().strip())
    except (OSError, ValueError):
        return 0
    return value if 0 < value < 65536 else 0
