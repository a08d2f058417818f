"""One slot manager per state directory: a second one exits at once, naming the holder."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import yaml

DEADLINE = 60


def make_config(tmp_path):
    path = tmp_path / "vmagent.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "instance": {"id": "i-lock"},
                "paths": {"root": str(tmp_path / "root")},
                "slots": {"cores": 1, "memory_mb": 1000, "poll_seconds": 0.5},
            }
        )
    )
    return str(path)


def pool_run(cfg, *extra, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "vmagent", "-c", cfg, "pool", "run", *extra],
        start_new_session=True,
        **kwargs,
    )


def state_pid(state_file):
    try:
        return json.loads(state_file.read_text()).get("pid")
    except (OSError, ValueError):
        return None


def test_second_slot_manager_on_the_same_state_directory_exits(tmp_path):
    """While one slot manager runs, a second on the same state directory exits 1 at once, names the
    holder's pid and the directory, and writes nothing; once the first has gone, one may start."""
    cfg = make_config(tmp_path)
    pool = tmp_path / "root/var/lib/vmagent/pool"
    first = pool_run(cfg, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + DEADLINE
        while state_pid(pool / "state.json") != first.pid:
            assert time.monotonic() < deadline and first.poll() is None, (
                "the first slot manager never got ready"
            )
            time.sleep(0.05)
        before = (pool / "state.json").read_bytes()
        second = pool_run(
            cfg, "--exit-when-idle", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        out, err = second.communicate(timeout=DEADLINE)
        assert second.returncode == 1, (second.returncode, out, err)
        assert str(first.pid) in err and str(pool) in err, err
        assert (pool / "state.json").read_bytes() == before
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(DEADLINE) == 0
    third = subprocess.run(
        [sys.executable, "-m", "vmagent", "-c", cfg, "pool", "run", "--exit-when-idle"],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert third.returncode == 0, third.stderr
