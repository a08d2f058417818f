"""Pilots mode: supervised pilot processes with a restart policy and black-hole detection."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml


def run_pool(tmp_path, pilot, cores=2):
    cfg = tmp_path / "vmagent.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "instance": {"id": "i-pilots"},
                "paths": {"root": str(tmp_path / "root")},
                "slots": {
                    "mode": "pilots",
                    "cores": cores,
                    "memory_mb": 2000,
                    "poll_seconds": 0.2,
                    "pilot": pilot,
                },
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "vmagent", "-c", str(cfg), "pool", "run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    state = json.loads((tmp_path / "root/var/lib/vmagent/pool/state.json").read_text())
    return state, done.stderr


def test_pilots_without_work_retire_their_slots(tmp_path):
    """Each slot runs its pilot with its cores and memory share; 'no more work' retires the slots: 300 each."""
    marker = tmp_path / "ran"
    code = (
        f"import os,sys; open({str(marker)!r} + sys.argv[1], 'w').write(os.environ['JOBFEATURES'])"
    )
    state, _ = run_pool(
        tmp_path, {"argv": [sys.executable, "-c", code, "{slot}"], "cores_per_pilot": 1}
    )
    assert sorted(p.name for p in tmp_path.glob("ran*")) == ["ran0", "ran1"]
    assert (
        state["mode"] == "pilots"
        and state["vacuum_codes"] == [300, 300]
        and state["counts"]["done"] == 2
    )
    results = [
        json.loads(line)
        for line in (tmp_path / "root/var/lib/vmagent/pool/results.jsonl").read_text().splitlines()
    ]
    assert [r["memory_mb"] for r in results] == [1000, 1000]  # an equal share of the slots' 2000 MB


def test_failing_pilots_back_off_then_black_hole(tmp_path):
    """Pilots that keep dying at once are restarted with backoff until the node is declared a black hole."""
    state, log = run_pool(
        tmp_path,
        {
            "argv": [sys.executable, "-c", "raise SystemExit(1)"],
            "count": 1,
            "backoff_seconds": 0.1,
            "min_lifetime_seconds": 30,
            "black_hole_after": 3,
        },
    )
    assert state["counts"]["failed"] == 3 and state["vacuum_codes"] == [700, 700, 700]
    assert "black hole" in log and "restarting in 0.1 s" in log and "restarting in 0.2 s" in log


def test_drain_stops_new_pilots_and_tells_dirac(tmp_path):
    """A drain request lets running pilots finish, starts no new one, and creates /var/lib/dirac_drain."""
    import time

    cfg = tmp_path / "vmagent.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "instance": {"id": "i-drain"},
                "paths": {"root": str(tmp_path / "root")},
                "slots": {
                    "mode": "pilots",
                    "cores": 2,
                    "memory_mb": 2000,
                    "poll_seconds": 0.2,
                    "pilot": {
                        "argv": [sys.executable, "-c", "import time; time.sleep(1.5)"],
                        "no_work_exit_codes": [99],
                    },
                },
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmagent", "-c", str(cfg), "pool", "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state_file = tmp_path / "root/var/lib/vmagent/pool/state.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
        state_file.exists() and json.loads(state_file.read_text())["running"]
    ):
        time.sleep(0.05)
    (tmp_path / "root/run/vmagent").mkdir(parents=True, exist_ok=True)
    (tmp_path / "root/run/vmagent/drain").write_text("test\n")
    assert proc.wait(timeout=30) == 0
    state = json.loads(state_file.read_text())
    assert (
        state["draining"] and state["counts"]["done"] == 2 and state["vacuum_codes"] == [200, 200]
    )
    assert (tmp_path / "root/var/lib/dirac_drain").exists()


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@needs_root
def test_each_slot_runs_as_its_own_user(tmp_path):
    """slots.pilot.users: slot i runs as users[i % n] in a work directory it owns, its output files too."""
    base = Path(tempfile.mkdtemp(prefix="vmagent-users-"))  # pytest's tmp_path is private to root
    os.chmod(base, 0o755)
    try:
        found = users_run(base)
    finally:
        shutil.rmtree(base)
    assert found == {0: pwd.getpwnam("nobody").pw_uid, 1: pwd.getpwnam("daemon").pw_uid}


def users_run(base):
    code = "import os; open('who', 'w').write(str(os.getuid()))"
    # the system's python3: the test interpreter may live where other users cannot reach (/root)
    state, log = run_pool(
        base,
        {
            "argv": ["/usr/bin/python3", "-c", code],
            "count": 2,
            "users": ["nobody", "daemon"],
            "black_hole_after": 1,
        },
    )
    assert state["counts"]["done"] == 2, log
    found = {}
    for slot in (0, 1):
        workdir = base / f"root/scratch/payloads/pilot-{slot}-1"
        found[slot] = int((workdir / "who").read_text())
        assert workdir.stat().st_uid == found[slot] == (workdir / "stdout").stat().st_uid
    return found


def test_unknown_user_is_a_config_error(tmp_path):
    """A user that does not exist is refused before anything starts: exit 2, the key named."""
    cfg = tmp_path / "vmagent.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "instance": {"id": "i-users"},
                "paths": {"root": str(tmp_path / "root")},
                "slots": {
                    "mode": "pilots",
                    "cores": 1,
                    "memory_mb": 100,
                    "pilot": {"argv": ["true"], "users": ["no-such-account-x"]},
                },
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "vmagent", "-c", str(cfg), "pool", "run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "slots.pilot.users.0" in done.stderr and "no-such-account-x" in done.stderr
    assert not (tmp_path / "root/var/lib/vmagent/pool/state.json").exists()
