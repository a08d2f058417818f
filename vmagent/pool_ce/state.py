"""The slot manager's state file: what runs where, what waits, what finished (docs/contracts.md)."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Optional

from ..config import Config
from ..pilot.command import write_atomic

VERSION = 1


def state_path(config: Config) -> str:
    return os.path.join(config.path("paths.state_dir"), "pool", "state.json")


def drain_path(config: Config) -> str:
    """Exists while a drain is requested; its content is the reason."""
    return os.path.join(config.path("paths.run_dir"), "drain")


def results_path(config: Config) -> str:
    """Every payload result, one JSON object a line, kept beside the state."""
    return os.path.join(config.path("paths.state_dir"), "pool", "results.jsonl")


def load(config: Config) -> Optional[Dict[str, Any]]:
    try:
        with open(state_path(config), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == VERSION else None


def save(config: Config, state: Dict[str, Any]) -> None:
    state["version"] = VERSION
    write_atomic(state_path(config), json.dumps(state, sort_keys=True, default=str), 0o644)


def append_result(config: Config, result: Dict[str, Any]) -> None:
    path = results_path(config)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(result, sort_keys=True) + "\n")


def wait_ready(config: Config, since: float, timeout: float, proc: Any = None) -> Optional[Dict[str, Any]]:
    """The state written by a slot manager started after ``since``; None after ``timeout`` s or its exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        found = load(config)
        if found and float(found.get("updated", 0)) >= since:
            return found
        time.sleep(0.1)
    return None
