"""How many cores this VM hands out to payloads: the one count every part reports.

The slot manager packs payloads onto this many cores, the VM registers it with the manager,
Machine/Job Features publish it (``total_cpu``) and DIRAC pilots are configured with it
(``NumberOfProcessors``): ``slots.cores`` when set, else the CPUs this process may run on.
"""

from __future__ import annotations

import os

from ..config import Config


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: a container's or cgroup's share)."""
    return len(os.sched_getaffinity(0)) or 1


def cores(config: Config) -> int:
    """``slots.cores``, else the usable CPUs."""
    return int(config.section("slots")["cores"] or usable_cpus())


def pilot_cores(config: Config) -> int:
    """The cores one DIRAC pilot is given: ``slots.pilot.cores_per_pilot`` when the slot manager
    runs pilots (``mode: pilots`` or ``source: pilots``), else the VM's whole count (one pilot
    whose inner pool fills it)."""
    slots = config.section("slots")
    if slots["mode"] == "pilots" or slots["source"] == "pilots":
        return int(slots["pilot"]["cores_per_pilot"])
    return cores(config)
