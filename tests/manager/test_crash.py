"""Killing the manager with SIGKILL while VMs heartbeat loses no VM, payload or result."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from vmagent.errors import ManagerRefused, ManagerUnavailable
from vmagent.manager.testing import heartbeat, new_vm

pytestmark = pytest.mark.slow


def test_sigkill_during_heartbeats_loses_nothing_acknowledged(start, db_kind, tmp_path):
    """Everything the manager answered before SIGKILL is there after a restart on the same database."""
    manager = start(db_kind)
    vms = [new_vm(manager, cores=2) for _ in range(6)]
    admin = manager.client()
    tag = uuid.uuid4().hex[:6]
    submitted = [admin.submit({"id": f"{tag}-{i}", "command": ["true"]}) for i in range(12)]
    acknowledged = {"results": set(), "beats": {}}
    stop = threading.Event()

    def vm_loop(vm):
        seq = 0
        while not stop.is_set():
            seq += 1
            try:
                vm["client"].heartbeat(vm["vm_id"], heartbeat(vm["instance_id"], seq))
                acknowledged["beats"][vm["vm_id"]] = seq
                for payload in vm["client"].claim(vm["vm_id"], free_cores=2):
                    vm["client"].result(
                        vm["vm_id"], payload["id"], {"id": payload["id"], "outcome": "done"}
                    )
                    acknowledged["results"].add(payload["id"])
            except ManagerUnavailable:
                time.sleep(0.05)
            except (
                ManagerRefused
            ) as exc:  # pragma: no cover - would be a bug; surfaces in the asserts
                acknowledged.setdefault("refused", []).append(str(exc))

    threads = [threading.Thread(target=vm_loop, args=(vm,)) for vm in vms]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    manager.kill()
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    done_before = set(acknowledged["results"])

    again = start(db_kind, state_dir=manager.state_dir, db=manager.db)
    _check(again, vms, submitted, done_before, acknowledged)


def _check(again, vms, submitted, done_before, acknowledged):
    admin = again.client()
    assert "refused" not in acknowledged
    listed = {v["id"]: v for v in admin.vms(limit=1000)}
    for vm in vms:
        assert vm["vm_id"] in listed
        assert listed[vm["vm_id"]]["seq"] >= acknowledged["beats"].get(vm["vm_id"], 0)
    states = {pid: admin.payload(pid) for pid in submitted}
    assert all(pid in states for pid in submitted)
    for pid in done_before:
        assert states[pid]["state"] == "done" and states[pid]["results"]
    assert done_before, "no payload finished before the kill: the test proved nothing"
    # The VMs carry on with the restarted manager with the credentials they already had.
    vm = vms[0]
    vm["client"].url = again.url
    answer = vm["client"].heartbeat(vm["vm_id"], heartbeat(vm["instance_id"], 10_000))
    assert answer["instructions"] == []
