"""``vmagent manager enrol`` keeps its secret: -o writes the token 0600, a redirected stdout is tightened."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "vmagent", "manager"]


@pytest.fixture(scope="module")
def served(start):
    """One plain-HTTP manager for the module."""
    return start("sqlite", tls=False)


def _enrol(served, *args, **kwargs):
    return subprocess.run(
        CLI + ["enrol", "--state-dir", served.state_dir, "--vo", "lhcb", *args],
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=60,
        **kwargs,
    )


def _registers(served, token):
    """The token registers a VM (so it is the real token, whole)."""
    answer = served.client(token).register(
        instance_id="i-cli", hostname="h", ip="10.0.0.1", total_cores=1, total_memory_mb=1
    )
    return answer["vm_id"].startswith("vm-")


def test_output_option_writes_the_token_0600(served, tmp_path):
    """-o FILE writes only the token, mode 0600, and says where on stderr; stdout stays empty."""
    target = tmp_path / "token"
    done = _enrol(served, "-o", str(target), capture_output=True)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert done.stdout == "" and str(target) in done.stderr
    assert _registers(served, target.read_text().strip())


def test_output_option_replaces_a_readable_file_with_a_private_one(served, tmp_path):
    """An existing 0644 file named by -o is replaced by a 0600 one, never rewritten in place."""
    target = tmp_path / "token"
    target.write_text("old\n")
    os.chmod(target, 0o644)
    before = os.stat(target).st_ino
    done = _enrol(served, "--output", str(target), capture_output=True)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600 and os.stat(target).st_ino != before
    assert target.read_text().startswith("vme_")


def test_redirected_stdout_file_is_made_private(served, tmp_path):
    """``enrol > token`` (a 0644 file of ours) ends 0600, with a note on stderr."""
    target = tmp_path / "token"
    with open(target, "w") as out:
        os.chmod(target, 0o644)
        done = _enrol(served, stdout=out, stderr=subprocess.PIPE)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert "readable by its owner only" in done.stderr
    assert _registers(served, target.read_text().strip())


def test_piped_stdout_is_left_alone(served):
    """A pipe is not a file: the token is printed and nothing is said about permissions."""
    done = _enrol(served, capture_output=True)
    assert done.returncode == 0 and done.stdout.startswith("vme_")
    assert "readable" not in done.stderr


def test_help_says_the_token_is_a_secret():
    """``manager enrol --help`` says the token is a secret and offers -o."""
    done = subprocess.run(CLI + ["enrol", "--help"], capture_output=True, text=True, timeout=60)
    assert "secret" in done.stdout and "-o FILE" in done.stdout and "0600" in done.stdout
