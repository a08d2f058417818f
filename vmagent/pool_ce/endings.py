"""How running payloads end: reaped, held to their wall limit, stopped, reported.

A part of ``SlotManager`` (``slots.py``), kept apart for size: the methods use its allocator,
running table, source, learner, counts and cgroup groups.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any, Dict, Optional

from ..errors import VmagentError
from . import executor, state

log = logging.getLogger("vmagent.pool")


class Endings:
    """Mixin for ``SlotManager``: everything after a payload has started."""

    allocator: Any
    clock: Any
    config: Any
    counts: Dict[str, int]
    groups: Any
    learner: Any
    running: Dict[str, Dict[str, Any]]
    settings: Any
    source: Any
    stamps: Dict[str, Optional[float]]

    def reap(self) -> bool:
        changed = False
        for entry in list(self.running.values()):
            if entry.get("popen") is not None:
                try:
                    pid, status, usage = os.wait4(entry["pid"], os.WNOHANG)
                except ChildProcessError:
                    pid, status, usage = entry["pid"], 0, None
                    status = -1
                if pid == 0:
                    continue
                code = os.waitstatus_to_exitcode(status) if status >= 0 else executor.exit_code_file(entry["workdir"])
                cpu = (usage.ru_utime + usage.ru_stime) if usage else None
                rss = executor.payload_max_rss(usage.ru_maxrss * 1024 if usage else None, entry.get("spawn_rss"))
                self._finished_with(entry, code, cpu, rss)
                changed = True
            elif not executor.alive(entry["pid"], entry.get("create_time")):
                self._finished_with(entry, executor.exit_code_file(entry["workdir"]), None, None)
                changed = True
        return changed

    def _finished_with(self, entry: Dict[str, Any], code: Optional[int], cpu: Optional[float],
                       rss: Optional[int]) -> None:
        usage = self.groups.usage(entry["payload"]["id"]) if self.groups else {}
        if entry.get("stopped_because"):
            outcome, reason = "killed", entry["stopped_because"]
        elif usage.get("oom_kills"):
            outcome, reason = "failed", f"memory limit of {entry['memory_mb']} MB exceeded (killed by the kernel)"
        elif code is None:
            outcome = "killed" if self.allocator.draining else "lost"
            reason = "stopped while draining" if outcome == "killed" else "vanished without an exit code"
        else:
            outcome, reason = ("done", None) if code == 0 else ("failed", f"exit code {code}")
        signal_number = -code if code is not None and code < 0 else None
        if usage.get("cpu_usec") is not None:
            cpu = usage["cpu_usec"] / 1e6
        self.finish_entry(entry, outcome, code if code is None or code >= 0 else None, signal_number,
                          cpu=cpu, rss=usage.get("peak_bytes") or rss, reason=reason)
        if self.groups:
            self.groups.remove(entry["payload"]["id"])
        self.allocator.release(entry["payload"]["id"])
        del self.running[entry["payload"]["id"]]

    def finish_entry(self, entry: Dict[str, Any], outcome: str, code: Optional[int], signal_number: Optional[int],
                     *, cpu: Optional[float] = None, rss: Optional[int] = None, reason: Optional[str] = None) -> None:
        now = self.clock.time()
        payload = entry["payload"]
        wall = max(0.0, now - entry["started_at"])
        result = {"id": payload["id"], "outcome": outcome, "exit_code": code, "signal": signal_number,
                  "cores": entry["cores"], "memory_mb": entry["memory_mb"], "started_at": entry["started_at"],
                  "finished_at": now, "wall_seconds": round(wall, 3), "cpu_seconds": cpu, "max_rss_bytes": rss,
                  "output": entry["workdir"], "reason": reason}
        if outcome == "done":
            self.learner.observe(payload["kind"], payload["wall_estimate_seconds"], wall)
        self.counts[outcome] += 1
        self.stamps["last_finished_at"] = now
        state.append_result(self.config, result)
        try:
            self.source.report(result)
        except VmagentError as exc:
            log.error("result of %s not reported: %s (kept in %s)", payload["id"], exc.message,
                      state.results_path(self.config))
        log.info("%s %s after %.1f s%s", payload["id"], outcome, wall, f" ({reason})" if reason else "")

    def enforce_limits(self) -> bool:
        now = self.clock.time()
        for entry in self.running.values():
            if entry.get("kill_at") and now >= entry["kill_at"]:
                executor.signal_group(entry["pgid"], signal.SIGKILL)
                entry["kill_at"] = None
            elif entry.get("deadline") and now >= entry["deadline"] and not entry.get("stopped_because"):
                self._terminate(entry, f"wall limit of {entry['payload']['wall_limit_seconds']:g} s reached")
        return False

    def stop_all(self) -> bool:
        for entry in self.running.values():
            if not entry.get("stopped_because"):
                self._terminate(entry, "slot manager stopped")
        self.enforce_limits()
        return False

    def _terminate(self, entry: Dict[str, Any], reason: str) -> None:
        entry["stopped_because"] = reason
        entry["kill_at"] = self.clock.time() + self.settings["wall_grace_seconds"]
        entry["deadline"] = None
        executor.signal_group(entry["pgid"], signal.SIGTERM)
        log.warning("stopping %s: %s", entry["payload"]["id"], reason)
