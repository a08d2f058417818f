"""The monitor loop: sample, heartbeat every jittered period, obey instructions, halt by policy.

Time comes from an injected clock: heartbeats and policy checks are scheduled on its monotonic
reading, policies judge its wall time. Signal handlers only record the signal; the loop then
stops without halting the VM (systemd stopping or restarting the service is not a reason to halt).

Endpoint calls run in worker threads (vmagent.monitor.links), one in flight per endpoint; the loop
never waits on one for more than a second at a time, so the watchdog, the policies, the other
endpoints and a stop signal are attended to whatever an endpoint does. Waiting for a call's answer
is real time (the call is real I/O), whatever the injected clock.

The loop decides when and dispatches; the parts live beside it: beat timing and the time left in
vmagent.monitor.schedule, carrying out instructions in vmagent.monitor.instructions, the halt
sequence in vmagent.monitor.halt.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from functools import partial
from typing import Any, Dict, Mapping, Optional

from .. import plugins
from ..clock import Clock, SystemClock
from ..config import Config
from ..core import layout
from . import sd_notify
from .halt import await_calls, halt_sequence, pet_watchdog
from .instructions import Instruction, carry_out, drain
from .links import Call, Link, build_links, final_reports
from .policies import Decision, Policies
from .sampler import Sampler, heartbeat
from .schedule import Schedule, outage, shutdown_time

log = logging.getLogger("vmagent.monitor")


class Monitor:
    """Watches the VM until a policy or an instruction says halt; ``run`` returns that decision."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Optional[Clock] = None,
        rng: Optional[random.Random] = None,
        endpoints: Optional[Dict[str, Any]] = None,
        halt_action: Any = None,
        boot_time: Optional[float] = None,
    ) -> None:
        from ..core.instance import instance_id as detect_instance_id

        self.config, self.settings = config, config.section("monitor")
        self.clock, self.rng = clock or SystemClock(), rng or random.Random()
        self.sampler = Sampler(config, self.clock, boot_time)
        self.schedule = Schedule(self.settings, self.rng, self.sampler.boot_time)
        self.policies = Policies(self.settings, self.sampler.boot_time, self.clock.time(), self.rng)
        self.instance_id = detect_instance_id(config)
        self.links = build_links(config, endpoints)
        self.halt_action = halt_action or plugins.load(
            plugins.GROUPS["halt_actions"], self.settings["halt_action"]
        )(config)
        self.started, self.seq, self.halting = self.clock.time(), 0, False
        self.decision: Optional[Decision] = None
        self.stop_signal: Optional[int] = None
        self.next_check = self.clock.monotonic()
        self.watchdog = sd_notify.watchdog_seconds()
        self.wake = threading.Event()  # set by a worker when its call ends

    # --- the loop ---------------------------------------------------------------------------------

    def run(self, *, once: bool = False) -> Optional[Decision]:
        """Loop until a decision (then halt) or a stop signal; ``once``: one pass, everything due now."""
        previous = self._trap_signals()
        try:
            sd_notify.notify(f"READY=1\nSTATUS=watching {self.instance_id}")
            log.info(
                "monitor of %s: endpoints %s, halt action %s",
                self.instance_id,
                ", ".join(link.name for link in self.links) or "none",
                self.settings["halt_action"],
            )
            while self.decision is None and self.stop_signal is None:
                self.tick()
                if once:
                    self.settle(self.settings["final_reports_seconds"])
                    break
                self._wait_until(self._next_due())
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if self.decision is not None:
            self.halt(self.decision)
        elif self.stop_signal is not None:
            log.info("stopped by signal %d; the VM is not halted", self.stop_signal)
            sd_notify.notify("STOPPING=1\nSTATUS=stopped by signal")
        return self.decision

    def _trap_signals(self) -> Dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, self._record_signal) for s in (signal.SIGTERM, signal.SIGINT)}

    def _record_signal(self, signum: int, frame: Any) -> None:
        self.stop_signal = signum

    def _next_due(self) -> float:
        due = min([self.next_check] + [link.next_at for link in self.links])
        if self.watchdog:
            due = min(due, self.clock.monotonic() + self.watchdog)
        return due

    def _wait_until(self, due: float) -> None:
        # short naps, so that a recorded signal ends the wait within a second; an answer ends it at once
        while self.stop_signal is None and self.clock.monotonic() < due and not self.wake.is_set():
            nap = min(1.0, max(0.01, due - self.clock.monotonic()))
            if any(link.call is not None for link in self.links):
                self.wake.wait(nap)
            else:
                self.clock.sleep(nap)

    def settle(self, seconds: float) -> None:
        """Wait up to ``seconds`` for the calls in flight (petting the watchdog), then act on their answers."""
        end = time.monotonic() + seconds
        while self.stop_signal is None and time.monotonic() < end:
            pending = [
                link.call for link in self.links if link.call is not None and not link.call.done()
            ]
            if not pending:
                break
            if not pending[0].wait(min(1.0, end - time.monotonic())):
                pet_watchdog()
        self.collect()

    def tick(self) -> None:
        """Do whatever is due now: answers that came in, a policy check, heartbeats (started, never awaited),
        the outage limit."""
        mono, now = self.clock.monotonic(), self.clock.time()
        sd_notify.notify(f"WATCHDOG=1\nSTATUS={self.status()}, heartbeat {self.seq}")
        self.collect()
        sample = None
        shutdown_at, grace = shutdown_time(self.config)
        if mono >= self.next_check:
            self.next_check = mono + self.settings["check_seconds"]
            sample = self.sampler.take()
            self.decision = self.decision or self.policies.check(now, sample, shutdown_at, grace)
        for link in self.links:
            if self.decision is None and mono >= link.next_at:
                if link.call is not None:
                    link.skip(mono, self.schedule.period(link))
                    continue
                sample = sample or self.sampler.take()
                self.beat(link, sample, self.schedule.remaining(now, shutdown_at))
        self.decision = self.decision or outage(self.links, now, self.started)
        if self.decision is not None:
            log.warning(
                "decision: %s [%s, vacuum code %d]",
                self.decision.reason,
                self.decision.policy,
                self.decision.vacuum_code,
            )

    def status(self) -> str:
        """halting, draining (the drain file exists) or running."""
        if self.halting:
            return "halting"
        if os.path.exists(layout.drain_request(self.config)):
            return "draining"
        return "running"

    def preview(self) -> Dict[str, Any]:
        """What one pass would send and decide now, without sending or changing anything."""
        sample, now = self.sampler.take(), self.clock.time()
        shutdown_at, grace = shutdown_time(self.config)
        decision = self.policies.check(now, sample, shutdown_at, grace)
        body = heartbeat(
            sample,
            instance_id=self.instance_id,
            seq=0,
            status=self.status(),
            remaining=self.schedule.remaining(now, shutdown_at),
        )
        return {
            "heartbeat": body,
            "endpoints": [link.name for link in self.links],
            "halt_action": self.settings["halt_action"],
            "decision": None
            if decision is None
            else {
                "policy": decision.policy,
                "reason": decision.reason,
                "vacuum_code": decision.vacuum_code,
            },
        }

    # --- heartbeats -------------------------------------------------------------------------------

    def body(
        self, link: Link, sample: Mapping[str, Any], remaining: Optional[float]
    ) -> Dict[str, Any]:
        """The next heartbeat for ``link``: the sample, its acks and a summary of what it missed."""
        self.seq += 1
        status = self.status()
        if status == "running" and sample["pipeline"]["outcome"] == "running":
            status = "booting"
        body = heartbeat(
            sample, instance_id=self.instance_id, seq=self.seq, status=status, remaining=remaining
        )
        acks, missed = link.inbox.acks(), link.missed.summary()
        if acks:
            body["acks"] = acks
        if missed:
            body["missed"] = missed
        return body

    def beat(self, link: Link, sample: Mapping[str, Any], remaining: Optional[float]) -> None:
        """Start one heartbeat to ``link`` in a worker; ``collect`` acts on its answer."""
        body = self.body(link, sample, remaining)
        mono = self.clock.monotonic()
        link.next_at = mono + self.schedule.period(link)  # until the answer sets the next beat
        link.call = Call(
            f"{link.name} heartbeat {body['seq']}",
            partial(link.plugin.send, body, sample),
            self.wake,
            mono,
            body,
        )

    def collect(self) -> None:
        """Act on every call that has ended: obey its instructions, or note its failure and back off."""
        self.wake.clear()
        for link in self.links:
            call = link.finished()
            if call is None:
                continue
            for instruction in link.ended(
                call, self.clock.time(), self.clock.monotonic(), partial(self.schedule.delay, link)
            ):
                self.obey(instruction)

    # --- instructions -----------------------------------------------------------------------------

    def obey(self, instruction: Instruction) -> None:
        """Carry out one validated instruction (``instructions.carry_out``); a halt decides, unless
        a decision came first."""
        decided = carry_out(instruction, self.config, self.clock)
        self.decision = self.decision or decided

    # --- halting ----------------------------------------------------------------------------------

    def halt(self, decision: Decision) -> None:
        """The halt sequence (``halt.halt_sequence``), once."""
        if self.halting:
            return
        self.halting = True
        halt_sequence(
            self.config, self.clock, decision, partial(drain, self.config), self.final_reports
        )
        self.halt_action(decision)

    def final_reports(self, decision: Decision) -> None:
        """A last heartbeat (status halting) and the halting notice to every endpoint, all at once, each
        within its endpoint's deadline; the halt waits for them at most ``final_reports_seconds`` in all."""
        sample = self.sampler.take()
        remaining = self.schedule.remaining(self.clock.time(), shutdown_time(self.config)[0])
        bound = float(self.settings["final_reports_seconds"])
        end = time.monotonic() + bound
        calls = []
        for link in self.links:
            work = partial(
                final_reports,
                link,
                self.body(link, sample, remaining),
                sample,
                decision,
                link.call,
                end,
            )
            calls.append(
                (
                    link.name,
                    Call(f"{link.name} final reports", work, self.wake, self.clock.monotonic()),
                )
            )
        await_calls(calls, end, bound)
