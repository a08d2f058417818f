"""What the demo runs: a mix of payloads burning real CPU, and the local "VM"'s configuration."""

from __future__ import annotations

import sys
from typing import Any, Dict, List

BURN = (
    "import os, sys, time\n"
    "n, s = int(sys.argv[1]), float(sys.argv[2])\n"
    "kids = []\n"
    "for _ in range(n - 1):\n"
    "    pid = os.fork()\n"
    "    if pid == 0:\n"
    "        kids = None\n"
    "        break\n"
    "    kids.append(pid)\n"
    "end, x = time.time() + s, 0\n"
    "while time.time() < end:\n"
    "    x += sum(i * i for i in range(2000))\n"
    "if kids is None:\n"
    "    os._exit(0)\n"
    "for pid in kids:\n"
    "    os.waitpid(pid, 0)\n"
    "print(f'{n} cores busy for {s} s')\n"
)
MIX = (1, 1, 2, 1, 4, 1, 2, "whole", 1, 2, 1, 4)


def workload(payloads: int, seconds: float, cores: int) -> List[Dict[str, Any]]:
    """A mix of single-core, 2-core, 4-core and whole-node payloads doing real CPU work."""
    found = []
    for i in range(payloads):
        shape = MIX[i % len(MIX)]
        n = cores if shape == "whole" else min(int(shape), cores)
        found.append(
            {
                "id": f"demo-{i:03d}",
                "cores": n,
                "whole_node": shape == "whole",
                "kind": f"burn-{shape}",
                "command": [sys.executable, "-c", BURN, str(n), str(seconds)],
                "wall_estimate_seconds": seconds + 1,
                "wall_limit_seconds": seconds * 10 + 30,
                "tags": {"running_pod": "demo", "vo": "demo"},
            }
        )
    return found


def agent_config(root: str, url: str, cores: int) -> Dict[str, Any]:
    """The agent's configuration: a local profile, payloads from the manager at ``url``."""
    skipped = "not on a local machine"
    return {
        "instance": {
            "id": "demo-vm",
            "site": "DEMO.local",
            "ce": "local",
            "image": "this-machine",
            "running_pod": "demo",
            "vo": "demo",
        },
        "paths": {"root": root},
        "manager": {
            "url": url,
            "ca_file": "/etc/vmagent/ca.pem",
            "token_file": "/etc/vmagent/enrolment.token",
        },
        "pilot": {
            "commands": [
                {
                    "name": "check-node",
                    "options": {
                        "check_os": False,
                        "min_memory_mb_per_core": 100,
                        "min_scratch_free_mb": 100,
                    },
                },
                "check-credentials",
                {"name": "setup-disks", "skip": skipped},
                {
                    "name": "install-cvmfs",
                    "skip": skipped,
                    "options": {"repositories": ["dirac.egi.eu"]},
                },
                {"name": "install-dirac", "skip": skipped},
                {
                    "name": "configure-dirac",
                    "skip": skipped,
                    "options": {"cs_servers": ["dips://cs.invalid:9135"]},
                },
                "setup-mjf",
                "launch",
            ]
        },
        "mjf": {"grace_secs": 60},
        "slots": {"cores": cores, "source": "manager", "poll_seconds": 1, "wall_grace_seconds": 5},
        "monitor": {
            "period_seconds": 2,
            "check_seconds": 1,
            "jitter_fraction": 0.1,
            "halt_action": "exit",
            "endpoints": [{"name": "http"}, {"name": "log"}, {"name": "vac"}],
            "no_payloads_seconds": 5,
            "fizzle_seconds": 120,
        },
    }
