"""The slot manager with real payload processes on a 4-core pool."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from vmagent.pool_ce import executor

PAYLOAD = (
    "import json, os, sys, time; t0 = time.time(); time.sleep(float(sys.argv[1]));"
    "json.dump({'cpus': sorted(os.sched_getaffinity(0)), 'omp': os.environ['OMP_NUM_THREADS'],"
    "'start': t0, 'end': time.time(), 'jobfeatures': os.environ['JOBFEATURES']}, open('out.json', 'w'))"
)


def config(tmp_path, cores=4):
    path = tmp_path / "vmagent.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "instance": {"id": "i-pool"},
                "paths": {"root": str(tmp_path / "root")},
                "slots": {
                    "cores": cores,
                    "memory_mb": 4000,
                    "poll_seconds": 0.5,
                    "exit_when_idle": True,
                },
            }
        )
    )
    return str(path)


def submit(cfg, payloads, tmp_path):
    spec = tmp_path / "payloads.json"
    spec.write_text(json.dumps(payloads))
    subprocess.run(
        [sys.executable, "-m", "vmagent", "-c", cfg, "pool", "submit", str(spec)],
        check=True,
        capture_output=True,
        timeout=60,
    )


def payload(pid, cores, seconds):
    return {
        "id": pid,
        "cores": cores,
        "command": [sys.executable, "-c", PAYLOAD, str(seconds)],
        "wall_estimate_seconds": seconds,
    }


def results(tmp_path):
    path = tmp_path / "root/var/lib/vmagent/pool/results.jsonl"
    return (
        {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}
        if path.exists()
        else {}
    )


def test_mixed_payloads_pinned_without_overlap(tmp_path):
    """1-, 2- and 4-core payloads get their CPUs and thread settings, never overlap in cores, all report."""
    cfg = config(tmp_path)
    shapes = [
        ("a", 1, 0.6),
        ("b", 2, 0.6),
        ("c", 4, 0.4),
        ("d", 1, 0.3),
        ("e", 2, 0.3),
        ("f", 1, 0.3),
    ]
    submit(cfg, [payload(*s) for s in shapes], tmp_path)
    subprocess.run(
        [sys.executable, "-m", "vmagent", "-c", cfg, "pool", "run"],
        check=True,
        timeout=120,
        capture_output=True,
    )
    found = results(tmp_path)
    assert {k: r["outcome"] for k, r in found.items()} == {s[0]: "done" for s in shapes}
    real = sorted(os.sched_getaffinity(0))
    runs = {}
    for pid, cores, _ in shapes:
        out = json.loads((tmp_path / f"root/scratch/payloads/{pid}/out.json").read_text())
        assert out["omp"] == str(len(out["cpus"])) and set(out["cpus"]) <= set(real)
        assert found[pid]["cores"] == cores
        assert out["jobfeatures"].startswith("http://127.0.0.1:")  # mjf.serve_http's default
        assert out["jobfeatures"].endswith(f"/jobs/{pid}")
        features = tmp_path / f"root/var/lib/vmagent/mjf/jobs/{pid}/allocated_cpu"
        assert features.read_text() == str(cores)  # the spec's directory stays on disk
        runs[pid] = (found[pid]["started_at"], found[pid]["finished_at"], cores)
    # at no moment do running payloads hold more cores than the pool has
    for moment in sorted(t for s, e, _ in runs.values() for t in (s, e)):
        assert sum(c for s, e, c in runs.values() if s <= moment < e) <= 4


def test_sigkill_and_restart_loses_no_payload(tmp_path):
    """Killing the slot manager with SIGKILL mid-run and starting it again loses no payload."""
    cfg = config(tmp_path)
    submit(cfg, [payload(f"p{i}", 1 + i % 2, 1.5) for i in range(6)], tmp_path)
    first = subprocess.Popen(
        [sys.executable, "-m", "vmagent", "-c", cfg, "pool", "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    state = tmp_path / "root/var/lib/vmagent/pool/state.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if state.exists() and json.loads(state.read_text()).get("running"):
            break
        time.sleep(0.05)
    running_before = {r["id"] for r in json.loads(state.read_text())["running"]}
    assert running_before
    first.send_signal(signal.SIGKILL)
    first.wait()
    subprocess.run(
        [sys.executable, "-m", "vmagent", "-c", cfg, "pool", "run"],
        check=True,
        timeout=120,
        capture_output=True,
    )
    found = results(tmp_path)
    assert set(found) == {f"p{i}" for i in range(6)}
    assert all(r["outcome"] == "done" for r in found.values()), found
    assert not list((tmp_path / "root/var/spool/vmagent/incoming").iterdir())


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_payloads_run_as_payload_user():
    """slots.payload_user: every payload runs as that account, in a work directory it owns, its output too."""
    base = Path(
        tempfile.mkdtemp(prefix="vmagent-payload-user-")
    )  # pytest's tmp_path is private to root
    os.chmod(base, 0o755)
    try:
        cfg = config(base)
        settings = yaml.safe_load(Path(cfg).read_text())
        settings["slots"]["payload_user"] = "nobody"
        Path(cfg).write_text(yaml.safe_dump(settings))
        code = (
            "import os; print(os.getuid(), os.getgid()); open('who', 'w').write(str(os.getuid()))"
        )
        # the system's python3: the test interpreter may live where other users cannot reach (/root)
        submit(
            cfg,
            [
                {"id": f"u{i}", "cores": 1, "command": ["/usr/bin/python3", "-c", code]}
                for i in range(2)
            ],
            base,
        )
        subprocess.run(
            [sys.executable, "-m", "vmagent", "-c", cfg, "pool", "run"],
            check=True,
            timeout=120,
            capture_output=True,
        )
        found = results(base)
        nobody = pwd.getpwnam("nobody")
        assert {k: r["outcome"] for k, r in found.items()} == {"u0": "done", "u1": "done"}, found
        for pid in found:
            workdir = base / f"root/scratch/payloads/{pid}"
            assert int((workdir / "who").read_text()) == nobody.pw_uid
            assert (workdir / "stdout").read_text().split() == [
                str(nobody.pw_uid),
                str(nobody.pw_gid),
            ]
            assert workdir.stat().st_uid == (workdir / "stdout").stat().st_uid == nobody.pw_uid
    finally:
        shutil.rmtree(base)


def test_unknown_payload_user_is_a_config_error(tmp_path):
    """An account that does not exist is refused before any payload starts: exit 2, the key named."""
    cfg = config(tmp_path)
    settings = yaml.safe_load(Path(cfg).read_text())
    settings["slots"]["payload_user"] = "no-such-account-x"
    Path(cfg).write_text(yaml.safe_dump(settings))
    submit(cfg, [payload("kept", 1, 0.1)], tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "vmagent", "-c", cfg, "pool", "run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "slots.payload_user" in done.stderr and "no-such-account-x" in done.stderr, done.stderr
    assert not results(tmp_path)  # nothing started: the payload still waits in the spool
    assert [p.name for p in (tmp_path / "root/var/spool/vmagent/incoming").iterdir()] == [
        "kept.json"
    ]


def test_max_rss_is_the_payloads_own():
    """A payload smaller than the slot manager reports no peak rather than the slot manager's size (Linux
    counts what a child shared with its parent before exec); a bigger one reports its own."""
    assert executor.payload_max_rss(None, 50 * 2**20) is None
    assert (
        executor.payload_max_rss(52 * 2**20, 50 * 2**20) is None
    )  # the inherited size, not the payload's
    assert executor.payload_max_rss(300 * 2**20, 50 * 2**20) == 300 * 2**20
    assert executor.payload_max_rss(300 * 2**20, None) == 300 * 2**20
    assert executor.own_rss() > 2**20


def test_max_rss_reported_for_real_payloads(tmp_path):
    """End to end: a 300 MB payload reports at least that, a tiny one no inherited figure."""
    cfg = config(tmp_path)
    touch = "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"
    submit(
        cfg,
        [
            {"id": "tiny", "cores": 1, "command": ["/bin/true"]},
            {"id": "big", "cores": 1, "memory_mb": 1000, "command": [sys.executable, "-c", touch]},
        ],
        tmp_path,
    )
    subprocess.run(
        [sys.executable, "-m", "vmagent", "-c", cfg, "pool", "run"],
        check=True,
        timeout=120,
        capture_output=True,
    )
    found = results(tmp_path)
    assert found["big"]["outcome"] == "done" and found["big"]["max_rss_bytes"] >= 300 * 2**20, (
        found["big"]
    )
    assert found["tiny"]["outcome"] == "done", found["tiny"]
    # /bin/true needs about a megabyte: anything reported must be its own, below the slot manager's size
    assert found["tiny"]["max_rss_bytes"] is None or found["tiny"]["max_rss_bytes"] < 8 * 2**20, (
        found["tiny"]
    )
