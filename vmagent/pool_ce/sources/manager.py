"""``manager``: payloads from the reference manager's queue.

The source peeks at the head of the queue (the payloads that could run on this VM at all: its tags,
its cores and memory, its remaining lifetime) and leases only what the masonry policy starts, one
payload at a time by id, so reservations for multicore payloads work as with the spool. A manager
without peeking (older) answers 422; the source then falls back to leasing whatever fits the free
cores, the manager's own first-fit matching.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

from ...config import Config
from ...errors import InputRejected, ManagerRefused, ManagerUnavailable
from . import Offer, validated

log = logging.getLogger("vmagent.pool")
WINDOW = 64  # payloads peeked at once: the manager's own limit per claim


class ManagerSource:
    """Offers the queue's head, leases by id at start; reports results, keeping them through outages."""

    name = "manager"
    requires_settings = ("manager.url",)

    def __init__(self, config: Config) -> None:
        from ...client import ManagerClient, vm_credentials

        self.config = config
        self.vm_id, _ = vm_credentials(config)
        self.client = ManagerClient.from_config(config)  # now carries this VM's own credential
        self.pending: List[Dict[str, Any]] = []  # results the manager has not acknowledged yet
        self.peeking = True
        self.total_cores: Optional[int] = None

    @property
    def leased(self) -> bool:
        """True when what ``offer`` answers is already leased to this VM (no peeking)."""
        return not self.peeking

    def offer(self, capacity: Dict[str, Any]) -> List[Offer]:
        self._flush()
        if capacity["free_cores"] <= 0:
            return []
        self.total_cores = capacity["total_cores"]
        request = {
            "remaining_seconds": capacity["remaining_seconds"],
            "total_cores": capacity["total_cores"],
        }
        request.update(
            {
                k: v
                for k, v in self.config.section("instance").items()
                if k in ("running_pod", "vo") and v
            }
        )
        if self.peeking:
            request.update(
                free_cores=capacity["total_cores"],
                free_memory_mb=capacity.get("total_memory_mb"),
                max=min(WINDOW, 2 * capacity["total_cores"]),
                peek=True,
            )
        else:
            request.update(
                free_cores=capacity["free_cores"],
                free_memory_mb=capacity["free_memory_mb"],
                max=capacity["free_cores"],
            )
        try:
            found = self.client.claim(self.vm_id, **request)
        except ManagerUnavailable as exc:
            log.warning("manager unavailable, no new payloads for now: %s", exc.message)
            return []
        except ManagerRefused as exc:
            if not (self.peeking and exc.status == 422):
                raise
            log.warning(
                "the manager cannot list its queue (%s): leasing what fits the free cores instead",
                exc.message,
            )
            self.peeking = False
            return self.offer(capacity)
        offered: List[Offer] = []
        for document in found:
            document = {
                k: v for k, v in document.items() if k not in ("lease_expires_at", "attempt")
            }
            try:
                offered.append(Offer(validated(document, "manager claim")))
            except InputRejected as exc:
                self._refuse(document, exc)
        return offered

    def claim(self, offer: Offer) -> bool:
        payload = offer.payload
        if not self.peeking:
            return True  # the manager leased it to this VM when it offered it
        cores = self.total_cores if payload["whole_node"] else payload["cores"]
        try:
            got = self.client.claim(
                self.vm_id,
                ids=[payload["id"]],
                free_cores=cores or payload["cores"],
                free_memory_mb=payload["memory_mb"],
                total_cores=self.total_cores,
                max=1,
            )
        except ManagerUnavailable as exc:
            log.warning("could not lease %s: %s", payload["id"], exc.message)
            return False
        return any(doc.get("id") == payload["id"] for doc in got)

    def report(self, result: Dict[str, Any]) -> None:
        self.pending.append(result)
        self._flush()

    def close(self) -> None:
        self._flush()

    def _refuse(self, document: Dict[str, Any], exc: InputRejected) -> None:
        """A payload description this VM will not run: leased (when peeked) and reported failed."""
        log.error("refusing a payload from the manager: %s", exc.message)
        payload_id = str(document.get("id", "unknown"))[:128]
        if self.peeking:
            try:
                self.client.claim(
                    self.vm_id,
                    ids=[payload_id],
                    free_cores=4096,
                    total_cores=self.total_cores,
                    max=1,
                )
            except (ManagerUnavailable, ManagerRefused) as error:
                log.warning("could not lease %s to refuse it: %s", payload_id, error)
                return
        self._send({"id": payload_id, "outcome": "failed", "reason": exc.message[:4000]})

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
