"""A read-only loopback HTTP view of a features tree, for readers that want URLs (DIRAC's pilot)."""

from __future__ import annotations

import http.server
import os
import threading
from typing import Tuple

from .features import NAME


def make_server(
    root: str, host: str = "127.0.0.1", port: int = 0
) -> http.server.ThreadingHTTPServer:
    """A server (not yet serving) that answers GET /<dir>/.../<key> from files below ``root``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            parts = [p for p in self.path.split("?", 1)[0].split("/") if p]
            if not parts or not all(
                NAME.match(p) or p.replace("-", "").replace(":", "").isalnum() for p in parts
            ):
                self.send_error(404)
                return
            path = os.path.join(root, *parts)
            if ".." in parts or not os.path.isfile(path):
                self.send_error(404)
                return
            with open(path, "rb") as fh:
                body = fh.read(4096)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Cache-Control", "no-cache")  # shutdown times can change at any time
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return http.server.ThreadingHTTPServer((host, port), Handler)


def serve_in_thread(
    root: str, host: str = "127.0.0.1", port: int = 0
) -> Tuple[http.server.ThreadingHTTPServer, str]:
    """Start serving ``root`` in a daemon thread; returns the server and its base URL."""
    server = make_server(root, host, port)
    threading.Thread(target=server.serve_forever, daemon=True, name="mjf-http").start()
    bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
    return server, f"http://{bound_host}:{bound_port}"
