"""``vac``: the vacuum platform's ``$JOBOUTPUTS`` (HSF-TN-2016-04): a heartbeat file and ``shutdown_message``.

The target is a directory or an http(s) URL that takes PUT (the platform's own joboutputs URL).
Vac and Vcycle look only at the age of the heartbeat file, whose name the site chooses per
machinetype (``heartbeat_file``); ``shutdown_message`` is one line, ``NNN text``, with no trailing
newline, which they read back with ``strip()`` and the first three characters as the code.

Vcycle's joboutputs URL takes a PUT only over HTTPS with a client certificate whose subject is the
VM's (``cert_file``, with ``key_file`` or alone when it holds the key too, as an X.509 proxy does);
the server is verified against ``ca_file``, else the system CAs. A PUT has one deadline,
``timeout`` seconds for the whole exchange (``HttpSession``), and counts only when answered 2xx.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional

from ...config import Config, host_path
from ...core.files import write_atomic
from ...errors import ManagerRefused, ManagerUnavailable
from ..policies import shutdown_line
from .session import HttpSession

SHUTDOWN_MESSAGE = "shutdown_message"
TLS_OPTIONS = ("ca_file", "cert_file", "key_file")


# HSF-TN-2016-04's meaning of each hundred, for a decision that gives no reason of its own
class VacEndpoint:
    """Rewrite the heartbeat file on every beat; write ``shutdown_message`` when the VM halts."""

    name = "vac"
    options_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "joboutputs": {
                "type": ["string", "null"],
                "default": None,
                "description": "a VM directory or an http(s) URL (default: $JOBOUTPUTS, "
                "else <state_dir>/joboutputs)",
            },
            "heartbeat_file": {
                "type": "string",
                "pattern": "^[A-Za-z0-9._-]+$",
                "not": {"enum": [".", "..", SHUTDOWN_MESSAGE]},
                "default": "heartbeat",
                "description": "name of the heartbeat file the platform watches (the "
                "machinetype's heartbeat_file in vac.conf or vcycle.conf): a plain file name",
            },
            "ca_file": {
                "type": ["string", "null"],
                "default": None,
                "description": "VM path of the CA bundle, or of a directory of hashed CA "
                "certificates such as /etc/grid-security/certificates, for an https target "
                "(default: the system CAs)",
            },
            "cert_file": {
                "type": ["string", "null"],
                "default": None,
                "description": "VM path of the client certificate (PEM) presented to an https "
                "target, as Vcycle requires; it may hold the key too, as an X.509 proxy does "
                "(default: none)",
            },
            "key_file": {
                "type": ["string", "null"],
                "default": None,
                "description": "VM path of the client certificate's unencrypted key (PEM), when "
                "cert_file does not hold it (default: none)",
            },
            "timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 10,
                "description": "seconds for a whole PUT: connection, upload and answer",
            },
        },
        # a key alone is a mistake, not a request for no certificate
        "if": {"properties": {"key_file": {"type": "string"}}, "required": ["key_file"]},
        "then": {"properties": {"cert_file": {"type": "string"}}, "required": ["cert_file"]},
    }

    def __init__(self, config: Config, options: Mapping[str, Any]) -> None:
        target = options.get("joboutputs") or os.environ.get("JOBOUTPUTS")
        if not target:
            target = os.path.join(config.path("paths.state_dir"), "joboutputs")
        elif not target.startswith(("http://", "https://")) and options.get("joboutputs"):
            target = host_path(config.root, target)
        self.target = str(target)
        self.heartbeat_file = str(options.get("heartbeat_file") or "heartbeat")
        self.tls_files = [self._vm_file(config, options.get(key)) for key in TLS_OPTIONS]
        self.timeout = float(options.get("timeout") or 10)
        self.session: Optional[HttpSession] = None
        self.period: Optional[float] = None

    @staticmethod
    def _vm_file(config: Config, path: Any) -> Optional[str]:
        return host_path(config.root, str(path)) if path else None

    def send(self, heartbeat: Dict[str, Any], sample: Mapping[str, Any]) -> List[Any]:
        brief = {
            k: heartbeat.get(k)
            for k in ("instance_id", "seq", "time", "status", "load", "remaining_seconds")
        }
        self._put(self.heartbeat_file, json.dumps(brief, sort_keys=True) + "\n")
        return []

    def halting(self, decision: Any) -> None:
        line = shutdown_line(decision.vacuum_code, decision.reason)
        self._put(SHUTDOWN_MESSAGE, line)

    def _put(self, name: str, text: str) -> None:
        if not self.target.startswith(("http://", "https://")):
            write_atomic(os.path.join(self.target, name), text, 0o644)
            return
        url = f"{self.target.rstrip('/')}/{name}"
        status, _ = self._session().request(
            "PUT", f"/{name}", text.encode(), {"Content-Type": "text/plain"}
        )
        if status >= 500:
            raise ManagerUnavailable(f"{url}: HTTP {status}")
        if not 200 <= status < 300:  # a redirect or a refusal: nothing was stored
            raise ManagerRefused(status, f"{url} refused the PUT")

    def _session(self) -> HttpSession:
        if self.session is None:
            ca_file, cert_file, key_file = self.tls_files
            try:
                self.session = HttpSession(
                    self.target,
                    ca_file=ca_file,
                    cert_file=cert_file,
                    key_file=key_file,
                    timeout=self.timeout,
                )
            except (OSError, ValueError) as exc:
                # a bad URL, CA or certificate file: reported at every beat, not fatal
                raise ManagerRefused(0, f"vac endpoint {self.target}: {exc}") from None
        return self.session
