"""Credentials: one VM can never act as another; missing, unknown, expired or revoked ones are refused."""

from __future__ import annotations

import pytest
import requests

from vmagent.clock import FakeClock
from vmagent.errors import ManagerRefused
from vmagent.manager import auth, db, registry
from vmagent.manager.settings import Settings
from vmagent.manager.testing import heartbeat, new_vm

VM_ROUTES = [
    ("POST", "/vms/{vm}/heartbeat", "heartbeat"),
    ("POST", "/vms/{vm}/claim", {"free_cores": 1}),
    ("POST", "/vms/{vm}/halting", {"reason": "x"}),
    ("POST", "/vms/{vm}/payloads/p1/result", {"id": "p1", "outcome": "done"}),
]
ADMIN_ROUTES = [
    ("GET", "/vms", None),
    ("GET", "/vms/{vm}", None),
    ("POST", "/vms/{vm}/instructions", {"action": "drain"}),
    ("POST", "/payloads", {"id": "x", "command": ["true"]}),
    ("GET", "/payloads", None),
    ("GET", "/accounting", None),
    ("POST", "/enrolments", {}),
    ("POST", "/vms/{vm}/revoke", None),
    ("GET", "/fleet/load", None),
]


def _call(manager, method, path, body, token, vm):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body == "heartbeat":
        body = heartbeat(vm["instance_id"], 1)
    return requests.request(
        method,
        f"{manager.url}/api/v1{path.format(vm=vm['vm_id'])}",
        json=body,
        headers=headers,
        verify=manager.ca_file,
        timeout=10,
    )


@pytest.mark.parametrize(("method", "path", "body"), VM_ROUTES)
def test_vm_credential_cannot_act_for_another_vm(manager, method, path, body):
    """VM A's token on VM B's routes is refused with 403, and B's state is untouched."""
    a, b = new_vm(manager), new_vm(manager)
    body = heartbeat(b["instance_id"], 1) if body == "heartbeat" else body
    answer = requests.request(
        method,
        f"{manager.url}/api/v1{path.format(vm=b['vm_id'])}",
        json=body,
        headers={"Authorization": f"Bearer {a['token']}"},
        verify=manager.ca_file,
        timeout=10,
    )
    assert answer.status_code == 403 and "another VM" in answer.json()["detail"]
    assert manager.client().vm(b["vm_id"])["heartbeats"] == []


@pytest.mark.parametrize(("method", "path", "body"), VM_ROUTES + ADMIN_ROUTES)
@pytest.mark.parametrize("token", [None, "vmv_not-a-real-token", "Basic"])
def test_missing_or_unknown_credential_is_refused(manager, method, path, body, token):
    """No token, or one the manager never issued, answers 401 on every protected route."""
    vm = new_vm(manager)
    answer = _call(manager, method, path, body, token, vm)
    assert answer.status_code == 401, answer.text


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
def test_admin_routes_refuse_vm_credentials(manager, method, path, body):
    """A VM's own valid token is refused with 403 on every operator route."""
    vm = new_vm(manager)
    answer = _call(manager, method, path, body, vm["token"], vm)
    assert answer.status_code == 403 and "admin" in answer.json()["detail"]


def test_revoked_credential_is_refused(manager):
    """After revocation, the VM's token no longer heartbeats or claims."""
    vm = new_vm(manager)
    vm["client"].heartbeat(vm["vm_id"], heartbeat(vm["instance_id"], 1))
    manager.client()._call("POST", f"/vms/{vm['vm_id']}/revoke")
    for call in (
        lambda: vm["client"].heartbeat(vm["vm_id"], heartbeat(vm["instance_id"], 2)),
        lambda: vm["client"].claim(vm["vm_id"], free_cores=1),
    ):
        with pytest.raises(ManagerRefused) as err:
            call()
        assert err.value.status == 401 and "revoked" in err.value.detail


def test_enrolment_token_is_single_use_and_cannot_heartbeat(manager):
    """An enrolment token registers one VM only and is not a VM credential."""
    admin = manager.client()
    token = admin.enrol(ce="x")["enrolment_token"]
    enrolled = admin.with_token(token)
    vm = enrolled.register(
        instance_id="i-once", hostname="h", ip="10.0.0.9", total_cores=1, total_memory_mb=1
    )
    with pytest.raises(ManagerRefused) as err:
        enrolled.register(
            instance_id="i-twice", hostname="h", ip="10.0.0.9", total_cores=1, total_memory_mb=1
        )
    assert err.value.status == 401 and "already used" in err.value.detail
    with pytest.raises(ManagerRefused) as err:
        enrolled.heartbeat(vm["vm_id"], heartbeat("i-once", 1))
    assert err.value.status == 403


def test_vm_credential_cannot_register_or_enrol(manager):
    """A VM token can neither register another VM nor mint enrolment tokens."""
    vm = new_vm(manager)
    with pytest.raises(ManagerRefused) as err:
        vm["client"].register(
            instance_id="i-x", hostname="h", ip="1.2.3.4", total_cores=1, total_memory_mb=1
        )
    assert err.value.status == 403
    with pytest.raises(ManagerRefused) as err:
        vm["client"].enrol(ce="x")
    assert err.value.status == 403


def _engine_and_settings(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path}/m.db")
    db.create_all(engine)
    return engine, Settings(
        db_url="", admin_token_hash=auth.digest("admin-secret"), vm_token_ttl=3600
    )


def test_expired_vm_credential_is_refused(tmp_path):
    """A VM credential past its lifetime is refused with 401 even though it matches."""
    engine, settings = _engine_and_settings(tmp_path)
    clock = FakeClock()
    with engine.begin() as conn:
        vm = registry.register(
            conn,
            settings,
            "admin-secret",
            {
                "instance_id": "i-1",
                "hostname": "h",
                "ip": "1.1.1.1",
                "total_cores": 1,
                "total_memory_mb": 1,
            },
            clock.time(),
        )
        assert (
            registry.authenticate_vm(conn, settings, vm["vm_id"], vm["token"], clock.time()).id
            == vm["vm_id"]
        )
    clock.advance(3601)
    with engine.begin() as conn, pytest.raises(ManagerRefused) as err:
        registry.authenticate_vm(conn, settings, vm["vm_id"], vm["token"], clock.time())
    assert err.value.status == 401 and "expired" in err.value.detail


def test_expired_enrolment_token_is_refused(tmp_path):
    """An enrolment token past its ttl registers nothing."""
    engine, settings = _engine_and_settings(tmp_path)
    clock = FakeClock()
    with engine.begin() as conn:
        token = registry.enrol(conn, {"ttl_seconds": 60}, clock.time())["enrolment_token"]
    clock.advance(61)
    body = {
        "instance_id": "i-1",
        "hostname": "h",
        "ip": "1.1.1.1",
        "total_cores": 1,
        "total_memory_mb": 1,
    }
    with engine.begin() as conn, pytest.raises(ManagerRefused) as err:
        registry.register(conn, settings, token, body, clock.time())
    assert err.value.status == 401 and "expired" in err.value.detail


def test_credentials_are_stored_only_as_digests(tmp_path):
    """Neither the VM token nor the enrolment token appears in the database."""
    engine, settings = _engine_and_settings(tmp_path)
    with engine.begin() as conn:
        token = registry.enrol(conn, {}, 1.0)["enrolment_token"]
        vm = registry.register(
            conn,
            settings,
            token,
            {
                "instance_id": "i-1",
                "hostname": "h",
                "ip": "1.1.1.1",
                "total_cores": 1,
                "total_memory_mb": 1,
            },
            1.0,
        )
    engine.dispose()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("m.db*"))
    assert token.encode() not in raw and vm["token"].encode() not in raw
    assert auth.digest(vm["token"]).encode() in raw
