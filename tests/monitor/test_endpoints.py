"""The endpoints: log lines, vac files and PUTs, the reference manager over TLS; and their configuration."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys

import pytest
from conftest import Recorder, run_for

from vmagent.core import layout
from vmagent.errors import ConfigError, ManagerUnavailable, PluginError
from vmagent.monitor.endpoints.vac import VacEndpoint
from vmagent.monitor.loop import Monitor
from vmagent.monitor.policies import Decision
from vmagent.testing import make_config, write_config

DECISION = Decision("no-payloads", "no payload or pilot ran for 300 s", 200)


def local_monitor(tmp_path, clock, endpoints, **monitor):
    config = make_config(
        tmp_path,
        [],
        monitor={"endpoints": endpoints, "halt_action": "exit", "fizzle_seconds": None, **monitor},
    )
    return Monitor(
        config, clock=clock, rng=random.Random(1), halt_action=Recorder(), boot_time=clock.time()
    ), config


def test_log_endpoint_writes_json_lines_with_optional_samples(tmp_path, clock):
    """Two log endpoints at once: one keeps heartbeats, the other also the full sample; both record the halt."""
    monitor, config = local_monitor(
        tmp_path,
        clock,
        [
            {"name": "log"},
            {"name": "log", "options": {"path": "/var/log/full.jsonl", "sample": True}},
        ],
    )
    run_for(monitor, clock, 130)
    monitor.halt(DECISION)
    plain = [
        json.loads(x)
        for x in (tmp_path / "var/log/vmagent/heartbeats.jsonl").read_text().splitlines()
    ]
    full = [json.loads(x) for x in (tmp_path / "var/log/full.jsonl").read_text().splitlines()]
    assert [sorted(e) for e in plain] == [["heartbeat"]] * 4 + [["halting"]]
    assert "cpu_per_core" in full[0]["sample"] and plain[-1]["halting"]["vacuum_code"] == 200
    assert plain[-2]["heartbeat"]["status"] == "halting"


def test_vac_directory_gets_heartbeat_and_shutdown_message(tmp_path, clock):
    """The vac endpoint refreshes its heartbeat file and leaves a one-line shutdown_message without newline."""
    monitor, config = local_monitor(
        tmp_path,
        clock,
        [
            {
                "name": "vac",
                "options": {"joboutputs": "/joboutputs", "heartbeat_file": "vm-heartbeat"},
            }
        ],
    )
    run_for(monitor, clock, 5)
    beat = json.loads((tmp_path / "joboutputs/vm-heartbeat").read_text())
    assert beat["seq"] == 1 and beat["status"] == "running"
    monitor.halt(DECISION)
    assert (
        tmp_path / "joboutputs/shutdown_message"
    ).read_bytes() == b"200 no payload or pilot ran for 300 s"


def test_vac_takes_joboutputs_from_the_environment(tmp_path, monkeypatch):
    """Without an option the vac endpoint writes into $JOBOUTPUTS, as the vacuum platform sets it."""
    monkeypatch.setenv("JOBOUTPUTS", str(tmp_path / "outputs"))
    endpoint = VacEndpoint(make_config(tmp_path, []), {})
    endpoint.halting(Decision("lifetime", "lifetime of 3600 s reached", 100))
    assert (tmp_path / "outputs/shutdown_message").read_text() == "100 lifetime of 3600 s reached"


def test_vac_url_gets_puts_and_reports_outages(tmp_path, endpoint, clock):
    """An http joboutputs URL receives PUTs; while it is down the vac endpoint reports an outage."""
    vac = VacEndpoint(make_config(tmp_path, []), {"joboutputs": f"{endpoint.url}/jo/vm-1"})
    vac.send({"instance_id": "i-test", "seq": 4, "time": 1.0, "status": "running"}, {})
    vac.halting(DECISION)
    assert json.loads(endpoint.puts["/jo/vm-1/heartbeat"][0])["seq"] == 4
    assert endpoint.puts["/jo/vm-1/shutdown_message"] == [b"200 no payload or pilot ran for 300 s"]
    endpoint.down = True
    with pytest.raises(ManagerUnavailable):
        vac.halting(DECISION)


def test_unknown_endpoint_names_what_is_installed(tmp_path, clock):
    """An endpoint name nobody provides is refused before anything runs, listing the installed ones."""
    with pytest.raises(PluginError) as caught:
        local_monitor(tmp_path, clock, [{"name": "carrier-pigeon"}])
    assert "carrier-pigeon" in caught.value.message and "http, log, vac" in caught.value.message


def test_bad_endpoint_options_name_the_key(tmp_path, clock):
    """An option an endpoint does not know is a configuration error naming the key and what is allowed."""
    with pytest.raises(ConfigError) as caught:
        local_monitor(
            tmp_path, clock, [{"name": "log"}, {"name": "vac", "options": {"joboutput": "/x"}}]
        )
    assert any(
        path.startswith("monitor.endpoints.1.options") and "joboutput" in message + path
        for path, message in caught.value.problems
    )


@pytest.fixture(scope="module")
def manager(tmp_path_factory):
    """The reference manager over TLS on 127.0.0.1 (needs the manager extra)."""
    pytest.importorskip("fastapi", reason="the reference manager needs vmagent[manager]")
    from vmagent.manager.testing import start_manager

    running = start_manager(str(tmp_path_factory.mktemp("manager")), tls=True)
    yield running
    running.stop()


def vm_on(manager, root, clock, ca=True):
    """A monitor for a new VM enrolled with the reference manager; ``ca``: whether it knows the manager's CA."""
    etc = root / "etc/vmagent"
    etc.mkdir(parents=True)
    (etc / "enrol.token").write_text(manager.client().enrol(ce="ce-test")["enrolment_token"] + "\n")
    (etc / "enrol.token").chmod(0o600)
    shutil.copy(manager.ca_file, etc / "ca.pem")
    section = {"url": manager.url, "token_file": "/etc/vmagent/enrol.token", "timeout": 5}
    if ca:
        section["ca_file"] = "/etc/vmagent/ca.pem"
    config = make_config(
        root,
        [],
        instance={"id": f"i-{root.name}"},
        manager=section,
        monitor={"endpoints": [{"name": "http"}], "halt_action": "exit", "fizzle_seconds": None},
    )
    action = Recorder()
    return Monitor(
        config, clock=clock, rng=random.Random(3), halt_action=action, boot_time=clock.time()
    ), action


def test_reference_manager_register_heartbeat_drain_halt(manager, tmp_path, clock):
    """Against the reference manager over verified TLS: register, heartbeat, obey drain then halt, declare halting."""
    monitor, action = vm_on(manager, tmp_path / "vm", clock)
    run_for(monitor, clock, 5)
    vm_id = json.loads((tmp_path / "vm/var/lib/vmagent/manager.json").read_text())["vm_id"]
    admin = manager.client()
    assert admin.vm(vm_id)["instance_id"] == "i-vm"
    admin.instruct(vm_id, "drain", reason="test drain")
    run_for(monitor, clock, 70)
    assert os.path.exists(layout.drain_request(monitor.config)) and monitor.decision is None
    admin.instruct(vm_id, "halt", reason="test halt")
    decision = monitor.run()
    assert decision.policy == "instruction" and len(action.calls) == 1
    row = admin.vm(vm_id)
    assert row["state"].lower() == "halted" and row["vacuum_code"] == 100


def test_unverified_manager_certificate_is_an_outage_not_a_halt(manager, tmp_path, clock):
    """Without the manager's CA the TLS check fails: heartbeats count as missed, and the VM does not halt."""
    monitor, action = vm_on(manager, tmp_path / "vm2", clock, ca=False)
    run_for(monitor, clock, 600)
    assert monitor.decision is None and action.calls == []
    assert len(monitor.links[0].missed) >= 10 and monitor.links[0].last_ok is None


def test_vac_and_http_endpoints_do_not_import_requests():
    """Importing the vac and http endpoints (as the monitor does) leaves requests unloaded."""
    code = (
        "import sys, vmagent.monitor.endpoints.vac, vmagent.monitor.endpoints.http;"
        "assert 'requests' not in sys.modules, 'requests was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


REGISTER_IN_PROCESS = """
import subprocess, sys
from vmagent import config
from vmagent.monitor.endpoints.http import HttpEndpoint

def refuse(*args, **kwargs):
    raise AssertionError("the monitor started a child process")

subprocess.Popen.__init__ = refuse
endpoint = HttpEndpoint(config.load(sys.argv[1]), {})
endpoint.send({"instance_id": "i-inproc", "seq": 1, "time": 1.0, "status": "booting"}, {})
assert "requests" not in sys.modules, "requests was imported"
print(endpoint.vm_id)
"""


def test_http_endpoint_registers_in_process_without_requests(manager, tmp_path):
    """The http endpoint registers over its own session: no child process, no requests, one stored credential."""
    etc = tmp_path / "etc/vmagent"
    etc.mkdir(parents=True)
    (etc / "enrol.token").write_text(manager.client().enrol(ce="ce-in")["enrolment_token"])
    shutil.copy(manager.ca_file, etc / "ca.pem")
    section = {
        "url": manager.url,
        "token_file": "/etc/vmagent/enrol.token",
        "ca_file": "/etc/vmagent/ca.pem",
        "timeout": 5,
    }
    path = write_config(
        str(tmp_path), [], instance={"id": "i-inproc", "ce": "ce-in"}, manager=section
    )
    done = subprocess.run(
        [sys.executable, "-c", REGISTER_IN_PROCESS, path],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    vm_id = done.stdout.strip()
    stored = json.loads((tmp_path / "var/lib/vmagent/manager.json").read_text())
    assert stored["vm_id"] == vm_id and stored["url"] == manager.url
    row = manager.client().vm(vm_id)
    assert (row["instance_id"], row["ce"]) == ("i-inproc", "ce-in")


def test_http_endpoint_without_enrolment_token_is_an_outage(tmp_path):
    """An http endpoint with no stored credential and no token file reports an outage naming the key."""
    from vmagent.monitor.endpoints.http import HttpEndpoint

    config = make_config(tmp_path, [], manager={"url": "http://127.0.0.1:9"})
    with pytest.raises(ManagerUnavailable) as caught:
        HttpEndpoint(config, {}).send({"seq": 1}, {})
    assert "manager.token_file" in caught.value.message
