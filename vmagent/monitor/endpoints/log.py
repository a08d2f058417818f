"""``log``: heartbeats as JSON lines in a local file (default ``<log_dir>/heartbeats.jsonl``)."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping

from ...config import Config, host_path


class LogEndpoint:
    """Append every heartbeat (with its full sample, if asked) and the halting decision to a JSON-lines file."""

    name = "log"
    options_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "path": {
                "type": ["string", "null"],
                "pattern": "^/",
                "default": None,
                "description": "VM path of the file (default <log_dir>/heartbeats.jsonl)",
            },
            "sample": {
                "type": "boolean",
                "default": False,
                "description": "also keep the full sample (CPU per core, each pilot's log age, ...)",
            },
        },
    }

    def __init__(self, config: Config, options: Mapping[str, Any]) -> None:
        path = options.get("path")
        self.path = (
            host_path(config.root, path)
            if path
            else os.path.join(config.path("paths.log_dir"), "heartbeats.jsonl")
        )
        self.with_sample = bool(options.get("sample"))
        self.period = None

    def send(self, heartbeat: Dict[str, Any], sample: Mapping[str, Any]) -> List[Any]:
        entry: Dict[str, Any] = {"heartbeat": heartbeat}
        if self.with_sample:
            entry["sample"] = sample
        self._write(entry)
        return []

    def halting(self, decision: Any) -> None:
        self._write(
            {
                "halting": {
                    "policy": decision.policy,
                    "reason": decision.reason,
                    "vacuum_code": decision.vacuum_code,
                }
            }
        )

    def _write(self, entry: Dict[str, Any]) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
