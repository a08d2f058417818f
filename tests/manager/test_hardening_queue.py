"""What a VM may claim and report is bounded by its enrolment, its registration and its leases."""

from __future__ import annotations

import pytest

from vmagent.clock import FakeClock
from vmagent.errors import ManagerRefused
from vmagent.manager import accounting, auth, db, inventory, queue, registry
from vmagent.manager.settings import Settings
from vmagent.manager.testing import new_vm


@pytest.fixture
def world(tmp_path):
    """An SQLite database, default settings and a fake clock."""
    engine = db.make_engine(f"sqlite:///{tmp_path}/m.db")
    db.create_all(engine)
    settings = Settings(db_url="", admin_token_hash=auth.digest("adm"))
    return engine, settings, FakeClock()


def _vm(world, cores=2, memory=4000, **enrolled):
    """A VM registered with an enrolment fixing ``enrolled``."""
    engine, settings, clock = world
    body = {
        "instance_id": "i-1",
        "hostname": "h",
        "ip": "1.1.1.1",
        "total_cores": cores,
        "total_memory_mb": memory,
    }
    with engine.begin() as conn:
        token = registry.enrol(conn, enrolled, clock.time())["enrolment_token"]
        return registry.register(conn, settings, token, body, clock.time())


def _submit(world, *docs):
    with world[0].begin() as conn:
        queue.submit(conn, list(docs), world[2].time())


def _claim(world, vm, **request):
    engine, settings, clock = world
    request = {"free_cores": 1, **request}
    with engine.begin() as conn:
        row = registry.authenticate_vm(conn, settings, vm["vm_id"], vm["token"], clock.time())
        return [p["id"] for p in queue.claim(conn, settings, row, request, clock.time())]


def _result(world, vm, doc):
    engine, settings, clock = world
    with engine.begin() as conn:
        row = registry.authenticate_vm(conn, settings, vm["vm_id"], vm["token"], clock.time())
        return queue.record_result(conn, settings, row, doc["id"], doc, clock.time())


def _row(world, payload_id):
    with world[0].begin() as conn:
        return queue.one(conn, payload_id)["results"][-1]


# --- tags: the enrolment and registration fix the VO and RunningPod -------------------------------


@pytest.mark.parametrize("key", ["vo", "running_pod"])
def test_claim_naming_another_tag_is_refused(world, key):
    """A VM enrolled for lhcb that claims for cta is refused with 403 and leases nothing."""
    vm = _vm(world, **{key: "lhcb"})
    _submit(world, {"id": "cta-only", "command": ["true"], "tags": {key: "cta"}})
    with pytest.raises(ManagerRefused) as err:
        _claim(world, vm, **{key: "cta"})
    assert err.value.status == 403
    assert key in err.value.detail and "'lhcb'" in err.value.detail and "'cta'" in err.value.detail
    assert _claim(world, vm, max=5) == []


@pytest.mark.parametrize("key", ["vo", "running_pod"])
def test_claim_naming_its_own_tag_or_none_is_served(world, key):
    """Naming the registered tag, or none, leases that community's payloads."""
    vm = _vm(world, **{key: "lhcb"})
    _submit(
        world,
        {"id": "a", "command": ["true"], "tags": {key: "lhcb"}},
        {"id": "b", "command": ["true"], "tags": {key: "lhcb"}},
    )
    assert _claim(world, vm, **{key: "lhcb"}) == ["a"]
    assert _claim(world, vm) == ["b"]


def test_untagged_vm_cannot_claim_a_community(world):
    """A VM registered without a VO cannot name one in its claim to reach that VO's payloads."""
    vm = _vm(world)
    _submit(world, {"id": "cta-only", "command": ["true"], "tags": {"vo": "cta"}})
    with pytest.raises(ManagerRefused) as err:
        _claim(world, vm, vo="cta")
    assert err.value.status == 403


@pytest.mark.parametrize("key", ["site", "ce", "image", "running_pod", "vo"])
def test_registration_cannot_contradict_the_enrolment(world, key):
    """A registration body naming another value than its enrolment fixed is refused, the token unused."""
    engine, settings, clock = world
    body = {
        "instance_id": "i-1",
        "hostname": "h",
        "ip": "1.1.1.1",
        "total_cores": 1,
        "total_memory_mb": 1,
    }
    with engine.begin() as conn:
        token = registry.enrol(conn, {key: "fixed"}, clock.time())["enrolment_token"]
    with engine.begin() as conn, pytest.raises(ManagerRefused) as err:
        registry.register(conn, settings, token, dict(body, **{key: "other"}), clock.time())
    assert err.value.status == 403 and key in err.value.detail and "'fixed'" in err.value.detail
    with engine.begin() as conn:
        answer = registry.register(
            conn, settings, token, dict(body, **{key: "fixed"}), clock.time()
        )
    assert answer["vm_id"].startswith("vm-")


def test_registration_may_fill_what_the_enrolment_left_open(world):
    """Values the enrolment did not fix come from the VM's registration body."""
    engine, settings, clock = world
    body = {
        "instance_id": "i-1",
        "hostname": "h",
        "ip": "1.1.1.1",
        "total_cores": 1,
        "total_memory_mb": 1,
        "image": "el9",
        "vo": "lhcb",
    }
    with engine.begin() as conn:
        token = registry.enrol(conn, {"vo": "lhcb", "ce": "c1"}, clock.time())["enrolment_token"]
        vm = registry.register(conn, settings, token, body, clock.time())
        row = inventory.detail(conn, vm["vm_id"], clock.time())
    assert (row["vo"], row["image"], row["ce"]) == ("lhcb", "el9", "c1")


def test_claim_of_another_vo_is_403_over_http(manager):
    """Over HTTPS, a claim naming another VO than the enrolled one answers 403 with a clear detail."""
    vm = new_vm(manager, vo="lhcb-http")
    with pytest.raises(ManagerRefused) as err:
        vm["client"].claim(vm["vm_id"], free_cores=1, vo="cta-http")
    assert err.value.status == 403 and "registered with vo 'lhcb-http'" in err.value.detail


# --- capacity: free cores and memory come from the registration minus the leases -----------------


def test_claimed_free_cores_are_bounded_by_the_registration(world):
    """A 1-core VM claiming 300 free cores leases one single-core payload, not 300."""
    vm = _vm(world, cores=1)
    _submit(world, *({"id": f"p{i:03d}", "command": ["true"]} for i in range(300)))
    assert _claim(world, vm, free_cores=300, total_cores=300, max=300) == ["p000"]
    assert _claim(world, vm, free_cores=300, total_cores=300, max=300) == []


def test_cores_already_leased_are_not_free(world):
    """Cores of payloads leased to the VM count as busy across claims, whatever the VM says."""
    vm = _vm(world, cores=4)
    _submit(world, *({"id": f"p{i}", "command": ["true"], "cores": 3} for i in range(3)))
    assert _claim(world, vm, free_cores=4) == ["p0"]
    assert _claim(world, vm, free_cores=4) == []
    _result(world, vm, {"id": "p0", "outcome": "done"})
    assert _claim(world, vm, free_cores=4) == ["p1"]


def test_claimed_memory_is_bounded_by_the_registration_and_leases(world):
    """Memory beyond the registered total, less what is leased, is not offered."""
    vm = _vm(world, cores=8, memory=4000)
    _submit(
        world,
        {"id": "huge", "command": ["true"], "memory_mb": 5000, "priority": 9},
        *({"id": f"m{i}", "command": ["true"], "memory_mb": 3000} for i in range(2)),
    )
    assert _claim(world, vm, free_cores=8, free_memory_mb=10**6, max=5) == ["m0"]
    assert _claim(world, vm, free_cores=8, max=5) == []


def test_whole_node_payload_holds_every_registered_core(world):
    """A leased whole-node payload leaves no core free for a later claim."""
    vm = _vm(world, cores=4)
    _submit(
        world,
        {"id": "w", "command": ["true"], "whole_node": True, "priority": 9},
        {"id": "one", "command": ["true"]},
    )
    assert _claim(world, vm, free_cores=4) == ["w"]
    assert _claim(world, vm, free_cores=4, max=5) == []


def test_peek_is_bounded_by_the_registered_cores(world):
    """A peek lists only payloads that fit the registered cores, whatever the claim says."""
    vm = _vm(world, cores=2)
    _submit(
        world, {"id": "big", "command": ["true"], "cores": 8}, {"id": "small", "command": ["true"]}
    )
    assert _claim(world, vm, free_cores=64, total_cores=64, peek=True, max=10) == ["small"]


# --- results: times and cores within the lease ---------------------------------------------------


def _leased(world, cores=2, payload_cores=1, whole_node=False):
    vm = _vm(world, cores=cores)
    _submit(
        world, {"id": "p", "command": ["true"], "cores": payload_cores, "whole_node": whole_node}
    )
    assert _claim(world, vm, free_cores=cores) == ["p"]
    return vm


def test_result_within_the_lease_is_kept_as_reported(world):
    """A result consistent with its lease is recorded unchanged and counted in accounting."""
    vm = _leased(world, cores=4, payload_cores=2)
    start = world[2].time()
    world[2].advance(1800)
    answer = _result(
        world,
        vm,
        {
            "id": "p",
            "outcome": "done",
            "cores": 2,
            "wall_seconds": 1800.0,
            "cpu_seconds": 3500.0,
            "started_at": start + 1,
            "finished_at": start + 1800,
        },
    )
    assert answer == {}
    row = _row(world, "p")
    assert (row["cores"], row["wall_seconds"], row["cpu_seconds"]) == (2, 1800.0, 3500.0)
    with world[0].begin() as conn:
        (acc,) = accounting.report(conn, "ce", None, None, None, world[2].time() + 1)["rows"]
    assert acc["core_hours"] == pytest.approx(1.0) and acc["cpu_hours"] == pytest.approx(
        3500 / 3600
    )


@pytest.mark.parametrize(
    ("field", "value", "kept"),
    [
        ("wall_seconds", 1e15, 600.0),
        ("cores", 4096, 1),
        ("cpu_seconds", 1e15, 600.0),
    ],
)
def test_result_beyond_the_lease_is_bounded_and_said(world, field, value, kept):
    """An inflated wall time, core count or CPU time is counted at its lease bound, with the reason answered."""
    vm = _leased(world)
    world[2].advance(600)
    doc = {"id": "p", "outcome": "done", "cores": 1, "wall_seconds": 600.0, "cpu_seconds": 500.0}
    answer = _result(world, vm, dict(doc, **{field: value}))
    assert (
        list(answer["adjusted"]) == [field] and f"counted as {kept:g}" in answer["adjusted"][field]
    )
    row = _row(world, "p")
    assert (
        row[field] == kept and row["doc"][field] == value
    )  # the VM's own report is kept beside it
    with world[0].begin() as conn:
        (acc,) = accounting.report(conn, "ce", None, None, None, world[2].time() + 1)["rows"]
    assert acc["core_hours"] == pytest.approx(600 / 3600, abs=1e-5)


def test_whole_node_result_may_use_every_registered_core(world):
    """A whole-node payload's result may count the VM's registered cores, not more."""
    vm = _leased(world, cores=4, whole_node=True)
    world[2].advance(100)
    answer = _result(world, vm, {"id": "p", "outcome": "done", "cores": 4, "wall_seconds": 100.0})
    assert answer == {} and _row(world, "p")["cores"] == 4


@pytest.mark.parametrize(("started", "finished"), [(-86400, 10), (0, 86400), (50, 10)])
def test_times_outside_the_lease_window_are_bounded(world, started, finished):
    """started_at before the lease, finished_at in the future or before the start are said and bounded."""
    vm = _leased(world)
    leased_at = world[2].time()
    world[2].advance(60)
    answer = _result(
        world,
        vm,
        {
            "id": "p",
            "outcome": "done",
            "started_at": leased_at + started,
            "finished_at": leased_at + finished,
        },
    )
    assert answer["adjusted"]
    assert 0 <= _row(world, "p")["wall_seconds"] <= 60.0


def test_derived_wall_time_within_the_slack_is_kept(world):
    """A VM clock a few seconds ahead of the manager's is tolerated: nothing is adjusted."""
    vm = _leased(world)
    leased_at = world[2].time()
    world[2].advance(60)
    answer = _result(
        world,
        vm,
        {
            "id": "p",
            "outcome": "done",
            "started_at": leased_at + 5,
            "finished_at": leased_at + 64,
            "cpu_seconds": 60.0,
        },
    )
    assert answer == {} and _row(world, "p")["wall_seconds"] == 59.0
