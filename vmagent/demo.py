"""``vmagent demo``: a manager and an agent on this machine, running a real mixed workload.

The manager runs as its own process on loopback (SQLite in a temporary directory). The agent is a
"local VM": the pilot pipeline with a local profile (node check, MJF and slots for real; CVMFS, DIRAC
and disks skipped with the reason), the slot manager pulling payloads from the manager, and the
monitor heartbeating until its no-payloads policy halts the "VM" (halt action: exit).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import yaml

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


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="run a manager and an agent on this machine with a real workload",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--cores",
        type=int,
        default=max(4, os.cpu_count() or 1),
        help="cores of the local 'VM' (default: 4 or the CPU count; more than the real CPUs share them)",
    )
    demo.add_argument(
        "--payloads", type=int, default=12, help="payloads in the sample workload (default 12)"
    )
    demo.add_argument(
        "--seconds", type=float, default=4.0, help="CPU seconds per payload (default 4)"
    )
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep the manager and its dashboard up after the summary",
    )
    demo.add_argument("--workdir", help="keep everything here instead of a temporary directory")
    demo.add_argument("--manager-url", help="use this running manager instead of starting one")
    demo.add_argument("--admin-token", help="admin token file of that manager")
    demo.add_argument("--ca", help="CA bundle of that manager")
    demo.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    demo.set_defaults(func=run)


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
            "payload_grace_seconds": 5,
        },
    }


def run(args: argparse.Namespace) -> int:
    from .errors import UsageError

    if args.cores < 1 or args.payloads < 1 or args.seconds <= 0:
        raise UsageError("--cores and --payloads must be at least 1, --seconds above 0")
    workdir = args.workdir or tempfile.mkdtemp(prefix="vmagent-demo-")
    os.makedirs(workdir, exist_ok=True)
    procs: List[subprocess.Popen] = []
    try:
        return _run(args, workdir, procs)
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _run(args: argparse.Namespace, workdir: str, procs: List[subprocess.Popen]) -> int:
    from .client.manager import ManagerClient

    me = [sys.executable, "-m", "vmagent"]
    if args.manager_url:
        url, token_file, ca = args.manager_url, args.admin_token, args.ca
    else:
        state = os.path.join(workdir, "manager")
        _check([*me, "manager", "init", "--state-dir", state])
        log = open(os.path.join(workdir, "manager.log"), "ab")  # noqa: SIM115 - lives as long as the process
        procs.append(
            subprocess.Popen(
                [
                    *me,
                    "manager",
                    "serve",
                    "--state-dir",
                    state,
                    "--port",
                    "0",
                    "--heartbeat-period",
                    "2",
                    "--stall-after",
                    "30",
                ],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        )
        url = _wait_file(os.path.join(state, "url"), 30, procs[-1])
        token_file, ca = os.path.join(state, "admin.token"), os.path.join(state, "ca.pem")
    if not token_file:
        from .errors import UsageError

        raise UsageError("--manager-url needs --admin-token")
    admin = ManagerClient(url, token=_read(token_file), ca_file=ca)
    print(f"manager:   {url}  (dashboard {url}/dashboard/, admin token in {token_file})")
    payloads = workload(args.payloads, args.seconds, args.cores)
    for payload in payloads:
        admin.submit(payload)
    print(
        f"workload:  {len(payloads)} payloads, {args.seconds:g} CPU-seconds each, shapes "
        + ", ".join(f"{p['cores']}c" for p in payloads)
    )
    root = os.path.join(workdir, "vm")
    _write(
        os.path.join(root, "etc/vmagent/enrolment.token"),
        admin.enrol(
            site="DEMO.local",
            ce="local",
            image="this-machine",
            running_pod="demo",
            vo="demo",
            ttl_seconds=600,
        )["enrolment_token"],
        0o600,
    )
    if ca:
        _write(os.path.join(root, "etc/vmagent/ca.pem"), _read(ca), 0o644)
    config_file = os.path.join(workdir, "vmagent.yaml")
    _write(config_file, yaml.safe_dump(agent_config(root, url, args.cores), sort_keys=False), 0o644)
    print(f"agent:     {config_file} ({args.cores} cores), logs in {root}/var/log/vmagent")
    agent_log = open(os.path.join(workdir, "agent.log"), "ab")  # noqa: SIM115
    _check([*me, "-c", config_file, "pilot", "run"], stderr=agent_log)
    print("pilot:     pipeline ok, slot manager launched")
    monitor = subprocess.Popen(
        [*me, "-c", config_file, "monitor", "run"],
        stdout=agent_log,
        stderr=agent_log,
        start_new_session=True,
    )
    procs.append(monitor)
    started = time.time()
    _follow(admin, monitor, {p["id"] for p in payloads})
    summary = summarise(admin, [p["id"] for p in payloads], args.cores, started)
    _print_summary(summary)
    if args.json:
        _write(args.json, json.dumps(summary, indent=2, sort_keys=True), 0o644)
    if args.keep and not args.manager_url:
        print(f"manager still up at {url}/dashboard/ (Ctrl-C stops it)")
        try:
            procs[0].wait()
        except KeyboardInterrupt:
            pass
    return 0 if summary["failed"] == 0 and summary["vm_state"] == "halted" else 1


def _follow(admin: Any, monitor: subprocess.Popen, ids: set) -> None:
    """Print payloads as they finish until the monitor has halted the 'VM'; Ctrl-C asks for a halt."""
    seen: set = set()
    halting = False
    while True:
        try:
            for payload in admin.payloads(limit=1000):
                if payload["id"] in ids and payload["id"] not in seen and payload.get("outcome"):
                    seen.add(payload["id"])
                    print(
                        f"  {len(seen):3d}/{len(ids)} {payload['id']} {payload['outcome']:<6} "
                        f"{payload['cores']} core(s) on {payload.get('vm_id')}",
                        flush=True,
                    )
            if monitor.poll() is not None:
                return
            time.sleep(1)
        except KeyboardInterrupt:
            if halting:
                raise
            halting = True
            print(
                "\nCtrl-C: asking the VM to halt (payloads get SIGTERM and a grace period); "
                "Ctrl-C again to kill everything",
                flush=True,
            )
            for vm in admin.vms():
                if vm["state"] not in ("halted", "error"):
                    admin.instruct(vm["id"], "halt", reason="Ctrl-C in vmagent demo")


def summarise(admin: Any, ids: List[str], cores: int, started: float) -> Dict[str, Any]:
    """The demo's figures, all taken from the manager's own records."""
    records = [admin.payload(pid) for pid in ids]
    results = [r["results"][-1]["doc"] for r in records if r.get("results")]
    outcomes = {
        o: sum(1 for r in records if r.get("outcome") == o)
        for o in ("done", "failed", "killed", "lost")
    }
    first = min((r["started_at"] for r in results if r.get("started_at")), default=started)
    last = max((r["finished_at"] for r in results if r.get("finished_at")), default=first)
    busy = sum(r["cores"] * r["wall_seconds"] for r in results if r["outcome"] == "done")
    waits = sorted(
        res["started_at"] - rec["submitted_at"]
        for rec, res in ((rec, rec["results"][-1]["doc"]) for rec in records if rec.get("results"))
        if res["cores"] > 1 and res.get("started_at")
    )
    vm: Dict[str, Any] = next((v for v in admin.vms() if v.get("instance_id") == "demo-vm"), {})
    return {
        "payloads": len(ids),
        **outcomes,
        "cores": cores,
        "makespan_seconds": round(last - first, 2),
        "utilisation": round(busy / (cores * (last - first)), 3) if last > first else 0.0,
        "multicore_wait_p50": round(waits[len(waits) // 2], 2) if waits else None,
        "multicore_wait_max": round(waits[-1], 2) if waits else None,
        "vm_id": vm.get("id"),
        "vm_state": vm.get("state"),
        "halt_reason": vm.get("halt_message"),
        "vacuum_code": vm.get("vacuum_code"),
    }


def _print_summary(s: Dict[str, Any]) -> None:
    print("\nsummary (from the manager's records)")
    print(
        f"  payloads      {s['done']} done, {s['failed']} failed, {s['killed']} killed, {s['lost']} lost "
        f"of {s['payloads']}"
    )
    print(
        f"  utilisation   {s['utilisation']:.0%} of {s['cores']} cores over {s['makespan_seconds']:g} s"
    )
    if s["multicore_wait_p50"] is not None:
        print(
            f"  multicore     waited {s['multicore_wait_p50']:g} s (median), {s['multicore_wait_max']:g} s (max)"
        )
    print(
        f"  VM            {s['vm_id']} {s['vm_state']}: {s['halt_reason']} (vacuum code {s['vacuum_code']})"
    )


def _check(argv: List[str], stderr: Any = None) -> None:
    from .errors import CommandFailed

    done = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr or subprocess.PIPE,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        tail = (done.stderr or "").strip()[-500:]
        raise CommandFailed(
            f"{' '.join(argv[3:6])} failed with {done.returncode}: {tail}",
            hint="see agent.log in the demo directory",
        )


def _wait_file(path: str, timeout: float, proc: subprocess.Popen) -> str:
    from .errors import CommandFailed

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.exists(path):
            return _read(path)
        time.sleep(0.1)
    raise CommandFailed(
        f"the manager did not start (no {path})", hint="see manager.log in the demo directory"
    )


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read().strip()


def _write(path: str, text: str, mode: int) -> None:
    from .core.files import write_atomic

    write_atomic(path, text + ("" if text.endswith("\n") else "\n"), mode)


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> Optional[int]:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc.wait()
