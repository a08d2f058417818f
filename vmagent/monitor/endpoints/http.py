"""``http``: the reference manager (register once, heartbeat, declare halting)."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from ...config import Config


class HttpEndpoint:
    """Heartbeats to the manager at ``manager.url`` with this VM's own credential."""

    name = "http"

    def __init__(self, config: Config, options: Mapping[str, Any]) -> None:
        self.config = config
        self.vm_id: Optional[str] = None
        self.client: Any = None
        self.period: Optional[float] = None

    def _connect(self) -> None:
        from ...manager.client import ManagerClient, vm_credentials

        if self.client is None:
            self.vm_id, _ = vm_credentials(self.config)  # registers once; raises ManagerUnavailable
            self.client = ManagerClient.from_config(self.config)

    def send(self, heartbeat: Dict[str, Any]) -> List[Any]:
        self._connect()
        answer = self.client.heartbeat(self.vm_id, heartbeat)
        period = answer.get("heartbeat_period")
        self.period = float(period) if isinstance(period, (int, float)) and period > 0 else None
        instructions: List[Any] = answer["instructions"]
        return instructions

    def halting(self, decision: Any) -> None:
        self._connect()
        self.client.halting(self.vm_id, decision.policy, decision.vacuum_code, decision.reason)
