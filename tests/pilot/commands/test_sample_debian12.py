"""The Debian 12 sample config: valid, and its dry run plans apt, not dnf, and changes nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
LSBLK = {"blockdevices": [
    {"name": "/dev/vda", "type": "disk", "size": 10737418240, "fstype": None, "label": None, "uuid": None,
     "serial": "root0", "mountpoint": "/", "pkname": None, "ro": False},
    {"name": "/dev/vdc", "type": "disk", "size": 53687091200, "fstype": None, "label": None, "uuid": None,
     "serial": "scratch01", "mountpoint": None, "pkname": None, "ro": False},
]}


def test_sample_configs_are_valid():
    """Both sample configs pass check-config with all eight default pipeline commands."""
    for name in ("el9", "debian12"):
        done = subprocess.run([sys.executable, "-m", "vmagent.cli", "check-config",
                               str(REPO / f"examples/configs/{name}.yaml")],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ok (8 pilot commands)" in done.stdout


def test_debian12_dry_run_plans_apt(tmp_path):
    """The Debian 12 dry run formats ext4, installs CVMFS with apt and writes nothing below the root."""
    root = tmp_path / "vm"
    (root / "etc/vmagent").mkdir(parents=True)
    shutil.copy(REPO / "tests/fixtures/os-release/debian-12", root / "etc/os-release")
    (root / "etc/vmagent/enrolment.token").write_text("t")
    (root / "etc/vmagent/enrolment.token").chmod(0o600)
    (root / "dev/disk/by-id").mkdir(parents=True)
    (root / "dev/disk/by-id/virtio-scratch01").symlink_to("/dev/vdc")
    doc = yaml.safe_load((REPO / "examples/configs/debian12.yaml").read_text())
    doc["paths"] = {"root": str(root)}
    doc["instance"]["id"] = "i-deb12"
    cfg = tmp_path / "debian12.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    before = sorted(str(p) for p in root.rglob("*"))
    done = subprocess.run([sys.executable, "-c", f"""
import sys
from pytest_subprocess import FakeProcess
with FakeProcess() as fp:
    fp.allow_unregistered(True)
    fp.register(["lsblk", fp.any()], stdout={json.dumps(LSBLK)!r})
    fp.register(["blkid", "-p", "-o", "export", "/dev/vdc"], returncode=2)
    fp.register(["blkid", fp.any()], stdout="")
    fp.register(["bash", "-c", fp.any()], stdout="")
    from vmagent.cli import main
    sys.exit(main(["-c", sys.argv[1], "pilot", "run", "--dry-run"]))
""", str(cfg)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    order = ["# check-node", "# setup-disks", "mkfs.ext4", "write /etc/fstab", "# install-cvmfs", "apt-get",
             "write /etc/cvmfs/default.local", "$ cvmfs_config probe belle.cern.ch", "# install-dirac",
             "DIRAC==8.0.50", "# configure-dirac", "dirac-configure", "# setup-mjf", "# launch"]
    positions = [out.find(item) for item in order]
    assert all(p >= 0 for p in positions), ([o for o, p in zip(order, positions) if p < 0], out)
    assert positions == sorted(positions)
    assert "dnf" not in out
    assert sorted(str(p) for p in root.rglob("*")) == before
