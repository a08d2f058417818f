"""The vac endpoint's options and files as Vac and Vcycle read them: the heartbeat file's name, the
client certificate settings, ``shutdown_message``'s one line and what counts as a stored PUT."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading

import pytest

from vmagent import plugins
from vmagent.errors import ManagerRefused
from vmagent.monitor.endpoints.vac import VacEndpoint
from vmagent.monitor.policies import Decision, shutdown_line
from vmagent.testing import make_config, write_config

AT = "monitor.endpoints.0.options"


def problems_of(options):
    """The problems check-config's own validation finds in the vac endpoint's ``options``."""
    return plugins.validated_options(VacEndpoint, options, AT)[1]


@pytest.mark.parametrize("name", ["..", ".", "shutdown_message", "a/b", "../heartbeat", ""])
def test_heartbeat_file_must_be_a_plain_file_name(name):
    """A heartbeat_file that is not a plain file name (or would be shutdown_message) is refused."""
    found = problems_of({"heartbeat_file": name})
    assert [path for path, _ in found] == [f"{AT}.heartbeat_file"], found


def test_a_key_needs_a_certificate():
    """key_file without cert_file is refused; cert_file alone (a proxy) or both are accepted."""
    assert problems_of({"key_file": "/k.pem"}) != []
    assert problems_of({"key_file": "/k.pem", "cert_file": None}) != []
    assert problems_of({"cert_file": "/tmp/x509up_u0"}) == []
    assert problems_of({"cert_file": "/c.pem", "key_file": "/k.pem", "ca_file": "/ca"}) == []
    assert problems_of({"cert_file": None, "key_file": None}) == []


def test_check_config_names_bad_vac_options(tmp_path):
    """``vmagent check-config`` reports a bad heartbeat_file and a key without a certificate."""
    options = {"heartbeat_file": "..", "key_file": "/etc/grid-security/vm.key.pem"}
    path = write_config(
        tmp_path,
        [],
        monitor={"endpoints": [{"name": "vac", "options": options}], "halt_action": "exit"},
    )
    done = subprocess.run(
        [sys.executable, "-m", "vmagent", "check-config", path],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"{AT}.heartbeat_file:" in done.stderr and "cert_file" in done.stderr


def test_heartbeat_file_names_the_local_file(tmp_path):
    """A directory target gets the heartbeat under the configured name and no file called heartbeat."""
    vac = VacEndpoint(make_config(tmp_path, []), {"joboutputs": "/jo", "heartbeat_file": "hb.vm-1"})
    (tmp_path / "jo").mkdir()
    vac.send({"instance_id": "i-test", "seq": 3, "time": 1.0}, {})
    assert sorted(p.name for p in (tmp_path / "jo").iterdir()) == ["hb.vm-1"]


@pytest.mark.parametrize(
    "code, reason, line",
    [
        (200, "no payload ran for 300 s", "200 no payload ran for 300 s"),
        (300, "", "300 no more work"),
        (700, "  \n ", "700 transient agent or application problem"),
        (500, "pilot\nfailed:\r\n\tnode-unfit  ", "500 pilot failed: node-unfit"),
        (600, "colour \x1b[31mred\x00", "600 colour [31mred"),
        (7, "odd", "700 odd (vacuum code 7 out of range)"),
        (1000, "big", "700 big (vacuum code 1000 out of range)"),
        (True, "", "700 (vacuum code True out of range)"),
    ],
)
def test_shutdown_line(code, reason, line):
    """shutdown_message is one line ``NNN text``: a three-digit code, printable text, no newline."""
    assert shutdown_line(code, reason) == line


def test_shutdown_message_reads_back_as_vac_and_vcycle_read_it(tmp_path):
    """The file's code reads back both ways the platforms parse it, and nothing trails the text."""
    vac = VacEndpoint(make_config(tmp_path, []), {"joboutputs": "/jo"})
    (tmp_path / "jo").mkdir()
    vac.halting(Decision("no-payloads", "", 300))
    raw = (tmp_path / "jo/shutdown_message").read_bytes()
    assert raw == b"300 no more work"
    text = raw.decode().strip()
    assert int(text[0:3]) == 300 and int(text.split(" ")[0]) == 300  # vacd; Vcycle


class Redirecting(http.server.BaseHTTPRequestHandler):
    """Answers every PUT with a redirect, as a web server might for a moved joboutputs URL."""

    def do_PUT(self) -> None:  # noqa: N802 - the stdlib's naming
        self.rfile.read(int(self.headers["Content-Length"] or 0))
        self.send_response(307)
        self.send_header("Location", f"http://127.0.0.1:1{self.path}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_redirect_is_not_a_stored_file(tmp_path):
    """A PUT answered with a redirect stored nothing: the endpoint reports a refusal, not success."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/joboutputs"
        vac = VacEndpoint(make_config(tmp_path, []), {"joboutputs": url})
        with pytest.raises(ManagerRefused) as caught:
            vac.halting(Decision("lifetime", "lifetime reached", 100))
        assert caught.value.status == 307
    finally:
        server.shutdown()
        server.server_close()
