"""How running payloads end: reaped, held to their wall limit, stopped, reported; taken back after a restart.

A part of ``SlotManager`` (``slots.py``), kept apart for size: the methods use its allocator,
running table, source, learner, counts and cgroup groups.

Results survive a full disk: each is kept in memory until ``results.jsonl`` and the source have
taken it, retried at every tick, each kind of failing write logged once.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
from typing import Any, Callable, Dict, List, Optional, Set

from .. import schemas
from ..config import apply_defaults
from ..core import layout
from ..errors import VmagentError
from . import executor, state
from .allocator import AllocationError

log = logging.getLogger("vmagent.pool")


class Endings:
    """Mixin for ``SlotManager``: everything after a payload has started."""

    allocator: Any
    clock: Any
    config: Any
    counts: Dict[str, int]
    groups: Any
    held: Dict[str, Dict[str, Any]]
    learner: Any
    running: Dict[str, Dict[str, Any]]
    settings: Any
    source: Any
    stamps: Dict[str, Optional[float]]
    scratch: str
    unwritten: List[Dict[str, Any]]  # results not in results.jsonl yet (disk full)
    unreported: List[Dict[str, Any]]  # results the source has not taken yet (disk full)
    full: Set[str]  # kinds of write failing for a full disk, each logged once

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
                code = (
                    os.waitstatus_to_exitcode(status)
                    if status >= 0
                    else executor.exit_code_file(entry["workdir"])
                )
                cpu = (usage.ru_utime + usage.ru_stime) if usage else None
                rss = executor.payload_max_rss(
                    usage.ru_maxrss * 1024 if usage else None, entry.get("spawn_rss")
                )
                self._finished_with(entry, code, cpu, rss)
                changed = True
            elif not executor.alive(entry["pid"], entry.get("create_time")):
                self._finished_with(entry, executor.exit_code_file(entry["workdir"]), None, None)
                changed = True
        return changed

    def _finished_with(
        self, entry: Dict[str, Any], code: Optional[int], cpu: Optional[float], rss: Optional[int]
    ) -> None:
        usage = self.groups.usage(entry["payload"]["id"]) if self.groups else {}
        if entry.get("stopped_because"):
            outcome, reason = "killed", entry["stopped_because"]
        elif usage.get("oom_kills"):
            limit = (
                f"of {entry['memory_mb']} MB " if entry["memory_mb"] else "(size not recovered) "
            )
            outcome, reason = "failed", f"memory limit {limit}exceeded (killed by the kernel)"
        elif code is None and entry.get("state_lost"):
            outcome, reason = "lost", "state lost"
        elif code is None:
            outcome = "killed" if self.allocator.draining else "lost"
            reason = (
                "stopped while draining" if outcome == "killed" else "vanished without an exit code"
            )
        else:
            outcome, reason = ("done", None) if code == 0 else ("failed", f"exit code {code}")
        signal_number = -code if code is not None and code < 0 else None
        if usage.get("cpu_usec") is not None:
            cpu = usage["cpu_usec"] / 1e6
        self.finish_entry(
            entry,
            outcome,
            code if code is None or code >= 0 else None,
            signal_number,
            cpu=cpu,
            rss=usage.get("peak_bytes") or rss,
            reason=reason,
        )
        payload_id = entry["payload"]["id"]
        if self.groups:
            self.groups.remove(payload_id)
        if payload_id in self.allocator.held():
            self.allocator.release(payload_id)
        self.running.pop(payload_id, None)

    def finish_entry(
        self,
        entry: Dict[str, Any],
        outcome: str,
        code: Optional[int],
        signal_number: Optional[int],
        *,
        cpu: Optional[float] = None,
        rss: Optional[int] = None,
        reason: Optional[str] = None,
    ) -> None:
        now = self.clock.time()
        payload = entry["payload"]
        wall = max(0.0, now - entry["started_at"])
        result = {
            "id": payload["id"],
            "outcome": outcome,
            "exit_code": code,
            "signal": signal_number,
            "cores": entry["cores"],
            "memory_mb": entry["memory_mb"],
            "started_at": entry["started_at"],
            "finished_at": now,
            "wall_seconds": round(wall, 3),
            "cpu_seconds": cpu,
            "max_rss_bytes": rss,
            "output": entry["workdir"],
            "reason": reason,
        }
        if outcome == "done":
            self.learner.observe(payload["kind"], payload["wall_estimate_seconds"], wall)
        self.counts[outcome] += 1
        self.stamps["last_finished_at"] = now
        self.unwritten.append(result)
        self.unreported.append(result)
        self.flush_results()
        log.info(
            "%s %s after %.1f s%s", payload["id"], outcome, wall, f" ({reason})" if reason else ""
        )

    def enforce_limits(self) -> bool:
        now = self.clock.time()
        for entry in self.running.values():
            if entry.get("kill_at") and now >= entry["kill_at"]:
                executor.signal_group(entry["pgid"], signal.SIGKILL)
                entry["kill_at"] = None
            elif (
                entry.get("deadline")
                and now >= entry["deadline"]
                and not entry.get("stopped_because")
            ):
                self._terminate(
                    entry, f"wall limit of {entry['payload']['wall_limit_seconds']:g} s reached"
                )
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

    # --- writes that a full disk postpones ---------------------------------------------------------

    def disk_write(self, kind: str, write: Callable[[], Any]) -> bool:
        """Run ``write``; False (logged once per kind) when the disk is full, other errors raised."""
        try:
            write()
        except OSError as exc:
            if not state.disk_full(exc):
                raise
            self.note_disk_full(kind, exc)
            return False
        if kind in self.full:
            self.full.discard(kind)
            log.info("disk space is back: the %s is written again", kind)
        return True

    def note_disk_full(self, kind: str, exc: OSError) -> None:
        if kind not in self.full:
            self.full.add(kind)
            log.error(
                "disk full: cannot write the %s (%s); payloads keep running, retrying at every tick",
                kind,
                exc.strerror or exc,
            )

    def flush_results(self) -> None:
        """Write what results.jsonl and the source have not taken yet, in order, until the disk is full."""
        while self.unwritten:
            result = self.unwritten[0]
            if not self.disk_write(
                "results", functools.partial(state.append_result, self.config, result)
            ):
                break
            self.unwritten.pop(0)
            state.remove_pidfile(self.config, result["id"])
        while self.unreported:
            result = self.unreported[0]
            try:
                if not self.disk_write("report", functools.partial(self.source.report, result)):
                    break
            except VmagentError as exc:
                log.error(
                    "result of %s not reported: %s (kept in %s)",
                    result["id"],
                    exc.message,
                    layout.pool_results(self.config),
                )
            self.unreported.pop(0)

    def results_left(self) -> List[Dict[str, Any]]:
        """Results not written or not reported yet (logged in full when the slot manager leaves)."""
        left = {id(r): r for r in self.unwritten + self.unreported}
        return list(left.values())

    # --- after a restart ---------------------------------------------------------------------------

    def recover(self) -> None:
        """Re-adopt what a previous slot manager left running; report what finished or vanished.

        The state file names the running payloads; pid files and work directories find those it does
        not (a bad state file, or a stop between starting a payload and saving the state)."""
        previous, problems = state.read(self.config)
        if problems:
            kept = state.set_aside(self.config, self.clock.time())
            log.error(
                "%s: %s; %s; running payloads are recovered from pid files and work directories",
                layout.pool_state(self.config),
                "; ".join(problems),
                f"kept as {kept}" if kept else "could not be kept aside",
            )
        previous = previous or {}
        self.counts.update(
            {k: v for k, v in previous.get("counts", {}).items() if k in self.counts}
        )
        for payload in previous.get("held", []):
            self.held[payload["id"]] = payload
        for entry in previous.get("running", []):
            if entry["id"] not in self.running:
                self._take_back(entry, "")
        self._recover_from_disk()

    def _recover_from_disk(self) -> None:
        recorded = state.recorded_ids(self.config)
        started = _names(layout.pool_payloads(self.config), ".json")
        for payload_id in started & recorded:
            state.remove_pidfile(self.config, payload_id)  # recorded, then stopped before tidying
        found = (started | _names(os.path.join(self.scratch, "payloads"), "")) - recorded
        found -= set(self.running) | set(
            self.held
        )  # held: claimed, not started (a full disk stopped it)
        for payload_id in sorted(found):
            entry = state.read_pidfile(self.config, payload_id)
            if entry is None:
                entry = self._stranger(payload_id)
            entry["state_lost"] = True  # reported "lost: state lost" if gone without an exit code
            self._take_back(
                entry, " from its pid file" if entry.get("slots") else " from its work directory"
            )

    def _take_back(self, entry: Dict[str, Any], how: str) -> None:
        entry["popen"] = None
        payload_id = entry["id"]
        if not entry.get("cpus_unknown"):
            try:
                self.allocator.adopt(payload_id, entry["slots"], entry["memory_mb"])
            except AllocationError as exc:
                log.error("%s: %s", payload_id, exc.message)
                entry["cpus_unknown"] = True
        self.running[payload_id] = entry
        if not entry["pid"] or not executor.alive(entry["pid"], entry.get("create_time")):
            self._finished_with(entry, executor.exit_code_file(entry["workdir"]), None, None)
        elif entry.get("cpus_unknown"):
            log.warning(
                "re-adopted %s (pid %d)%s, CPUs unknown: starting nothing new until it ends",
                payload_id,
                entry["pid"],
                how,
            )
        else:
            entry.pop("state_lost", None)
            log.info("re-adopted %s (pid %d)%s", payload_id, entry["pid"], how)

    def _stranger(self, payload_id: str) -> Dict[str, Any]:
        """A running entry for a payload known only by its work directory (and maybe a process)."""
        workdir = os.path.join(self.scratch, "payloads", payload_id)
        members = self.groups.members(payload_id) if self.groups else None
        memory_mb = (self.groups.limit_mb(payload_id) if self.groups else None) or 0
        found = executor.process_in(workdir, members) or {"pid": 0, "pgid": 0, "create_time": None}
        payload = {"id": payload_id, "command": ["(unknown)"]}
        apply_defaults(schemas.get("payload"), payload)
        try:
            started = os.stat(workdir).st_mtime
        except OSError:
            started = self.clock.time()
        return {
            "id": payload_id,
            "payload": payload,
            "cores": self.allocator.total_cores,
            "slots": [],
            "cpus": [],
            "memory_mb": memory_mb,
            "started_at": started,
            "estimated_end": self.clock.time(),
            "workdir": workdir,
            "deadline": None,
            "cpus_unknown": True,
            **found,
        }

    def cpus_unknown(self) -> bool:
        """A payload runs whose CPUs are not known: every core may be busy."""
        return any(entry.get("cpus_unknown") for entry in self.running.values())


def _names(directory: str, suffix: str) -> Set[str]:
    """Entries of ``directory`` ending in ``suffix`` (stripped), hidden ones skipped."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return set()
    return {
        n[: len(n) - len(suffix)] for n in names if n.endswith(suffix) and not n.startswith(".")
    }
