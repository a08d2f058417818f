"""Many VMs claiming at once, from several manager processes: no payload is ever leased twice."""

from __future__ import annotations

import threading
import uuid

import pytest

from vmagent.manager.testing import new_vm

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_claims_lease_each_payload_once(start, db_kind, workers):
    """Eight VMs racing for forty payloads lease every one exactly once."""
    manager = start(db_kind, workers=workers)
    vo = "race-" + uuid.uuid4().hex[:6]
    manager.client()._call(
        "POST",
        "/payloads",
        [{"id": f"{vo}-{i}", "command": ["true"], "tags": {"vo": vo}} for i in range(40)],
    )
    vms = [new_vm(manager, cores=5, vo=vo) for _ in range(8)]  # 40 cores for 40 payloads
    leased = {vm["vm_id"]: [] for vm in vms}

    def claim_all(vm):
        while True:
            got = vm["client"].claim(vm["vm_id"], free_cores=5, max=2)
            if not got:
                return
            leased[vm["vm_id"]].extend(p["id"] for p in got)

    threads = [threading.Thread(target=claim_all, args=(vm,)) for vm in vms]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    everything = [pid for ids in leased.values() for pid in ids]
    assert sorted(everything) == sorted(f"{vo}-{i}" for i in range(40))
    rows = manager.client().payloads(state="leased", limit=1000)
    owner = {row["id"]: row["vm_id"] for row in rows if row["id"].startswith(vo)}
    assert all(owner[pid] == vm_id for vm_id, ids in leased.items() for pid in ids)
