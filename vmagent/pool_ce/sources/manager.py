"""``manager``: payloads from the reference manager's queue, asking only for what fits."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

from ...config import Config
from ...errors import InputRejected, ManagerRefused, ManagerUnavailable
from . import validated

log = logging.getLogger("vmagent.pool")


class ManagerSource:
    """Claims payloads that fit the free cores, memory and remaining lifetime; reports results."""

    name = "manager"
    leased = True  # what it offers is already ours: keep it until it runs

    def __init__(self, config: Config) -> None:
        from ...manager.client import ManagerClient, vm_credentials

        self.config = config
        self.vm_id, _ = vm_credentials(config)
        self.client = ManagerClient.from_config(config)  # now carries this VM's own credential
        self.pending: List[Dict[str, Any]] = []  # results the manager has not acknowledged yet

    def offer(self, capacity: Dict[str, Any]) -> List[Dict[str, Any]]:
        self._flush()
        if capacity["free_cores"] <= 0:
            return []
        instance = self.config.section("instance")
        request = {"free_cores": capacity["free_cores"], "free_memory_mb": capacity["free_memory_mb"],
                   "remaining_seconds": capacity["remaining_seconds"], "total_cores": capacity["total_cores"],
                   "max": capacity["free_cores"]}
        request.update({k: instance[k] for k in ("running_pod", "vo") if instance[k]})
        try:
            found = self.client.claim(self.vm_id, **request)
        except ManagerUnavailable as exc:
            log.warning("manager unavailable, no new payloads for now: %s", exc.message)
            return []
        offered = []
        for document in found:
            document = {k: v for k, v in document.items() if k not in ("lease_expires_at", "attempt")}
            try:
                offered.append(validated(document, "manager claim"))
            except InputRejected as exc:
                log.error("refusing a payload from the manager: %s", exc.message)
                self._send({"id": str(document.get("id", "unknown"))[:128], "outcome": "failed",
                            "reason": exc.message[:4000]})
        return offered

    def claim(self, payload: Dict[str, Any]) -> bool:
        return True  # the manager leased it to this VM when it offered it

    def report(self, result: Dict[str, Any]) -> None:
        self.pending.append(result)
        self._flush()

    def close(self) -> None:
        self._flush()

    def _flush(self) -> None:
        while self.pending:
            if not self._send(self.pending[0]):
                return
            self.pending.pop(0)

    def _send(self, result: Dict[str, Any]) -> Optional[bool]:
        try:
            self.client.result(self.vm_id, result["id"], result)
        except ManagerUnavailable as exc:
            log.warning("result of %s kept for later: %s", result["id"], exc.message)
            return False
        except ManagerRefused as exc:
            log.error("manager refused the result of %s: %s", result["id"], exc.message)
        return True
