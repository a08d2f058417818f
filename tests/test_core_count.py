"""One core count everywhere: with ``slots.cores: 8`` on a 2-core machine, every part says 8."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from vmagent import mjf
from vmagent.client.registration import registration
from vmagent.config import load
from vmagent.core import capacity

CORES = capacity.usable_cpus() + 6  # 8 on the 2-core test machine: never the CPU count


def test_registration_dirac_mjf_and_slot_manager_agree(tmp_path):
    """Registration, configure-dirac's dry-run argv, setup-mjf's machine features (legacy keys too)
    and the slot manager's state all give slots.cores, not this machine's CPUs."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('ID="almalinux"\nVERSION_ID="9.4"\n')
    (root / "opt/dirac").mkdir(parents=True)
    (root / "opt/dirac/diracosrc").write_text("")
    cfg = tmp_path / "vmagent.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "instance": {"id": "i-cores", "site": "CLOUD.Test.org", "ce": "test-cloud"},
                "paths": {"root": str(root)},
                "slots": {"cores": CORES, "memory_mb": 2000, "exit_when_idle": True},
                "pilot": {
                    "commands": [
                        {
                            "name": "install-dirac",
                            "options": {"env_script": "/opt/dirac/diracosrc"},
                        },
                        {
                            "name": "configure-dirac",
                            "options": {
                                "cs_servers": ["dips://cs.example.org:9135/Configuration/Server"]
                            },
                        },
                        {"name": "setup-mjf"},
                    ]
                },
            }
        )
    )
    vmagent = [sys.executable, "-m", "vmagent", "-c", str(cfg)]
    config = load(str(cfg))

    assert registration(config, "https://manager.example.org")["total_cores"] == CORES

    dry = subprocess.run(
        vmagent + ["pilot", "run", "--dry-run"], capture_output=True, text=True, timeout=120
    )
    assert dry.returncode == 0, dry.stderr
    configure = next(line for line in dry.stdout.splitlines() if "dirac-configure" in line)
    assert f"/LocalSite/NumberOfProcessors={CORES} " in configure + " "
    assert f"Tag={CORES}Processors" in configure
    assert not os.path.exists(mjf.machine_dir(config))  # a dry run writes nothing

    subprocess.run(vmagent + ["mjf", "write"], check=True, capture_output=True, timeout=60)
    machine = mjf.read_features(mjf.machine_dir(config)).values
    assert {
        k: machine[k] for k in ("total_cpu", "log_cores", "phys_cores", "jobslots")
    } == dict.fromkeys(("total_cpu", "log_cores", "phys_cores", "jobslots"), CORES)

    pool = subprocess.run(vmagent + ["pool", "run"], capture_output=True, text=True, timeout=120)
    assert pool.returncode == 0, pool.stderr
    state = json.loads((root / "var/lib/vmagent/pool/state.json").read_text())
    assert state["total_cores"] == CORES and state["free_cores"] == CORES
