"""The systemd units vmagent ships: sandboxed as far as each one's job allows, and still able to do it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[1] / "vmagent/monitor/units"
# the exposure each unit may have at most; 9.6 UNSAFE for all three before they were sandboxed
LIMITS = {
    "vmagent-monitor.service": 3.0,
    "vmagent-slots.service": 6.5,
    "vmagent-pilot.service": 8.0,
}


def exposure(unit: Path) -> float:
    """The overall exposure 'systemd-analyze security --offline=true' gives the unit file."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    done = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if "--offline" in done.stderr:
        pytest.skip(f"this systemd-analyze has no --offline: {done.stderr.strip()}")
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)
    assert found, done.stdout + done.stderr
    return float(found.group(1))


def service(unit: str) -> dict:
    """The [Service] settings of a unit, a repeated key's values joined by spaces."""
    values: dict = {}
    for line in (UNITS / unit).read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", "[")):
            values[key] = f"{values[key]} {value}" if key in values else value
    return values


@pytest.mark.parametrize("unit", sorted(LIMITS))
def test_exposure_is_at_most_the_units_limit(unit):
    """Each unit's exposure score is at or below the level chosen for its job."""
    assert exposure(UNITS / unit) <= LIMITS[unit]


@pytest.mark.parametrize("unit", sorted(LIMITS))
def test_remaining_exposure_is_explained(unit):
    """Each unit file says in a comment what stays open and why."""
    text = (UNITS / unit).read_text()
    assert "# Sandbox ('systemd-analyze security': 9.6 UNSAFE without it)" in text


def test_monitor_keeps_what_halting_needs():
    """The monitor may power the VM off through systemctl but signal no payload (the slot manager does)."""
    settings = service("vmagent-monitor.service")
    caps = settings["CapabilityBoundingSet"].split()
    assert {"CAP_SYS_BOOT", "CAP_DAC_READ_SEARCH"} <= set(caps)
    assert "CAP_KILL" not in caps
    assert "AF_UNIX" in settings["RestrictAddressFamilies"]
    assert "User" not in settings and "PrivateTmp" not in settings


def test_slot_manager_keeps_what_payloads_need():
    """The slot manager can still make payload groups and change user; payloads keep /tmp, namespaces, setuid."""
    settings = service("vmagent-slots.service")
    for absent in (
        "ProtectControlGroups",
        "PrivateTmp",
        "NoNewPrivileges",
        "RestrictNamespaces",
        "PrivateDevices",
        "ProtectHome",
        "ProtectClock",
    ):
        assert absent not in settings, absent
    assert settings["ProtectSystem"] == "full" and settings["Delegate"] == "memory"
    denied = settings["CapabilityBoundingSet"].replace("~", "").split()
    assert not {"CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_SYS_ADMIN"} & set(denied)


def test_pilot_keeps_what_preparing_the_node_needs():
    """The pipeline can still install, load modules, make filesystems, mount and add swap."""
    settings = service("vmagent-pilot.service")
    for absent in (
        "ProtectSystem",
        "ProtectKernelModules",
        "PrivateDevices",
        "NoNewPrivileges",
        "RestrictSUIDSGID",
        "ProtectClock",
        "PrivateTmp",
    ):
        assert absent not in settings, absent
    assert (
        "@swap" not in settings["SystemCallFilter"] and "@mount" not in settings["SystemCallFilter"]
    )
