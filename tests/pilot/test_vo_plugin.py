"""A VO's own package, pip-installed for real, extends and replaces pilot commands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def pip_install_target(source: Path, target: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )


@pytest.mark.slow
def test_vo_plugin_is_discovered_and_replaces_a_builtin(tmp_path):
    """The example VO package, once installed, is listed and its command runs in place of install-dirac."""
    target = tmp_path / "site"
    pip_install_target(REPO / "examples/vo-plugin", target)
    env = {**os.environ, "PYTHONPATH": f"{target}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    listed = subprocess.run(
        [sys.executable, "-m", "vmagent", "pilot", "commands"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    line = next(line for line in listed.stdout.splitlines() if line.startswith("example-vo-dirac"))
    assert "vmagent-vo-example 1.0.0" in line
    config = yaml.safe_load((REPO / "examples/vo-plugin/vmagent.yaml").read_text())
    config["paths"] = {"root": str(tmp_path / "vm")}
    config["instance"]["id"] = "i-vo"
    cfg = tmp_path / "vmagent.yaml"
    cfg.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [sys.executable, "-m", "vmagent", "-c", str(cfg), "pilot", "run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    status = yaml.safe_load((tmp_path / "vm/var/lib/vmagent/pilot-status.json").read_text())
    step = next(s for s in status["steps"] if s["name"] == "example-vo-dirac")
    assert step["outcome"] == "ok" and step["facts"]["dirac_version"] == "v11r2"
    exported = (tmp_path / "vm/var/lib/vmagent/pilot.env").read_text()
    assert "DIRAC_ENV_SCRIPT=/opt/vo-software/dirac-v11r2/bashrc" in exported
    without = subprocess.run(
        [sys.executable, "-m", "vmagent", "check-config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert without.returncode == 2 and "no plugin 'example-vo-dirac'" in without.stderr


@pytest.mark.slow
def test_fresh_venv_install(tmp_path):
    """In a fresh venv, 'pip install .' gives a working vmagent command: help, commands, check-config."""
    source = tmp_path / "src"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(".git", ".venv*", "*.egg-info", "__pycache__", "build"),
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", str(source)],
        check=True,
        capture_output=True,
        timeout=900,
    )
    vmagent = str(venv / "bin/vmagent")
    assert subprocess.run([vmagent, "--help"], capture_output=True, timeout=60).returncode == 0
    listed = subprocess.run(
        [vmagent, "pilot", "commands"], capture_output=True, text=True, timeout=60
    )
    assert "install-cvmfs" in listed.stdout and "BROKEN" not in listed.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("pilot: {commands: [nope]}\n")
    checked = subprocess.run(
        [vmagent, "check-config", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert (
        checked.returncode == 2
        and f"{bad}: pilot.commands.0.name: no plugin 'nope'" in checked.stderr
    )
    site = REPO / "examples/sites/cern-openstack.yaml"
    token = tmp_path / "token"
    token.write_text("t")
    rendered = subprocess.run(
        [
            vmagent,
            "userdata",
            "render",
            "--site",
            str(site),
            "--image",
            "el9-large",
            "--token-file",
            str(token),
        ],
        capture_output=True,
        timeout=60,
    )
    assert rendered.returncode == 0 and b"Content-Type: text/cloud-config" in rendered.stdout
