"""Enrolment tokens for several VMs (a vacuum platform's machinetype): counted, bounded, revocable."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading

import pytest

from vmagent.clock import FakeClock
from vmagent.errors import ManagerRefused
from vmagent.manager import auth, db, registry
from vmagent.manager.settings import Settings
from vmagent.manager.testing import heartbeat

FIXED = {"site": "VAC.Example.uk", "running_pod": "lhcb-vac", "vo": "lhcb"}


def body(instance_id: str, **extra) -> dict:
    """A registration body for one VM."""
    return (
        dict(instance_id=instance_id, hostname="h", ip="10.0.0.9", total_cores=1, total_memory_mb=1)
        | extra
    )


def cli(manager, *args: str) -> subprocess.CompletedProcess:
    """``vmagent manager ARGS --state-dir`` of the running manager, in a child."""
    return subprocess.run(
        [sys.executable, "-m", "vmagent", "manager", *args, "--state-dir", manager.state_dir],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_token_for_n_vms_registers_n_each_with_its_own_credential(manager):
    """A token of 3 uses registers 3 VMs with distinct credentials, then is refused."""
    admin = manager.client()
    answer = admin.enrol(uses=3, ttl_seconds=600, **FIXED)
    assert answer["uses"] == 3
    shared = admin.with_token(answer["enrolment_token"])
    vms = [shared.register(**body(f"i-vac-{n}")) for n in range(3)]
    assert len({vm["token"] for vm in vms}) == 3
    for n, vm in enumerate(vms):
        admin.with_token(vm["token"]).heartbeat(vm["vm_id"], heartbeat(f"i-vac-{n}", 1))
    with pytest.raises(ManagerRefused) as err:
        shared.register(**body("i-vac-4"))
    assert err.value.status == 401 and "already registered its 3 VMs" in err.value.detail
    listed = admin._call("GET", "/enrolments")["enrolments"]
    mine = [row for row in listed if row["id"] == answer["id"]]
    assert mine[0]["state"] == "used" and mine[0]["uses"] == 3


def test_token_for_several_vms_fixes_site_and_community(manager):
    """A token of several uses must fix site and RunningPod or VO, and refuses VMs naming others."""
    admin = manager.client()
    with pytest.raises(ManagerRefused) as err:
        admin.enrol(uses=5, vo="lhcb")
    assert err.value.status == 422 and "site" in err.value.detail
    shared = admin.with_token(admin.enrol(uses=5, **FIXED)["enrolment_token"])
    with pytest.raises(ManagerRefused) as err:
        shared.register(**body("i-thief", running_pod="atlas-prod"))
    assert err.value.status == 403 and "running_pod" in err.value.detail


def test_concurrent_registrations_never_pass_the_limit(manager):
    """Eight VMs registering at once with a token of 3 uses: exactly 3 are registered."""
    admin = manager.client()
    token = admin.enrol(uses=3, **FIXED)["enrolment_token"]
    answers: list = []

    def one(n: int) -> None:
        try:
            answers.append(admin.with_token(token).register(**body(f"i-race-{n}")))
        except ManagerRefused as exc:
            answers.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    registered = [a for a in answers if isinstance(a, dict)]
    assert len(answers) == 8 and len(registered) == 3, answers


def test_operator_enrols_lists_and_revokes_from_the_command_line(manager, tmp_path):
    """'enrol --uses --expires' makes a token; 'revoke-enrolment' stops it; 'enrolments' shows so."""
    out = tmp_path / "token"
    done = cli(manager, "enrol", "--uses", "4", "--expires", "2h", "-o", str(out), *_fixed_args())
    assert done.returncode == 0, done.stderr
    assert "for 4 VMs" in done.stderr
    enrolment_id = done.stderr.split("enrolment ", 2)[-1].split(":")[0]
    shared = manager.client().with_token(out.read_text().strip())
    shared.register(**body("i-cli-1"))
    done = cli(manager, "revoke-enrolment", enrolment_id)
    assert done.returncode == 0, done.stderr
    with pytest.raises(ManagerRefused) as err:
        shared.register(**body("i-cli-2"))
    assert err.value.status == 401 and "revoked" in err.value.detail
    done = cli(manager, "enrolments")
    assert done.returncode == 0, done.stderr
    row = [line for line in done.stdout.splitlines() if line.startswith(enrolment_id)]
    assert row and "revoked" in row[0]
    assert cli(manager, "enrol", "--expires", "soon").returncode == 2


def _fixed_args() -> list:
    return ["--site", FIXED["site"], "--running-pod", FIXED["running_pod"]]


def test_token_for_several_vms_expires(tmp_path):
    """A token of several uses registers nothing after its lifetime, whatever uses are left."""
    engine = db.make_engine(f"sqlite:///{tmp_path}/m.db")
    db.create_all(engine)
    settings = Settings(db_url="", admin_token_hash=auth.digest("admin"), vm_token_ttl=3600)
    clock = FakeClock()
    with engine.begin() as conn:
        enrolled = registry.enrol(conn, {"ttl_seconds": 60, "uses": 10, **FIXED}, clock.time())
        registry.register(conn, settings, enrolled["enrolment_token"], body("i-1"), clock.time())
    clock.advance(61)
    with engine.begin() as conn, pytest.raises(ManagerRefused) as err:
        registry.register(conn, settings, enrolled["enrolment_token"], body("i-2"), clock.time())
    assert err.value.status == 401 and "expired" in err.value.detail


OLD_ENROLMENTS = """CREATE TABLE enrolments (
    token_hash VARCHAR(64) NOT NULL PRIMARY KEY, site VARCHAR(256) NOT NULL,
    ce VARCHAR(256) NOT NULL, image VARCHAR(256) NOT NULL, running_pod VARCHAR(256) NOT NULL,
    vo VARCHAR(256) NOT NULL, created_at FLOAT NOT NULL, expires_at FLOAT NOT NULL,
    used_at FLOAT, vm_id VARCHAR(64))"""


def test_database_of_the_first_release_keeps_working(tmp_path):
    """An existing database gets the new columns: its used token stays used, its fresh one works once."""
    path = tmp_path / "old.db"
    used, fresh = auth.new_token("enrolment"), auth.new_token("enrolment")
    with sqlite3.connect(path) as old:
        old.execute(OLD_ENROLMENTS)
        for token, used_at in ((used, 5.0), (fresh, None)):
            old.execute(
                "INSERT INTO enrolments VALUES (?, '', '', '', '', '', 1.0, 1e12, ?, NULL)",
                (auth.digest(token), used_at),
            )
    engine = db.make_engine(f"sqlite:///{path}")
    db.create_all(engine)
    db.create_all(engine)  # a second manager process starting later changes nothing
    settings = Settings(db_url="", admin_token_hash=auth.digest("admin"), vm_token_ttl=3600)
    with engine.begin() as conn, pytest.raises(ManagerRefused) as err:
        registry.register(conn, settings, used, body("i-old"), 10.0)
    assert "already used" in err.value.detail
    with engine.begin() as conn:
        registry.register(conn, settings, fresh, body("i-new"), 10.0)
    with engine.begin() as conn, pytest.raises(ManagerRefused) as err:
        registry.register(conn, settings, fresh, body("i-again"), 10.0)
    assert "already used" in err.value.detail
