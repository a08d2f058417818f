"""Fixtures for the node set-up commands: a VM root with a chosen /etc/os-release."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vmagent.testing import make_config

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures/os-release"


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
