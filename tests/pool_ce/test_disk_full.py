"""A full disk under the state directory and the spool: the slot manager keeps going, writes later."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

DEADLINE = 90


def mount_tmpfs(path, size="64k"):
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")


def fill(directory):
    """Write into ``directory`` until its file system is full; answer the filler file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"x" * 4096)
        except OSError:
            pass
    return filler


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_disk_keeps_payloads_running_and_writes_results_later(tmp_path):
    """With the state directory and the spool's results on full file systems, payloads still run, each kind
    of write error is logged once, the slot manager does not exit, and every result is written (state,
    results.jsonl, spool) once space is back."""
    cfg = tmp_path / "vmagent.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "instance": {"id": "i-full"},
                "paths": {"root": str(tmp_path / "root")},
                "slots": {
                    "cores": 2,
                    "memory_mb": 1000,
                    "poll_seconds": 0.5,
                    "exit_when_idle": True,
                },
            }
        )
    )
    spec = tmp_path / "payloads.json"
    spec.write_text(
        json.dumps([{"id": f"p{i}", "cores": 1, "command": ["/bin/true"]} for i in range(3)])
    )
    vmagent = [sys.executable, "-m", "vmagent", "-c", str(cfg)]
    subprocess.run(
        [*vmagent, "pool", "submit", str(spec)], check=True, capture_output=True, timeout=60
    )
    pool = tmp_path / "root/var/lib/vmagent/pool"
    spool_results = tmp_path / "root/var/spool/vmagent/results"
    mounted = []
    try:
        for place in (pool, spool_results):
            mount_tmpfs(place)
            mounted.append(place)
        fillers = [fill(place) for place in mounted]
        log = tmp_path / "run.log"
        with open(log, "wb") as out:
            manager = subprocess.Popen(
                [*vmagent, "pool", "run"], stdout=out, stderr=out, start_new_session=True
            )
        work = tmp_path / "root/scratch/payloads"
        deadline = time.monotonic() + DEADLINE
        while not all((work / f"p{i}/.vmagent-exit-code").exists() for i in range(3)):
            assert manager.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        time.sleep(1.0)  # a few more ticks on a full disk: still running, still quiet
        assert manager.poll() is None, log.read_text()
        text = log.read_text()
        assert "Traceback" not in text, text
        for kind in ("state", "results", "report"):
            assert text.count(f"disk full: cannot write the {kind}") == 1, text
        for filler in fillers:
            filler.unlink()
        assert manager.wait(DEADLINE) == 0, log.read_text()
        found = {
            r["id"]: r for r in map(json.loads, (pool / "results.jsonl").read_text().splitlines())
        }
        assert {k: r["outcome"] for k, r in found.items()} == {f"p{i}": "done" for i in range(3)}
        assert sorted(p.name for p in spool_results.iterdir()) == [f"p{i}.json" for i in range(3)]
        assert json.loads((pool / "state.json").read_text())["counts"]["done"] == 3
    finally:
        for place in reversed(mounted):
            subprocess.run(["umount", "-l", str(place)], check=False)
