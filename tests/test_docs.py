"""Documentation generated from the schema stays in step with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_configuration_reference_is_current():
    """docs/configuration.md is what scripts/config_reference.py generates from the schema now."""
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts/config_reference.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
