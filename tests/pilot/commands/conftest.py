"""Fixtures for the node set-up commands: a VM root with a chosen /etc/os-release, a sample's dry run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vmagent.testing import make_config

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests/fixtures/os-release"
DRY_RUN = """
import sys
from pytest_subprocess import FakeProcess
with FakeProcess() as fp:
    fp.allow_unregistered(True)
    fp.register(["lsblk", fp.any()], stdout=sys.argv[2])
    fp.register(["blkid", "-p", "-o", "export", "/dev/vdc"], returncode=2)
    fp.register(["blkid", fp.any()], stdout="")
    fp.register(["bash", "-c", fp.any()], stdout="")
    from vmagent.cli import main
    sys.exit(main(["-c", sys.argv[1], "pilot", "run", "--dry-run"]))
"""


@pytest.fixture
def vm_root(tmp_path):
    """Return a function making a VM root whose /etc/os-release is the named fixture, and its config."""

    def make(os_name: str, **sections):
        root = tmp_path / os_name
        (root / "etc").mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / os_name, root / "etc/os-release")
        (root / "scratch").mkdir(exist_ok=True)
        return root, make_config(root, [], **sections)

    return make


@pytest.fixture
def sample_dry_run(tmp_path):
    """Return a function running ``pilot run --dry-run`` of examples/configs/<name>.yaml on a VM root.

    The root has the named os-release, an enrolment token and the scratch disk's by-id link; lsblk
    answers ``lsblk`` and /dev/vdc is blank. Answers the plan printed; checks that the dry run exits
    0 and changes nothing below the root.
    """

    def run(name: str, os_name: str, instance_id: str, lsblk: dict) -> str:
        root = tmp_path / "vm"
        (root / "etc/vmagent").mkdir(parents=True)
        shutil.copy(FIXTURES / os_name, root / "etc/os-release")
        (root / "etc/vmagent/enrolment.token").write_text("t")
        (root / "etc/vmagent/enrolment.token").chmod(0o600)
        (root / "dev/disk/by-id").mkdir(parents=True)
        (root / "dev/disk/by-id/virtio-scratch01").symlink_to("/dev/vdc")
        doc = yaml.safe_load((REPO / f"examples/configs/{name}.yaml").read_text())
        doc["paths"] = {"root": str(root)}
        doc["instance"]["id"] = instance_id
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump(doc))
        before = sorted(str(p) for p in root.rglob("*"))
        done = subprocess.run(
            [sys.executable, "-c", DRY_RUN, str(cfg), json.dumps(lsblk)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert sorted(str(p) for p in root.rglob("*")) == before
        return done.stdout

    return run
