"""``spool``: payloads as JSON files in a directory, claimed atomically by rename.

``incoming/<id>.json`` waits; ``claimed/`` holds what this VM took; ``results/<id>.json`` what it
did; ``rejected/`` a malformed file with a ``.reason`` beside it. Only one claimer wins a rename.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List

from ...config import Config
from ...errors import InputRejected
from ...pilot.command import write_atomic
from . import validated

log = logging.getLogger("vmagent.pool")


class SpoolSource:
    """Payloads from a spool directory."""

    name = "spool"

    def __init__(self, config: Config) -> None:
        self.root = config.path("slots.spool_dir")
        for sub in ("incoming", "claimed", "results", "rejected"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)

    def offer(self, capacity: Dict[str, Any]) -> List[Dict[str, Any]]:
        incoming = os.path.join(self.root, "incoming")
        found = []
        for name in sorted(os.listdir(incoming), key=lambda n: self._mtime(incoming, n)):
            if not name.endswith(".json"):
                continue
            path = os.path.join(incoming, name)
            try:
                with open(path, encoding="utf-8") as fh:
                    payload = validated(json.load(fh), path)
            except FileNotFoundError:
                continue  # claimed by someone else meanwhile
            except (ValueError, InputRejected) as exc:
                self._reject(path, str(exc))
                continue
            payload["_spool_name"] = name
            payload.setdefault("_queued_at", self._mtime(incoming, name))
            found.append(payload)
        return found

    def claim(self, payload: Dict[str, Any]) -> bool:
        name = payload.get("_spool_name", f"{payload['id']}.json")
        try:
            os.rename(os.path.join(self.root, "incoming", name), os.path.join(self.root, "claimed", name))
        except FileNotFoundError:
            return False
        return True

    def report(self, result: Dict[str, Any]) -> None:
        write_atomic(os.path.join(self.root, "results", f"{result['id']}.json"),
                     json.dumps(result, sort_keys=True) + "\n", 0o644)

    def close(self) -> None:
        pass

    def _reject(self, path: str, reason: str) -> None:
        target = os.path.join(self.root, "rejected", os.path.basename(path))
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return
        write_atomic(target + ".reason", reason + "\n", 0o644)
        log.warning("rejected payload file %s: %s", path, reason)

    @staticmethod
    def _mtime(directory: str, name: str) -> float:
        try:
            return os.stat(os.path.join(directory, name)).st_mtime
        except OSError:
            return 0.0
