"""Endpoint links: built from monitor.endpoints, each with its schedule, state and call in flight.

Every endpoint call (a heartbeat, the final reports) runs in its own daemon thread, so that an
endpoint slow to answer holds up neither the other endpoints, nor the policy checks, nor the
systemd watchdog. A link has at most one call in flight: a beat falling due meanwhile is skipped
and counted as late, never queued. The main loop collects finished calls and acts on their
answers itself, so the monitor's state changes on the main thread only; a worker touches nothing
but its endpoint plugin and the heartbeat it was given.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional

from .. import plugins
from ..config import Config
from ..errors import ManagerRefused
from .buffer import MissedHeartbeats
from .instructions import Inbox, Instruction

log = logging.getLogger("vmagent.monitor")


class Call:
    """One endpoint call running in a daemon thread; its answer or error is read once ``done``."""

    def __init__(
        self,
        name: str,
        work: Callable[[], Any],
        wake: threading.Event,
        started: float,
        body: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.started = started
        self.body = body
        self.answer: Any = None
        self.error: Optional[BaseException] = None
        self.late = 0
        self._work = work
        self._wake = wake
        self._done = threading.Event()
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        try:
            self.answer = self._work()
        except BaseException as exc:  # noqa: BLE001 - handed to the main loop, which logs it
            self.error = exc
        finally:
            self._done.set()
            self._wake.set()

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` (real time) for the call to end; True when it has."""
        return self._done.wait(max(0.0, seconds))


class Link:
    """One endpoint with its schedule, failures in a row, what it missed and what it is owed acks for."""

    def __init__(
        self, name: str, plugin: Any, buffer_size: int, outage_limit: Optional[float]
    ) -> None:
        self.name = name
        self.plugin = plugin
        self.outage_limit = outage_limit
        self.next_at = 0.0
        self.failures = 0
        self.late = 0
        self.last_ok: Optional[float] = None
        self.missed = MissedHeartbeats(buffer_size)
        self.inbox = Inbox(name)
        self.call: Optional[Call] = None

    def finished(self) -> Optional[Call]:
        """The call in flight if it has ended (the link is then free for the next), else None."""
        call = self.call
        if call is None or not call.done():
            return None
        self.call = None
        return call

    def ended(
        self, call: Call, now: float, mono: float, delay: Callable[[int], float]
    ) -> List[Instruction]:
        """Book the end of ``call`` and schedule the next beat; the new instructions it brought.

        ``delay(failures)`` is the time from one beat to the next after that many failures in a row.
        """
        body = call.body or {}
        if call.late:
            log.warning(
                "%s answered heartbeat %d after %.0f s; %d beats skipped meanwhile",
                self.name,
                body["seq"],
                mono - call.started,
                call.late,
            )
        if isinstance(call.error, ManagerRefused):
            self.missed.add(body)
            self.next_at = call.started + delay(0)
            log.error("%s refused heartbeat %d: %s", self.name, body["seq"], call.error.message)
            return []
        if call.error is not None:  # an outage or a broken plugin: it must not stop the watchdog
            self.failures += 1
            self.missed.add(body)
            wait = delay(self.failures)
            self.next_at = call.started + wait
            log.warning(
                "%s unreachable (%d in a row, %d heartbeats missed), next try in %.0f s: %s",
                self.name,
                self.failures,
                len(self.missed),
                wait,
                getattr(call.error, "message", None) or repr(call.error),
            )
            return []
        if len(self.missed):
            log.info(
                "%s reachable again after %d missed heartbeats (summary sent)",
                self.name,
                len(self.missed),
            )
        self.missed.clear()
        self.inbox.delivered(body.get("acks", []))
        self.failures = 0
        self.last_ok = now
        self.next_at = call.started + delay(0)
        return self.inbox.accept(call.answer)

    def skip(self, mono: float, period: float) -> None:
        """A beat fell due while the last call is still in flight: skip it and count it as late."""
        call = self.call
        if call is None:
            return
        call.late += 1
        self.late += 1
        self.next_at = mono + period
        if call.late == 1:
            log.warning(
                "%s: heartbeat %s unanswered for %.0f s; no new beat until it ends",
                self.name,
                (call.body or {}).get("seq"),
                mono - call.started,
            )


def build_links(config: Config, endpoints: Optional[Dict[str, Any]] = None) -> List[Link]:
    """A link per configured endpoint (``monitor.endpoints``), or per given ``{name: plugin}``."""
    settings = config.section("monitor")
    size, default_limit = settings["buffer_size"], settings["outage_halt_seconds"]
    if endpoints is not None:
        return [Link(name, plugin, size, default_limit) for name, plugin in endpoints.items()]
    links = []
    for i, entry in enumerate(settings["endpoints"]):
        found = plugins.configure(
            config.source,
            plugins.GROUPS["endpoints"],
            entry["name"],
            entry.get("options"),
            at=f"monitor.endpoints.{i}.name",
            options_at=f"monitor.endpoints.{i}.options",
            validate=not config.checked,  # the monitor's start-up checked them all already
        )
        limit = entry.get("outage_halt_seconds", default_limit)
        links.append(
            Link(f"{entry['name']}#{i}", found.factory(config, found.options), size, limit)
        )
    return links


def final_reports(
    link: Link,
    body: Dict[str, Any],
    sample: Mapping[str, Any],
    decision: Any,
    previous: Optional[Call],
    end: float,
) -> None:
    """In a worker: after the call still in flight (if it ends by ``end``), the last heartbeat and the
    halting notice, each within the endpoint's own deadline; failures are logged."""
    if previous is not None and not previous.wait(end - time.monotonic()):
        log.warning(
            "%s: still no answer to heartbeat %s; no final reports",
            link.name,
            (previous.body or {}).get("seq"),
        )
        return
    for what in ("final heartbeat", "halting notice"):
        try:
            if what == "final heartbeat":
                link.plugin.send(body, sample)
            else:
                link.plugin.halting(decision)
        except Exception as exc:  # noqa: BLE001 - the VM halts whether or not the endpoint hears of it
            log.warning(
                "%s: %s not delivered: %s", link.name, what, getattr(exc, "message", None) or exc
            )
