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
import subprocess
import sys
import tempfile
import time
from typing import List

import yaml

from ..process import stop_child
from .children import check, read, wait_file, write
from .report import follow, print_summary, summarise
from .workload import agent_config, workload


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


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError

    if args.cores < 1 or args.payloads < 1 or args.seconds <= 0:
        raise UsageError("--cores and --payloads must be at least 1, --seconds above 0")
    workdir = args.workdir or tempfile.mkdtemp(prefix="vmagent-demo-")
    os.makedirs(workdir, exist_ok=True)
    procs: List[subprocess.Popen] = []
    try:
        return _run(args, workdir, procs)
    finally:
        for proc in reversed(procs):
            stop_child(proc, grace=10.0)


def _run(args: argparse.Namespace, workdir: str, procs: List[subprocess.Popen]) -> int:
    from ..client import ManagerClient

    me = [sys.executable, "-m", "vmagent"]
    if args.manager_url:
        url, token_file, ca = args.manager_url, args.admin_token, args.ca
    else:
        state = os.path.join(workdir, "manager")
        check([*me, "manager", "init", "--state-dir", state])
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
        url = wait_file(os.path.join(state, "url"), 30, procs[-1])
        token_file, ca = os.path.join(state, "admin.token"), os.path.join(state, "ca.pem")
    if not token_file:
        from ..errors import UsageError

        raise UsageError("--manager-url needs --admin-token")
    admin = ManagerClient(url, token=read(token_file), ca_file=ca)
    print(f"manager:   {url}  (dashboard {url}/dashboard/, admin token in {token_file})")
    payloads = workload(args.payloads, args.seconds, args.cores)
    for payload in payloads:
        admin.submit(payload)
    print(
        f"workload:  {len(payloads)} payloads, {args.seconds:g} CPU-seconds each, shapes "
        + ", ".join(f"{p['cores']}c" for p in payloads)
    )
    root = os.path.join(workdir, "vm")
    write(
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
        write(os.path.join(root, "etc/vmagent/ca.pem"), read(ca), 0o644)
    config_file = os.path.join(workdir, "vmagent.yaml")
    write(config_file, yaml.safe_dump(agent_config(root, url, args.cores), sort_keys=False), 0o644)
    print(f"agent:     {config_file} ({args.cores} cores), logs in {root}/var/log/vmagent")
    agent_log = open(os.path.join(workdir, "agent.log"), "ab")  # noqa: SIM115
    check([*me, "-c", config_file, "pilot", "run"], stderr=agent_log)
    print("pilot:     pipeline ok, slot manager launched")
    monitor = subprocess.Popen(
        [*me, "-c", config_file, "monitor", "run"],
        stdout=agent_log,
        stderr=agent_log,
        start_new_session=True,
    )
    procs.append(monitor)
    started = time.time()
    follow(admin, monitor, {p["id"] for p in payloads})
    summary = summarise(admin, [p["id"] for p in payloads], args.cores, started)
    print_summary(summary)
    if args.json:
        write(args.json, json.dumps(summary, indent=2, sort_keys=True), 0o644)
    if args.keep and not args.manager_url:
        print(f"manager still up at {url}/dashboard/ (Ctrl-C stops it)")
        try:
            procs[0].wait()
        except KeyboardInterrupt:
            pass
    return 0 if summary["failed"] == 0 and summary["vm_state"] == "halted" else 1
