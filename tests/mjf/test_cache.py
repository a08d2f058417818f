"""Machine/Job Features over HTTP: the reader honours Cache-Control max-age and ETag."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from vmagent import mjf


def _server(headers, counts):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            counts.append(self.headers.get("If-None-Match"))
            if self.path.startswith("/broken/"):
                self.send_error(503)
                return
            if self.path != "/total_cpu":
                self.send_error(404)
                return
            if self.headers.get("If-None-Match") == '"v1"':
                self.send_response(304)
                self.end_headers()
                return
            self.send_response(200)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(b"8")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_max_age_serves_rereads_from_cache():
    """A value sent with max-age is re-read without another request while it is fresh."""
    counts: list = []
    server = _server({"Cache-Control": "max-age=3600"}, counts)
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        for _ in range(3):
            assert mjf.read_features(url, keys=("total_cpu",)).values == {"total_cpu": 8}
        assert len(counts) == 1
    finally:
        server.shutdown()
        server.server_close()


def test_etag_revalidates_with_if_none_match():
    """A value sent with an ETag is revalidated, and a 304 answer keeps the cached value."""
    counts: list = []
    server = _server({"ETag": '"v1"', "Cache-Control": "no-cache"}, counts)
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        first = mjf.read_features(url, keys=("total_cpu",))
        second = mjf.read_features(url, keys=("total_cpu",))
        assert first.values == second.values == {"total_cpu": 8}
        assert counts == [None, '"v1"']
    finally:
        server.shutdown()
        server.server_close()


def test_freshness_is_timed_on_the_injected_clock(clock):
    """A cached value is fresh for max-age seconds of the injected clock, then asked for again."""
    counts: list = []
    server = _server({"Cache-Control": "max-age=60"}, counts)
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        mjf.read_features(url, keys=("total_cpu",), clock=clock)
        clock.advance(59)
        mjf.read_features(url, keys=("total_cpu",), clock=clock)
        assert len(counts) == 1
        clock.advance(2)
        assert mjf.read_features(url, keys=("total_cpu",), clock=clock).values == {"total_cpu": 8}
        assert len(counts) == 2
    finally:
        server.shutdown()
        server.server_close()


def test_server_errors_are_retried_after_waits_on_the_injected_clock(clock):
    """A 5xx answer is retried with doubling waits on the injected clock, then reported as a problem."""
    counts: list = []
    server = _server({}, counts)
    try:
        url = f"http://127.0.0.1:{server.server_port}/broken"
        found = mjf.read_features(url, keys=("total_cpu",), clock=clock, retries=2)
        assert found.values == {} and len(counts) == 3
        assert clock.sleeps == [0.2, 0.4]
        assert found.problems == [("total_cpu", f"cannot read: {url}/total_cpu: HTTP 503")]
    finally:
        server.shutdown()
        server.server_close()
