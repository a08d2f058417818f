"""The Debian 12 sample config: valid, and its dry run plans apt, not dnf, and changes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
LSBLK = {
    "blockdevices": [
        {
            "name": "/dev/vda",
            "type": "disk",
            "size": 10737418240,
            "fstype": None,
            "label": None,
            "uuid": None,
            "serial": "root0",
            "mountpoint": "/",
            "pkname": None,
            "ro": False,
        },
        {
            "name": "/dev/vdc",
            "type": "disk",
            "size": 53687091200,
            "fstype": None,
            "label": None,
            "uuid": None,
            "serial": "scratch01",
            "mountpoint": None,
            "pkname": None,
            "ro": False,
        },
    ]
}


def test_sample_configs_are_valid():
    """Both sample configs pass check-config with all eight default pipeline commands."""
    for name in ("el9", "debian12"):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "vmagent.cli",
                "check-config",
                str(REPO / f"examples/configs/{name}.yaml"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ok (8 pilot commands)" in done.stdout


def test_debian12_dry_run_plans_apt(sample_dry_run):
    """The Debian 12 dry run formats ext4, installs CVMFS with apt and writes nothing below the root."""
    out = sample_dry_run("debian12", "debian-12", "i-deb12", LSBLK)
    order = [
        "# check-node",
        "# setup-disks",
        "mkfs.ext4",
        "write /etc/fstab",
        "# install-cvmfs",
        "apt-get",
        "write /etc/cvmfs/default.local",
        "$ cvmfs_config probe belle.cern.ch",
        "# install-dirac",
        "DIRAC[pilot]==8.0.50",
        "# configure-dirac",
        "dirac-configure",
        "# setup-mjf",
        "# launch",
    ]
    positions = [out.find(item) for item in order]
    assert all(p >= 0 for p in positions), ([o for o, p in zip(order, positions) if p < 0], out)
    assert positions == sorted(positions)
    assert "dnf" not in out
