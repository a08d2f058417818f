"""Importing a DIRAC Pilot pilot.json as a vmagent configuration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vmagent import config as vm_config
from vmagent.errors import ConfigError
from vmagent.pilot.dirac_import import convert_file

FIXTURE = str(Path(__file__).parent / "fixtures/pilot.json")


def test_default_commands_map_and_report():
    """DIRAC's default command list maps onto vmagent's; RegisterPilot is reported as without equivalent."""
    text, report = convert_file(FIXTURE)
    config = vm_config.parse(text, "imported")
    assert [c.name for c in config.commands] == [
        "check-node",
        "install-dirac",
        "configure-dirac",
        "setup-mjf",
        "launch",
    ]
    install = config.commands[1].options
    assert (
        install["version"] == "v8.0.50"
        and install["cvmfs_locations"][0] == "/cvmfs/example.org/dirac"
    )
    assert config.commands[2].options["cs_servers"][1].startswith("dips://cs2")
    assert any(line.startswith("RegisterPilot: no vmagent equivalent") for line in report)


def test_vo_section_and_ce_type():
    """--vo takes the VO's Pilot section over the defaults; VO variants are mapped and reported."""
    text, report = convert_file(FIXTURE, vo="lhcb")
    config = vm_config.parse(text, "imported")
    assert config.commands[1].options["version"] == "v11.0.4"
    assert any("LHCbInstallDIRAC: a VO variant of InstallDIRAC" in line for line in report)
    assert any(line.startswith("LHCbAddVOTag: no vmagent equivalent") for line in report)
    boinc, _ = convert_file(FIXTURE, ce_type="BOINC")
    assert "RegisterPilot" not in boinc


def test_unknown_vo_is_a_clear_error():
    """An unknown VO names the VO sections the file has."""
    with pytest.raises(ConfigError) as refused:
        convert_file(FIXTURE, vo="atlas")
    assert "no section for VO 'atlas'; VO sections: lhcb" in refused.value.message


def test_cli_writes_a_checkable_config(tmp_path):
    """'vmagent pilot import-dirac' writes a file that check-config accepts, and prints the report."""
    out = tmp_path / "vmagent.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "vmagent", "pilot", "import-dirac", FIXTURE, "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "import-dirac: RegisterPilot" in done.stderr
    checked = subprocess.run(
        [sys.executable, "-m", "vmagent", "check-config", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
