"""The monitor loop: sample, heartbeat every jittered period, obey instructions, halt by policy."""

from __future__ import annotations

import logging
import os
import random
from collections import deque
from typing import Any, Deque, Dict, List, Optional

import psutil

from .. import mjf, plugins, schemas
from ..clock import Clock, SystemClock
from ..config import Config, host_path
from ..errors import ManagerRefused, VmagentError
from ..pilot.command import write_atomic
from ..pool_ce import state as pool_state
from . import sdnotify
from .halt import stop_payloads
from .policies import Decision, Policies
from .sampler import sample

log = logging.getLogger("vmagent.monitor")


class Endpoint:
    """One endpoint with its schedule, failures in a row and what it missed during an outage."""

    def __init__(self, name: str, plugin: Any, buffer_size: int):
        self.name, self.plugin = name, plugin
        self.next_at = 0.0
        self.failures = 0
        self.last_ok: Optional[float] = None
        self.missed: Deque[Dict[str, Any]] = deque(maxlen=buffer_size)
        self.missed_total = 0
        self.acks: List[int] = []  # instructions of this endpoint carried out, told in its next heartbeat

    def summary(self) -> Dict[str, Any]:
        """What was not delivered, as the heartbeat schema's ``missed`` object."""
        loads = [m["load"][0] for m in self.missed if m.get("load")]
        free = [m["slots"]["free_cores"] for m in self.missed if m.get("slots")]
        found: Dict[str, Any] = {"count": self.missed_total, "first": self.missed[0]["time"],
                                 "last": self.missed[-1]["time"]}
        if loads:
            found["max_load"] = max(loads)
        if free:
            found["min_free_cores"] = min(free)
        return found


class Monitor:
    """Watches the VM until a policy or an instruction says halt; ``run`` returns that decision."""

    def __init__(self, config: Config, *, clock: Optional[Clock] = None, rng: Optional[random.Random] = None,
                 endpoints: Optional[Dict[str, Any]] = None, halt_action: Any = None):
        self.config, self.settings = config, config.section("monitor")
        self.clock, self.rng = clock or SystemClock(), rng or random.Random()
        self.started = self.clock.time()
        self.policies = Policies(self.settings, self.started, psutil.boot_time(), self.rng)
        self.endpoints = [Endpoint(name, plugin, self.settings["buffer_size"])
                          for name, plugin in (endpoints or self._load_endpoints()).items()]
        self.halt_action = halt_action or plugins.load(
            plugins.GROUPS["halt_actions"], self.settings["halt_action"])(config)
        self.seq, self.status = 0, "running"
        self.decision: Optional[Decision] = None
        self.next_check = self.started

    def _load_endpoints(self) -> Dict[str, Any]:
        group = plugins.GROUPS["endpoints"]
        found = {}
        for i, entry in enumerate(self.settings["endpoints"]):
            found[f"{entry['name']}#{i}"] = plugins.load(group, entry["name"])(self.config, entry.get("options", {}))
        return found

    def run(self) -> Decision:
        sdnotify.notify("READY=1")
        while self.decision is None:
            self.tick()
            if self.decision is None:
                self.clock.sleep(max(0.05, self._next_due() - self.clock.time()))
        self.halt(self.decision)
        return self.decision

    def tick(self) -> None:
        """Do whatever is due now: a policy check, heartbeats."""
        now = self.clock.time()
        sdnotify.notify(f"WATCHDOG=1\nSTATUS={self.status}, heartbeat {self.seq}")
        if now >= self.next_check:
            self.next_check = now + self.settings["check_seconds"]
            self.decision = self.decision or self._check(now)
        for endpoint in self.endpoints:
            if now >= endpoint.next_at and self.decision is None:
                self.beat(endpoint, now)
        self.decision = self.decision or self._outage(now)

    def _next_due(self) -> float:
        return min([self.next_check] + [e.next_at for e in self.endpoints])

    def _check(self, now: float) -> Optional[Decision]:
        shutdown_at, grace = self._shutdown()
        body = sample(self.config, now=now, seq=self.seq, status=self.status, remaining=self._remaining(now))
        return self.policies.check(now, body, shutdown_at, grace, pool_state.load(self.config) or {})

    def _shutdown(self) -> tuple:
        values = mjf.read_features(mjf.machine_dir(self.config), keys=("shutdowntime", "grace_secs")).values
        shutdown = values.get("shutdowntime")
        return (float(shutdown) if shutdown is not None else None), float(values.get("grace_secs", 0))

    def _remaining(self, now: float) -> Optional[float]:
        ends = [self._shutdown()[0]]
        if self.settings["lifetime_seconds"]:
            ends.append(self.policies.boot_time + self.settings["lifetime_seconds"])
        known = [e for e in ends if e is not None]
        return round(min(known) - now, 1) if known else None

    # --- heartbeats -------------------------------------------------------------------------------

    def heartbeat_body(self, now: float, acks: Optional[List[int]] = None) -> Dict[str, Any]:
        self.seq += 1
        body = sample(self.config, now=now, seq=self.seq, status=self.status, remaining=self._remaining(now))
        if acks:
            body["acks"] = list(acks)
        return body

    def beat(self, endpoint: Endpoint, now: float) -> None:
        body = self.heartbeat_body(now, endpoint.acks)
        if endpoint.missed:
            body["missed"] = endpoint.summary()
        period = getattr(endpoint.plugin, "period", None) or self.settings["period_seconds"]
        try:
            answer = endpoint.plugin.send(body)
        except ManagerRefused as exc:
            log.error("%s refused heartbeat %d: %s", endpoint.name, body["seq"], exc.message)
            endpoint.next_at = now + self._jitter(period)
            return
        except (VmagentError, OSError) as exc:
            endpoint.failures += 1
            endpoint.missed.append(body)
            endpoint.missed_total += 1
            delay = min(period, 5.0 * 2 ** (endpoint.failures - 1))
            log.warning("%s unreachable (%d in a row), next try in %.0f s: %s", endpoint.name,
                        endpoint.failures, delay, getattr(exc, "message", exc))
            endpoint.next_at = now + self._jitter(delay)
            return
        if endpoint.missed:
            log.info("%s reachable again: %d missed heartbeats summarised", endpoint.name, endpoint.missed_total)
        endpoint.failures, endpoint.last_ok, endpoint.missed_total = 0, now, 0
        endpoint.missed.clear()
        endpoint.acks = []
        endpoint.next_at = now + self._jitter(period)
        for raw in answer if isinstance(answer, list) else []:
            self.obey(raw, endpoint)

    def _jitter(self, period: float) -> float:
        spread = self.settings["jitter_fraction"]
        return period * (1 + self.rng.uniform(-spread, spread))

    def _outage(self, now: float) -> Optional[Decision]:
        limit = self.settings["outage_halt_seconds"]
        if not limit or not self.endpoints:
            return None
        last = max([e.last_ok or self.started for e in self.endpoints])
        if now - last >= limit:
            return Decision("outage", f"no endpoint answered for {limit:g} s", 700)
        return None

    # --- instructions -----------------------------------------------------------------------------

    def obey(self, raw: Any, endpoint: Endpoint) -> None:
        """Carry out one instruction after validating it; anything else is refused and logged."""
        source = endpoint.name
        problems = schemas.problems("instruction", raw)
        if problems:
            log.error("refused an instruction from %s: %s", source,
                      "; ".join(f"{p or '(top)'}: {m}" for p, m in problems)[:500])
            return
        endpoint.acks.append(raw["id"])
        action, reason = raw["action"], raw.get("reason") or f"requested by {source.split('#')[0]}"
        log.info("instruction %d from %s: %s (%s)", raw["id"], source, action, reason)
        if action == "drain":
            self.drain(reason)
        elif action == "halt":
            self.decision = Decision("instruction", f"halt {reason}", 100)
        elif action == "shutdown_at":
            written = mjf.update_shutdowntime(self.config, float(raw["shutdown_at"]), clock=self.clock)
            log.info("shutdown time now %d", written)

    def drain(self, reason: str) -> None:
        write_atomic(pool_state.drain_path(self.config), reason + "\n", 0o644)
        write_atomic(host_path(self.config.root, "/var/lib/dirac_drain"), reason + "\n", 0o644)  # DIRAC pilots
        self.status = "draining"

    # --- halting ----------------------------------------------------------------------------------

    def halt(self, decision: Decision) -> None:
        """Drain, stop payloads (TERM, grace, KILL), final heartbeat, shutdown_message, halt action once."""
        log.warning("halting: %s [%s, vacuum code %d]", decision.reason, decision.policy, decision.vacuum_code)
        self.drain(f"halting: {decision.reason}")
        self.status = "halting"
        running = (pool_state.load(self.config) or {}).get("running", [])
        if running:
            how = stop_payloads(running, self.settings["payload_grace_seconds"], self.clock)
            log.warning("payloads stopped: %s", ", ".join(f"{k} {v}" for k, v in sorted(how.items())) or "none")
        write_atomic(os.path.join(self.config.path("paths.state_dir"), "shutdown_message"), decision.message, 0o644)
        now = self.clock.time()
        for endpoint in self.endpoints:
            for final in (lambda e=endpoint: e.plugin.send(self.heartbeat_body(now, e.acks)),
                          lambda e=endpoint: e.plugin.halting(decision)):
                try:
                    final()
                except (VmagentError, OSError) as exc:
                    log.warning("%s: final report not delivered: %s", endpoint.name, getattr(exc, "message", exc))
        sdnotify.notify(f"STOPPING=1\nSTATUS=halting: {decision.message}")
        self.halt_action(decision)
