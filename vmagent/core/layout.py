"""Where things live on the VM's disk: every path that more than one part reads or writes.

Paths hang off the configured ``paths.state_dir`` and ``paths.run_dir`` (below the
configuration's root in tests); docs/contracts.md lists who writes and who reads each.
"""

from __future__ import annotations

import os

from ..config import Config, host_path

DIRAC_DRAIN = "/var/lib/dirac_drain"  # what DIRAC pilots look for to stop matching jobs


def state_dir(config: Config) -> str:
    return config.path("paths.state_dir")


def pool_dir(config: Config) -> str:
    """The slot manager's own directory (state, results, pid files, lock)."""
    return os.path.join(state_dir(config), "pool")


def pool_state(config: Config) -> str:
    """The slot manager's state document (written by it alone, read by the monitor and status)."""
    return os.path.join(pool_dir(config), "state.json")


def pool_results(config: Config) -> str:
    """Every payload result, one JSON object a line."""
    return os.path.join(pool_dir(config), "results.jsonl")


def pool_payloads(config: Config) -> str:
    """One ``<id>.json`` per payload started and not yet recorded (out of the payloads' reach)."""
    return os.path.join(pool_dir(config), "payloads")


def pool_lock(config: Config) -> str:
    """Held (flock) by the one running slot manager."""
    return os.path.join(pool_dir(config), "lock")


def drain_request(config: Config) -> str:
    """Exists while a drain is requested; its content is the reason."""
    return os.path.join(config.path("paths.run_dir"), "drain")


def stop_request(config: Config) -> str:
    """Exists while the monitor asks the slot manager to stop every payload; content: the reason."""
    return os.path.join(config.path("paths.run_dir"), "stop")


def dirac_drain(config: Config) -> str:
    return host_path(config.root, DIRAC_DRAIN)


def state_file(config: Config, name: str) -> str:
    """A file of the VM's own directly below ``paths.state_dir`` (the manager credential, its lock)."""
    return os.path.join(state_dir(config), name)


def manager_credentials(config: Config) -> str:
    """This VM's credential at the manager, mode 0600."""
    return state_file(config, "manager.json")


def manager_lock(config: Config) -> str:
    return state_file(config, "manager.lock")


def vm_path(config: Config, path: str) -> str:
    """``path`` as configured for inside the VM, below the configuration's root when absolute."""
    return host_path(config.root, path) if os.path.isabs(path) else path
