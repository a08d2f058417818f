"""``vac``: the vacuum platform's $JOBOUTPUTS: a heartbeat file and ``shutdown_message``.

The target is a directory (default ``$JOBOUTPUTS``) or an http(s) URL taking PUT.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping

from ...config import Config
from ...errors import ManagerUnavailable
from ...pilot.command import write_atomic


class VacEndpoint:
    """Write ``heartbeat`` on every beat and ``shutdown_message`` (``NNN text``, no newline) at the end."""

    name = "vac"

    def __init__(self, config: Config, options: Mapping[str, Any]) -> None:
        self.target = str(options.get("joboutputs") or os.environ.get("JOBOUTPUTS")
                          or os.path.join(config.path("paths.state_dir"), "joboutputs"))

    def send(self, heartbeat: Dict[str, Any]) -> List[Any]:
        self._put("heartbeat", json.dumps({k: heartbeat.get(k) for k in ("time", "seq", "status", "load")}))
        return []

    def halting(self, decision: Any) -> None:
        self._put("shutdown_message", decision.message)

    def _put(self, name: str, text: str) -> None:
        if self.target.startswith(("http://", "https://")):
            import requests  # only a URL target pays for requests and ssl

            try:
                answer = requests.put(f"{self.target.rstrip('/')}/{name}", data=text.encode(), timeout=10)
            except requests.RequestException as exc:
                raise ManagerUnavailable(f"{self.target}: {exc}") from None
            if answer.status_code >= 400:
                raise ManagerUnavailable(f"{self.target}/{name}: HTTP {answer.status_code}")
            return
        write_atomic(os.path.join(self.target, name), text, 0o644)
