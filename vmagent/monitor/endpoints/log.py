"""``log``: heartbeats as JSON lines in a file (default ``<log_dir>/heartbeats.jsonl``)."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping

from ...config import Config


class LogEndpoint:
    """Append every heartbeat and the halting decision to a JSON-lines file."""

    name = "log"

    def __init__(self, config: Config, options: Mapping[str, Any]) -> None:
        self.path = options.get("path") or os.path.join(config.path("paths.log_dir"), "heartbeats.jsonl")
        os.makedirs(os.path.dirname(self.path), exist_ok=True)

    def send(self, heartbeat: Dict[str, Any]) -> List[Any]:
        self._write({"heartbeat": heartbeat})
        return []

    def halting(self, decision: Any) -> None:
        self._write({"halting": {"reason": decision.reason, "vacuum_code": decision.vacuum_code}})

    def _write(self, entry: Dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
