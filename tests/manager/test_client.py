"""The manager client and ``vm_credentials`` against a real manager."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import stat

import pytest

from vmagent.client.manager import ManagerClient, vm_credentials
from vmagent.errors import ConfigError, ManagerRefused, ManagerUnavailable
from vmagent.manager.testing import free_port
from vmagent.testing import make_config


def _install(root, manager, token):
    """Place the enrolment token and CA where a VM has them (paths inside the VM, below the root)."""
    etc = os.path.join(root, "etc/vmagent")
    os.makedirs(etc, exist_ok=True)
    with open(os.path.join(etc, "enrol.token"), "w") as fh:
        fh.write(token + "\n")
    shutil.copy(manager.ca_file, os.path.join(etc, "ca.pem"))
    return {
        "url": manager.url,
        "ca_file": "/etc/vmagent/ca.pem",
        "token_file": "/etc/vmagent/enrol.token",
    }


def _config(root, manager, token):
    section = _install(str(root), manager, token)
    return make_config(
        str(root), instance={"id": "i-cred-test", "ce": "ce-x", "image": "img-x"}, manager=section
    )


def _credentials(args):
    root, section = args
    return vm_credentials(make_config(root, instance={"id": "i-race"}, manager=section))


def test_vm_credentials_registers_once_and_stores_mode_0600(manager, tmp_path):
    """The first call registers with the enrolment token; the second reads the stored credential."""
    token = manager.client().enrol(ce="ce-x")["enrolment_token"]
    config = _config(tmp_path, manager, token)
    first = vm_credentials(config)
    assert first == vm_credentials(config)
    stored = tmp_path / "var/lib/vmagent/manager.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert json.loads(stored.read_text())["vm_id"] == first[0]
    row = manager.client().vm(first[0])
    assert (row["instance_id"], row["ce"]) == ("i-cred-test", "ce-x")
    # from_config now carries the VM's own token.
    answer = ManagerClient.from_config(config).heartbeat(
        first[0], {"instance_id": "i-cred-test", "seq": 1, "time": 1.0, "status": "booting"}
    )
    assert answer["instructions"] == []


def test_concurrent_processes_register_only_once(manager, tmp_path):
    """Four processes racing for credentials share one registration (the enrolment token is single use)."""
    token = manager.client().enrol()["enrolment_token"]
    args = (str(tmp_path), _install(str(tmp_path), manager, token))
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        answers = pool.map(_credentials, [args] * 4)
    assert len(set(answers)) == 1


def test_refusal_and_unavailability_are_told_apart(manager):
    """A 4xx raises ManagerRefused with the detail; a closed port raises ManagerUnavailable."""
    with pytest.raises(ManagerRefused) as err:
        manager.client(token="vmv_wrong").vms()
    assert err.value.status == 401 and "unknown credential" in err.value.detail
    with pytest.raises(ManagerUnavailable):
        ManagerClient(f"http://127.0.0.1:{free_port()}", token="x", timeout=2).vms()


def test_missing_token_file_is_a_config_error(manager, tmp_path):
    """Registering without manager.token_file names the missing key."""
    config = make_config(str(tmp_path), manager={"url": manager.url})
    with pytest.raises(ConfigError) as err:
        vm_credentials(config)
    assert "manager.token_file" in err.value.message


def test_registration_time_comes_from_the_injected_clock(manager, tmp_path, clock):
    """The stored credential's registered_at is the injected clock's time, not the real one."""
    token = manager.client().enrol(ce="ce-x")["enrolment_token"]
    config = _config(tmp_path, manager, token)
    vm_credentials(config, clock=clock)
    stored = json.loads((tmp_path / "var/lib/vmagent/manager.json").read_text())
    assert stored["registered_at"] == clock.time()
