"""API v1 against a real manager process over HTTPS on 127.0.0.1, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
import requests

from vmagent import schemas
from vmagent.errors import ManagerRefused
from vmagent.manager.testing import heartbeat, new_vm


def test_registration_answers_credential_and_enrolment_values_win(manager):
    """Registering with an enrolment token answers a VM id and token; the enrolled ce and image are kept."""
    vm = new_vm(manager, ce="cern-openstack", image="el9-2024", running_pod="pod-a", vo="lhcb")
    assert vm["vm_id"].startswith("vm-") and vm["token"].startswith("vmv_")
    row = manager.client().vm(vm["vm_id"])
    assert (row["ce"], row["image"], row["running_pod"], row["vo"], row["state"]) == (
        "cern-openstack",
        "el9-2024",
        "pod-a",
        "lhcb",
        "new",
    )
    assert "token_hash" not in row and vm["token"] not in json.dumps(row)


def test_heartbeats_move_the_vm_through_its_states_and_are_kept(manager):
    """Booting then running heartbeats move New to Submitted to Running, each transition recorded."""
    vm = new_vm(manager)
    client = vm["client"]
    client.heartbeat(vm["vm_id"], heartbeat(vm["instance_id"], 1, "booting"))
    answer = client.heartbeat(
        vm["vm_id"], heartbeat(vm["instance_id"], 2, "running", load=[3.5, 2, 1])
    )
    assert answer == {"instructions": [], "heartbeat_period": 60.0}
    row = manager.client().vm(vm["vm_id"])
    assert [t["to_state"] for t in row["transitions"]] == ["new", "submitted", "running"]
    assert all(t["at"] > 0 and t["reason"] for t in row["transitions"])
    assert [h["seq"] for h in row["heartbeats"]] == [1, 2]
    assert row["load1"] == 3.5


def test_drain_instruction_is_resent_until_acknowledged(manager):
    """A queued drain travels in every heartbeat answer until a heartbeat acks its id."""
    vm = new_vm(manager)
    client, admin = vm["client"], manager.client()
    client.heartbeat(vm["vm_id"], heartbeat(vm["instance_id"], 1))
    drain_id = admin.instruct(vm["vm_id"], "drain", reason="kernel update")
    for seq in (2, 3):
        answer = client.heartbeat(vm["vm_id"], heartbeat(vm["instance_id"], seq))
        assert answer["instructions"] == [
            {"id": drain_id, "action": "drain", "reason": "kernel update"}
        ]
        assert schemas.problems("instruction", answer["instructions"][0]) == []
    answer = client.heartbeat(
        vm["vm_id"], heartbeat(vm["instance_id"], 4, "draining", acks=[drain_id])
    )
    assert answer["instructions"] == []
    assert admin.vm(vm["vm_id"])["state"] == "draining"


def test_shutdown_at_instruction_carries_its_time(manager):
    """A shutdown_at instruction answers with its UNIX time, as the instruction schema describes."""
    vm = new_vm(manager)
    new_id = manager.client().instruct(vm["vm_id"], "shutdown_at", shutdown_at=1.8e9)
    answer = vm["client"].heartbeat(vm["vm_id"], heartbeat(vm["instance_id"], 1))
    assert answer["instructions"] == [{"id": new_id, "action": "shutdown_at", "shutdown_at": 1.8e9}]
    assert schemas.problems("instruction", answer["instructions"][0]) == []


def test_claim_matches_cores_memory_lifetime_and_tags(manager):
    """Only payloads that fit the free cores, memory, remaining time, RunningPod and VO are leased."""
    tag = uuid.uuid4().hex[:8]
    vm = new_vm(manager, cores=4, running_pod=f"pod-{tag}", vo=f"vo-{tag}")
    admin = manager.client()
    admin._call(
        "POST",
        "/payloads",
        [
            {"id": f"{tag}-big", "command": ["true"], "cores": 8, "tags": {"vo": f"vo-{tag}"}},
            {
                "id": f"{tag}-mem",
                "command": ["true"],
                "memory_mb": 10**6,
                "tags": {"vo": f"vo-{tag}"},
            },
            {
                "id": f"{tag}-long",
                "command": ["true"],
                "wall_limit_seconds": 10**6,
                "tags": {"vo": f"vo-{tag}"},
            },
            {
                "id": f"{tag}-pod",
                "command": ["true"],
                "tags": {"running_pod": "other", "vo": f"vo-{tag}"},
            },
            {
                "id": f"{tag}-fits",
                "command": ["true"],
                "cores": 2,
                "tags": {"running_pod": f"pod-{tag}", "vo": f"vo-{tag}"},
                "priority": 5,
            },
        ],
    )
    got = vm["client"].claim(
        vm["vm_id"], free_cores=4, free_memory_mb=8000, remaining_seconds=3600, max=10
    )
    ids = [p["id"] for p in got if p["id"].startswith(tag)]
    assert ids == [f"{tag}-fits"]
    assert got[0]["lease_expires_at"] > 0 and got[0]["command"] == ["true"]
    assert admin.payload(f"{tag}-fits")["state"] == "leased"
    assert admin.payload(f"{tag}-big")["state"] == "queued"


def test_result_is_kept_and_counted_in_accounting(manager):
    """A done result finishes the payload and appears as core-hours of the VM's ce."""
    ce = "ce-" + uuid.uuid4().hex[:8]
    vm = new_vm(manager, ce=ce, vo=ce)
    admin = manager.client()
    pid = admin.submit({"id": f"{ce}-p", "command": ["sleep", "1"], "cores": 2, "tags": {"vo": ce}})
    (leased,) = vm["client"].claim(vm["vm_id"], free_cores=8, max=1)
    assert leased["id"] == pid
    vm["client"].result(
        vm["vm_id"],
        pid,
        {
            "id": pid,
            "outcome": "done",
            "exit_code": 0,
            "cores": 2,
            "wall_seconds": 0.5,
            "cpu_seconds": 0.75,
        },
    )
    assert admin.payload(pid)["state"] == "done"
    rows = [r for r in admin.accounting("ce") if r["ce"] == ce]
    assert rows[0]["payloads"] == 1 and rows[0]["done"] == 1 and rows[0]["vms"] == 1
    assert rows[0]["core_hours"] == pytest.approx(2 * 0.5 / 3600, abs=1e-6)
    assert rows[0]["cpu_hours"] == pytest.approx(0.75 / 3600, abs=1e-6)


def test_killed_payload_is_queued_again(manager):
    """A payload killed by a drain goes back to the queue for another VM."""
    vo = "vo-" + uuid.uuid4().hex[:8]
    vm = new_vm(manager, vo=vo)
    admin = manager.client()
    pid = admin.submit({"id": f"{vo}-k", "command": ["true"], "tags": {"vo": vo}})
    vm["client"].claim(vm["vm_id"], free_cores=8)
    vm["client"].result(vm["vm_id"], pid, {"id": pid, "outcome": "killed", "reason": "drain"})
    row = admin.payload(pid)
    assert (
        row["state"] == "queued"
        and row["attempts"] == 1
        and row["results"][0]["outcome"] == "killed"
    )


def test_halting_releases_leased_payloads_and_halts(manager):
    """Declaring halting makes the VM Halted and requeues what it had leased; it then cannot heartbeat."""
    vo = "vo-" + uuid.uuid4().hex[:8]
    vm = new_vm(manager, vo=vo)
    admin = manager.client()
    pid = admin.submit({"id": f"{vo}-h", "command": ["true"], "tags": {"vo": vo}})
    vm["client"].claim(vm["vm_id"], free_cores=8)
    vm["client"].halting(vm["vm_id"], "no more work", 300, "300 No more work")
    row = admin.vm(vm["vm_id"])
    assert row["state"] == "halted" and row["vacuum_code"] == 300
    assert admin.payload(pid)["state"] == "queued"
    with pytest.raises(ManagerRefused) as err:
        vm["client"].heartbeat(vm["vm_id"], heartbeat(vm["instance_id"], 9))
    assert err.value.status == 409


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"seq": 1, "time": 1, "status": "running"}, "instance_id"),
        ({"instance_id": "x", "seq": -1, "time": 1, "status": "running"}, "seq"),
        (
            {"instance_id": "x", "seq": 1, "time": 1, "status": "dancing"},
            "status: 'dancing' is not allowed",
        ),
        (
            {"instance_id": "x", "seq": 1, "time": 1, "status": "running", "extra": 1},
            "extra: unknown key",
        ),
    ],
)
def test_invalid_heartbeat_is_refused_with_a_clear_422(manager, body, words):
    """A heartbeat that breaks the schema gets 422 naming the offending key."""
    vm = new_vm(manager)
    with pytest.raises(ManagerRefused) as err:
        vm["client"].heartbeat(vm["vm_id"], body)
    assert err.value.status == 422
    assert "invalid heartbeat" in err.value.detail and words in err.value.detail


def test_heartbeat_of_another_instance_is_refused(manager):
    """A heartbeat naming another instance than the registered one is refused."""
    vm = new_vm(manager)
    with pytest.raises(ManagerRefused) as err:
        vm["client"].heartbeat(vm["vm_id"], heartbeat("i-someone-else", 1))
    assert err.value.status == 422 and "instance_id" in err.value.detail


def test_body_larger_than_the_limit_is_refused_with_413(manager):
    """A request body above the limit is refused before it is parsed."""
    answer = requests.post(
        f"{manager.url}/api/v1/payloads",
        data=b"[" + b" " * (2 << 20) + b"]",
        headers={
            "Authorization": f"Bearer {manager.admin_token}",
            "Content-Type": "application/json",
        },
        verify=manager.ca_file,
        timeout=30,
    )
    assert answer.status_code == 413 and "limit" in answer.json()["detail"]


def test_duplicate_payload_id_is_a_conflict(manager):
    """Submitting a payload id twice answers 409 and keeps the first."""
    pid = "dup-" + uuid.uuid4().hex[:8]
    admin = manager.client()
    admin.submit({"id": pid, "command": ["true"]})
    with pytest.raises(ManagerRefused) as err:
        admin.submit({"id": pid, "command": ["false"]})
    assert err.value.status == 409 and admin.payload(pid)["doc"]["command"] == ["true"]


def test_vm_table_filters_and_pages(manager):
    """The VM table filters by image and pages with limit and offset, reporting the total."""
    image = "img-" + uuid.uuid4().hex[:8]
    made = {new_vm(manager, image=image)["vm_id"] for _ in range(3)}
    admin = manager.client()
    page = admin._call("GET", "/vms", params={"image": image, "limit": 2, "offset": 0})
    rest = admin._call("GET", "/vms", params={"image": image, "limit": 2, "offset": 2})
    assert page["total"] == 3 and len(page["vms"]) == 2 and len(rest["vms"]) == 1
    assert {v["id"] for v in page["vms"] + rest["vms"]} == made


def test_openapi_is_published(manager):
    """The OpenAPI document lists the heartbeat route with the heartbeat schema as its body."""
    doc = requests.get(f"{manager.url}/openapi.json", verify=manager.ca_file, timeout=10).json()
    body = doc["paths"]["/api/v1/vms/{vm_id}/heartbeat"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["required"] == [
        "instance_id",
        "seq",
        "time",
        "status",
    ]


def test_operator_cli_lists_drains_and_submits(manager, tmp_path):
    """The operator commands find the manager through --state-dir and act on it."""
    vm = new_vm(manager, image="cli-image")
    cli = [sys.executable, "-m", "vmagent", "manager"]
    common = ["--state-dir", manager.state_dir]
    listed = subprocess.run(
        cli + ["vms", *common, "--image", "cli-image"], capture_output=True, text=True, check=True
    )
    assert vm["vm_id"] in listed.stdout and "STATE" in listed.stdout
    drained = subprocess.run(
        cli + ["drain", vm["vm_id"], *common, "--reason", "maintenance"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "queued drain" in drained.stdout
    answer = vm["client"].heartbeat(vm["vm_id"], heartbeat(vm["instance_id"], 1))
    assert [i["action"] for i in answer["instructions"]] == ["drain"]
    payloads = tmp_path / "payloads.json"
    pid = "cli-" + uuid.uuid4().hex[:8]
    payloads.write_text(
        json.dumps([{"id": pid, "command": ["true"]}, {"id": pid + "b", "command": ["true"]}])
    )
    submitted = subprocess.run(
        cli + ["submit", str(payloads), *common], capture_output=True, text=True, check=True
    )
    assert f"queued {pid}\n" in submitted.stdout
    assert manager.client().payload(pid + "b")["state"] == "queued"


def test_operator_cli_rejects_bad_payload_file_naming_it(manager, tmp_path):
    """A payload file that breaks the schema exits 2 naming the file and key; nothing is queued."""
    bad = tmp_path / "bad.json"
    pid = "bad-" + uuid.uuid4().hex[:8]
    bad.write_text(
        json.dumps([{"id": pid, "command": ["true"]}, {"id": pid + "x", "command": [], "cores": 0}])
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "vmagent",
            "manager",
            "submit",
            str(bad),
            "--state-dir",
            manager.state_dir,
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert f"{bad}: [1].command" in done.stderr and f"{bad}: [1].cores" in done.stderr
    with pytest.raises(ManagerRefused):
        manager.client().payload(pid)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (
            {
                "instance_id": "i",
                "hostname": "a\u0000b",
                "ip": "1.2.3.4",
                "total_cores": 1,
                "total_memory_mb": 1,
            },
            "NUL",
        ),
        (
            {
                "instance_id": "i",
                "hostname": "h",
                "ip": "1.2.3.4",
                "total_cores": 1,
                "total_memory_mb": 1,
                "site": "s" * 257,
            },
            "site",
        ),
    ],
)
def test_registration_values_the_database_cannot_hold_are_422(manager, body, words):
    """Text with NUL or longer than the columns is refused with 422 on both databases, never a 500."""
    with pytest.raises(ManagerRefused) as err:
        manager.client().register(**body)
    assert err.value.status == 422 and words in err.value.detail


def test_huge_integers_are_422(manager):
    """A heartbeat counter beyond 64 bits is refused with 422 instead of failing in the database."""
    vm = new_vm(manager)
    with pytest.raises(ManagerRefused) as err:
        vm["client"].heartbeat(vm["vm_id"], heartbeat(vm["instance_id"], 2**70))
    assert err.value.status == 422 and "out of range" in err.value.detail
