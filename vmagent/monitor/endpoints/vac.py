"""``vac``: the vacuum platform's ``$JOBOUTPUTS`` (HSF-TN-2016-04): a heartbeat file and ``shutdown_message``.

The target is a directory or an http(s) URL that takes PUT (the platform's own joboutputs URL).
The platform only looks at the heartbeat file's age; ``shutdown_message`` is one line, ``NNN text``,
with no trailing newline. A PUT has one deadline, ``timeout`` seconds for the whole exchange
(``HttpSession``); an https target is verified against ``ca_file``, else the system CAs.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional

from ...config import Config, host_path
from ...core.files import write_atomic
from ...errors import ManagerRefused, ManagerUnavailable
from .session import HttpSession


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
                "default": "heartbeat",
                "description": "name of the heartbeat file the platform watches",
            },
            "ca_file": {
                "type": ["string", "null"],
                "default": None,
                "description": "VM path of the CA bundle for an https target (default: system CAs)",
            },
            "timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 10,
                "description": "seconds for a whole PUT: connection, upload and answer",
            },
        },
    }

    def __init__(self, config: Config, options: Mapping[str, Any]) -> None:
        target = options.get("joboutputs") or os.environ.get("JOBOUTPUTS")
        if not target:
            target = os.path.join(config.path("paths.state_dir"), "joboutputs")
        elif not target.startswith(("http://", "https://")) and options.get("joboutputs"):
            target = host_path(config.root, target)
        self.target = str(target)
        self.heartbeat_file = str(options.get("heartbeat_file") or "heartbeat")
        ca = options.get("ca_file")
        self.ca_file = host_path(config.root, ca) if ca else None
        self.timeout = float(options.get("timeout") or 10)
        self.session: Optional[HttpSession] = None
        self.period: Optional[float] = None

    def send(self, heartbeat: Dict[str, Any], sample: Mapping[str, Any]) -> List[Any]:
        brief = {
            k: heartbeat.get(k)
            for k in ("instance_id", "seq", "time", "status", "load", "remaining_seconds")
        }
        self._put(self.heartbeat_file, json.dumps(brief, sort_keys=True) + "\n")
        return []

    def halting(self, decision: Any) -> None:
        self._put("shutdown_message", decision.message)

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
        if status >= 400:
            raise ManagerRefused(status, f"{url} refused the PUT")

    def _session(self) -> HttpSession:
        if self.session is None:
            try:
                self.session = HttpSession(self.target, ca_file=self.ca_file, timeout=self.timeout)
            except (
                OSError,
                ValueError,
            ) as exc:  # a bad URL or CA file: reported at every beat, not fatal
                raise ManagerRefused(0, f"vac endpoint {self.target}: {exc}") from None
        return self.session
