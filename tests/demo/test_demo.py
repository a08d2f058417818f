"""'vmagent demo' as a real process against a real manager, checked against the manager's records."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("fastapi", reason="the demo's manager needs vmagent[manager]")

from vmagent.manager import testing  # noqa: E402


@pytest.mark.slow
def test_demo_summary_matches_manager_records(tmp_path):
    """The demo runs its workload to a halted VM, and its summary equals what the manager recorded."""
    manager = testing.start_manager(str(tmp_path / "manager"))
    try:
        summary_file = tmp_path / "summary.json"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "vmagent",
                "demo",
                "--cores",
                "2",
                "--payloads",
                "6",
                "--seconds",
                "1",
                "--workdir",
                str(tmp_path / "demo"),
                "--manager-url",
                manager.url,
                "--admin-token",
                str(tmp_path / "manager/admin.token"),
                "--ca",
                str(tmp_path / "manager/ca.pem"),
                "--json",
                str(summary_file),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "summary (from the manager's records)" in done.stdout
        summary = json.loads(summary_file.read_text())
        admin = manager.client()
        records = [p for p in admin.payloads(limit=1000) if p["id"].startswith("demo-")]
        vm = admin.vm(summary["vm_id"])
        assert summary["payloads"] == len(records) == 6
        assert summary["done"] == sum(1 for p in records if p["outcome"] == "done") == 6
        assert summary["failed"] == sum(1 for p in records if p["outcome"] == "failed") == 0
        assert vm["state"] == summary["vm_state"] == "halted"
        assert vm["vacuum_code"] == summary["vacuum_code"] == 200
        assert summary["halt_reason"] == vm["halt_message"]
        shapes = {p["id"]: p["cores"] for p in records}
        assert max(shapes.values()) == 2 and min(shapes.values()) == 1
        assert 0 < summary["utilisation"] <= 1.05
    finally:
        manager.stop()
