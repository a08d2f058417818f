"""The Packer templates, checked by Debian's packer."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

PACKER_DIR = Path(__file__).resolve().parents[2] / "images/packer"
pytestmark = pytest.mark.skipif(
    shutil.which("packer") is None, reason="packer is not installed (apt-get install packer)"
)
ENV = {**os.environ, "CHECKPOINT_DISABLE": "1"}
VARS = ["-var", "aws_source_ami=ami-0123456789abcdef0"]


def copy_without_plugins(tmp_path):
    """packer 1.6.6 does not know required_plugins: validate a copy without plugins.pkr.hcl."""
    target = tmp_path / "packer"
    shutil.copytree(PACKER_DIR, target, ignore=shutil.ignore_patterns("plugins.pkr.hcl"))
    return target


def test_templates_are_formatted():
    """'packer fmt -check' finds nothing to change."""
    done = subprocess.run(
        ["packer", "fmt", "-check", str(PACKER_DIR)], capture_output=True, text=True, env=ENV
    )
    assert done.returncode == 0, done.stdout


def test_templates_validate(tmp_path):
    """'packer validate' accepts the qemu and amazon-ebs sources, and the syntax of all three."""
    # The openstack builder authenticates against Keystone while validating, which needs a cloud:
    # it is checked for syntax only here.
    where = copy_without_plugins(tmp_path)
    done = subprocess.run(
        ["packer", "validate", "-only=qemu.vmagent,amazon-ebs.vmagent", *VARS, "."],
        cwd=where,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    syntax = subprocess.run(
        ["packer", "validate", "-syntax-only", "."],
        cwd=where,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr


def test_unknown_os_is_refused(tmp_path):
    """The os variable's validation names what is allowed."""
    done = subprocess.run(
        ["packer", "validate", "-only=qemu.vmagent", "-var", "os=el7", "."],
        cwd=copy_without_plugins(tmp_path),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert done.returncode != 0 and "must be one of el8, el9" in done.stdout + done.stderr
