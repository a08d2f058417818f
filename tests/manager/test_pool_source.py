"""The slot manager's ``manager`` source: peek at the queue, lease by id, reserve for multicore payloads."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid

import yaml

from vmagent.manager.testing import new_vm


def test_peek_lists_without_leasing_and_ids_lease_exactly(manager):
    """peek answers what could run (each fitting alone), leasing nothing; ids lease only those."""
    vo = "vo-" + uuid.uuid4().hex[:8]
    vm = new_vm(manager, cores=4, vo=vo)
    admin = manager.client()
    admin._call(
        "POST",
        "/payloads",
        [
            {"id": f"{vo}-a", "command": ["true"], "cores": 3, "tags": {"vo": vo}},
            {"id": f"{vo}-b", "command": ["true"], "cores": 3, "tags": {"vo": vo}},
            {"id": f"{vo}-c", "command": ["true"], "cores": 8, "tags": {"vo": vo}},
        ],
    )
    seen = vm["client"].claim(vm["vm_id"], free_cores=4, peek=True, max=10)
    assert [p["id"] for p in seen if p["id"].startswith(vo)] == [f"{vo}-a", f"{vo}-b"]
    assert "lease_expires_at" not in seen[0]
    assert {admin.payload(f"{vo}-{x}")["state"] for x in "abc"} == {"queued"}
    got = vm["client"].claim(vm["vm_id"], free_cores=4, ids=[f"{vo}-b"], max=5)
    assert [p["id"] for p in got] == [f"{vo}-b"]
    assert (
        admin.payload(f"{vo}-b")["state"] == "leased"
        and admin.payload(f"{vo}-a")["state"] == "queued"
    )
    assert vm["client"].claim(vm["vm_id"], free_cores=4, ids=[f"{vo}-b"]) == []  # leased already


def test_slot_manager_reserves_cores_for_a_multicore_payload_from_the_manager(manager, tmp_path):
    """On 2 cores, a 2-core payload queued behind single-core ones starts once the first ends (backfill),
    not after every single-core payload (the manager's own first fit)."""
    vo = "vo-" + uuid.uuid4().hex[:8]
    admin = manager.client()
    root = tmp_path / "root"
    (root / "etc/vmagent").mkdir(parents=True)
    shutil.copy(manager.ca_file, root / "etc/vmagent/ca.pem")
    (root / "etc/vmagent/enrolment.token").write_text(admin.enrol(vo=vo)["enrolment_token"])
    sleep = [sys.executable, "-c", "import sys, time; time.sleep(float(sys.argv[1]))"]
    shapes = [
        ("a", 1, 1.5),
        ("wide", 2, 0.5),
        ("c", 1, 1.5),
        ("d", 1, 1.5),
        ("e", 1, 1.5),
        ("f", 1, 1.5),
    ]
    admin._call(
        "POST",
        "/payloads",
        [
            {
                "id": f"{vo}-{name}",
                "command": sleep + [str(seconds)],
                "cores": cores,
                "wall_estimate_seconds": seconds,
                "tags": {"vo": vo},
                "priority": 10 - i,
            }
            for i, (name, cores, seconds) in enumerate(shapes)
        ],
    )
    config = tmp_path / "vmagent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "instance": {"id": "i-" + vo, "vo": vo},
                "paths": {"root": str(root)},
                "manager": {
                    "url": manager.url,
                    "ca_file": "/etc/vmagent/ca.pem",
                    "token_file": "/etc/vmagent/enrolment.token",
                },
                "slots": {
                    "cores": 2,
                    "memory_mb": 4000,
                    "source": "manager",
                    "poll_seconds": 0.5,
                    "exit_when_idle": True,
                },
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "vmagent", "-c", str(config), "pool", "run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    results = {
        r["id"][len(vo) + 1 :]: r
        for r in map(
            json.loads, (root / "var/lib/vmagent/pool/results.jsonl").read_text().splitlines()
        )
    }
    assert {k: r["outcome"] for k, r in results.items()} == {name: "done" for name, _, _ in shapes}
    assert {admin.payload(f"{vo}-{name}")["state"] for name, _, _ in shapes} == {"done"}
    later = [name for name in "def" if results[name]["started_at"] > results["wide"]["started_at"]]
    assert later == ["d", "e", "f"], {k: r["started_at"] for k, r in results.items()}
