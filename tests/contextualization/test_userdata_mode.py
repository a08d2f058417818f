"""User data holds the enrolment token: the file it is written to is the operator's alone."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "examples/sites/cern-openstack.yaml"


def render_to(out: Path, token: Path) -> subprocess.CompletedProcess:
    argv = [
        sys.executable,
        "-c",
        "import os, sys; os.umask(0); from vmagent.cli import main; sys.exit(main())",
        "userdata",
        "render",
        "--site",
        str(SITE),
        "--image",
        "el9-large",
        "--format",
        "cloud-config",
        "--token-file",
        str(token),
        "-o",
        str(out),
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def test_user_data_file_is_0600_even_with_umask_0(tmp_path):
    """'userdata render -o FILE' writes FILE with mode 0600 under umask 0, and says so on stderr."""
    token = tmp_path / "token"
    token.write_text("enrol-secret-token\n")
    out = tmp_path / "user-data"
    done = render_to(out, token)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert b"enrol-secret-token" in out.read_bytes()
    assert f"wrote {out} (mode 0600: it holds the enrolment token)" in done.stderr, done.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_existing_readable_file_is_replaced_not_rewritten(tmp_path):
    """An existing 0644 file is replaced by a new 0600 one; the old file never held the token."""
    token = tmp_path / "token"
    token.write_text("enrol-secret-token\n")
    out = tmp_path / "user-data"
    out.write_text("old user data\n")
    os.chmod(out, 0o644)
    with open(out, "rb") as reader:  # what someone who opened the readable file earlier still sees
        done = render_to(out, token)
        assert done.returncode == 0, done.stderr
        assert reader.read() == b"old user data\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert b"enrol-secret-token" in out.read_bytes()


def test_help_says_the_file_is_private():
    """--help of 'userdata render' tells that -o writes a mode 0600 file."""
    done = subprocess.run(
        [sys.executable, "-m", "vmagent", "userdata", "render", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "0600" in done.stdout, done.stdout
