"""Memory limits with cgroup v2: one group per payload, each with ``memory.max``, no swap, OOM-killed whole.

Where the payload groups live:
- as root: below ``<mount>/vmagent/<instance>``, a subtree beside systemd's slices that holds no
  process itself. The slot manager stays where it was started, so systemd can restart
  ``vmagent-slots.service`` while payloads run (a unit whose own group hands the memory controller
  to children cannot take a new process before systemd 254's ``DelegateSubgroup=``);
- otherwise: below the slot manager's own group when it is delegated to it (``Delegate=`` or a
  user session): it first moves itself into a ``supervisor`` leaf, since cgroup v2 allows no
  processes in a group that hands controllers to its children (started in that leaf already, as
  with systemd 254's ``DelegateSubgroup=supervisor``, it uses the leaf's parent).
Anything else (cgroup v1 or hybrid hierarchies, no memory controller, a shared group) makes
``setup`` raise ``CgroupUnavailable`` with the reason, and the slot manager uses ``RLIMIT_AS``.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Dict, List, Optional

from ..errors import CgroupUnavailable

log = logging.getLogger("vmagent.pool")

MOUNT = "/sys/fs/cgroup"
SUPERVISOR = "supervisor"


def _read(path: str) -> str:
    with open(path, encoding="ascii") as fh:
        return fh.read()


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(value)


def _hand_down_memory(group: str) -> None:
    """Enable the memory controller for ``group``'s children (once)."""
    control = os.path.join(group, "cgroup.subtree_control")
    if "memory" not in _read(control).split():
        _write(control, "+memory")


def own_group(proc_cgroup: str = "/proc/self/cgroup") -> Optional[str]:
    """This process's cgroup v2 path (``0::<path>``), or None on a v1-only system."""
    try:
        for line in _read(proc_cgroup).splitlines():
            if line.startswith("0::"):
                return line[3:].strip() or "/"
    except OSError:
        return None
    return None


class PayloadGroups:
    """Creates, reads and removes the payloads' groups below ``base`` (a directory of the hierarchy)."""

    def __init__(self, base: str) -> None:
        self.base = base

    @classmethod
    def setup(
        cls, instance: str = "local", mount: str = MOUNT, proc_cgroup: str = "/proc/self/cgroup"
    ) -> PayloadGroups:
        """Groups for payloads (see the module's text); raises ``CgroupUnavailable`` with the reason."""
        path = own_group(proc_cgroup)
        if path is None or not os.path.exists(os.path.join(mount, "cgroup.controllers")):
            raise CgroupUnavailable(f"no cgroup v2 hierarchy at {mount}")
        if (
            os.geteuid() == 0
            and "memory" in _read(os.path.join(mount, "cgroup.controllers")).split()
        ):
            try:
                return cls._top_level(mount, re.sub(r"[^A-Za-z0-9_.-]", "_", instance) or "local")
            except OSError as exc:
                log.debug("no payload groups beside systemd's slices: %s", exc)
        return cls._delegated(os.path.join(mount, path.lstrip("/")))

    @classmethod
    def _top_level(cls, mount: str, instance: str) -> PayloadGroups:
        parents = [mount, os.path.join(mount, "vmagent"), os.path.join(mount, "vmagent", instance)]
        for parent, child in zip(parents, parents[1:] + [None]):
            _hand_down_memory(parent)
            if child:
                os.makedirs(child, exist_ok=True)
        return cls(parents[-1])

    @classmethod
    def _delegated(cls, own: str) -> PayloadGroups:
        base = os.path.dirname(own) if os.path.basename(own) == SUPERVISOR else own
        if "memory" not in _read(os.path.join(base, "cgroup.controllers")).split():
            raise CgroupUnavailable(
                f"the memory controller is not available in {base}",
                hint="run the slot manager as root, or in a unit with Delegate=memory",
            )
        leaf = os.path.join(base, SUPERVISOR)
        try:
            os.makedirs(leaf, exist_ok=True)
            if own != leaf:
                _write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
            _hand_down_memory(base)
        except OSError as exc:
            try:  # leave things as they were
                _write(os.path.join(own, "cgroup.procs"), str(os.getpid()))
                if own != leaf:
                    os.rmdir(leaf)
            except OSError:
                pass
            raise CgroupUnavailable(
                f"cannot manage {base}: {exc.strerror or exc}",
                hint="other processes share the group, or it is not delegated: run the slot "
                "manager as root, or in a unit with Delegate=memory",
            ) from None
        return cls(base)

    def path(self, payload_id: str) -> str:
        return os.path.join(self.base, "payload-" + re.sub(r"[^A-Za-z0-9_.-]", "_", payload_id))

    def create(self, payload_id: str, memory_mb: Optional[int]) -> str:
        """A fresh group limited to ``memory_mb`` (None: unlimited; no swap; an OOM kills the whole payload)."""
        group = self.path(payload_id)
        os.makedirs(group, exist_ok=True)
        _write(
            os.path.join(group, "memory.max"), str(int(memory_mb) * 2**20) if memory_mb else "max"
        )
        for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
            if os.path.exists(os.path.join(group, name)):
                _write(os.path.join(group, name), value)
        return group

    def usage(self, payload_id: str) -> Dict[str, Optional[int]]:
        """``peak_bytes`` (kernel 5.19+), ``oom_kills`` and ``cpu_usec`` of a payload's group (None where
        unknown). The CPU time counts every process the payload ran, waited for or not, and is there for
        a payload a restarted slot manager adopted (not its child: no rusage)."""
        group = self.path(payload_id)
        found: Dict[str, Optional[int]] = {"peak_bytes": None, "oom_kills": None, "cpu_usec": None}
        try:
            found["peak_bytes"] = int(_read(os.path.join(group, "memory.peak")).strip())
        except (OSError, ValueError):
            pass
        try:  # cpu.stat's usage_usec is kept whether or not the cpu controller is enabled
            stats = dict(
                line.split() for line in _read(os.path.join(group, "cpu.stat")).splitlines()
            )
            found["cpu_usec"] = int(stats["usage_usec"])
        except (OSError, ValueError, KeyError):
            pass
        try:
            events = dict(
                line.split() for line in _read(os.path.join(group, "memory.events")).splitlines()
            )
            found["oom_kills"] = int(events.get("oom_kill", 0))
        except (OSError, ValueError):
            pass
        return found

    def members(self, payload_id: str) -> Optional[List[int]]:
        """The pids in a payload's group (``cgroup.procs``); None when it has no readable group."""
        try:
            return [
                int(line)
                for line in _read(os.path.join(self.path(payload_id), "cgroup.procs")).split()
            ]
        except (OSError, ValueError):
            return None

    def limit_mb(self, payload_id: str) -> Optional[int]:
        """A payload group's ``memory.max`` in MB; None when unlimited or unreadable (recovery's view)."""
        try:
            value = _read(os.path.join(self.path(payload_id), "memory.max")).strip()
            return int(value) // 2**20 if value != "max" else None
        except (OSError, ValueError):
            return None

    def remove(self, payload_id: str) -> None:
        """Kill what is left in the group (daemons a payload left behind), then remove it."""
        group = self.path(payload_id)
        if not os.path.isdir(group):
            return
        try:
            if os.path.exists(os.path.join(group, "cgroup.kill")):
                _write(os.path.join(group, "cgroup.kill"), "1")
            os.rmdir(group)
        except (
            OSError
        ) as exc:  # busy for a moment while killed processes exit: removed at the next start
            log.debug("cgroup %s not removed yet: %s", group, exc)

    def sweep(self, keep: set[str]) -> None:
        """Remove the groups of payloads that are no longer running (after a restart)."""
        wanted = {os.path.basename(self.path(p)) for p in keep}
        for name in os.listdir(self.base):
            if name.startswith("payload-") and name not in wanted:
                self.remove(name[len("payload-") :])


def enter(group: str) -> None:
    """Move the calling process into ``group`` (runs in the payload between fork and exec)."""
    _write(os.path.join(group, "cgroup.procs"), str(os.getpid()))
