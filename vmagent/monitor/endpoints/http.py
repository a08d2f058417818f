"""``http``: the reference manager (register once, heartbeat, declare halting).

The connection comes from the ``manager`` section: bearer token (this VM's own after registration)
or client certificate, TLS verified against ``manager.ca_file``. The answer is untrusted: a
heartbeat period outside sane bounds is ignored and the instructions go back to the monitor for
validation.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional

from ...config import Config
from ...errors import ManagerRefused

log = logging.getLogger("vmagent.monitor")

PERIOD_BOUNDS = (5.0, 3600.0)


class HttpEndpoint:
    """Heartbeats to the manager at ``manager.url`` with this VM's own credential."""

    name = "http"
    options_schema = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "follow_period": {"type": "boolean", "default": True,
                              "description": "use the heartbeat period the manager answers (5 s to 1 h)"},
        },
    }

    def __init__(self, config: Config, options: Mapping[str, Any]) -> None:
        self.config = config
        self.follow_period = bool(options.get("follow_period", True))
        self.vm_id: Optional[str] = None
        self.client: Any = None
        self.period: Optional[float] = None

    def _connect(self) -> None:
        from ...manager.client import ManagerClient, vm_credentials

        if self.client is None:
            self.vm_id, _ = vm_credentials(self.config)  # registers once; raises ManagerUnavailable
            self.client = ManagerClient.from_config(self.config)

    def send(self, heartbeat: Dict[str, Any], sample: Mapping[str, Any]) -> List[Any]:
        self._connect()
        answer = self.client.heartbeat(self.vm_id, heartbeat)
        if not isinstance(answer, dict):
            raise ManagerRefused(200, f"heartbeat answer is not an object: {str(answer)[:200]}")
        self._follow(answer.get("heartbeat_period"))
        instructions: List[Any] = answer.get("instructions", [])  # validated by the monitor, list or not
        return instructions

    def _follow(self, period: Any) -> None:
        if not self.follow_period or period is None:
            self.period = None
            return
        low, high = PERIOD_BOUNDS
        if isinstance(period, (int, float)) and not isinstance(period, bool) and low <= period <= high:
            self.period = float(period)
        else:
            log.warning("ignoring heartbeat period %r from the manager (allowed %g to %g s)", period, low, high)
            self.period = None

    def halting(self, decision: Any) -> None:
        self._connect()
        self.client.halting(self.vm_id, f"{decision.policy}: {decision.reason}"[:1024], decision.vacuum_code,
                            decision.message)
