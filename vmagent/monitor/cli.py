"""``vmagent monitor run|sample|units``: the watchdog's command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

UNITS = ("vmagent-monitor.service", "vmagent-slots.service", "vmagent-pilot.service")


def register(subparsers: Any) -> None:
    monitor = subparsers.add_parser(
        "monitor",
        help="the watchdog: heartbeats, instructions, halt policies",
        description="Watch this VM for its whole life: sample it with psutil, heartbeat to the configured "
        "endpoints (monitor.endpoints: http, vac, log), obey drain/halt/shutdown_at instructions and "
        "halt the VM by policy (monitor.*_seconds) without losing any payload's output.",
        epilog="Under systemd use the vmagent-monitor.service unit ('vmagent monitor units'). For a local "
        "try-out set monitor.halt_action to 'exit' so the host stays up.",
    )
    sub = monitor.add_subparsers(dest="monitor_command", metavar="ACTION", required=True)
    run = sub.add_parser(
        "run",
        help="run until a policy or an instruction halts the VM",
        description="Run the monitor loop. It stops without halting on SIGTERM or SIGINT; it "
        "halts (drain, stop payloads, shutdown_message, final heartbeat, halt action) "
        "when a policy fires or an endpoint says halt.",
    )
    run.add_argument(
        "--once",
        action="store_true",
        help="one pass: check the policies, heartbeat every endpoint once, obey what they answer, "
        "halt if that is the decision, then exit",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="send nothing and change nothing: print the heartbeat that would be sent and the "
        "decision the policies would take now",
    )
    run.set_defaults(func=_run)
    sample = sub.add_parser(
        "sample",
        help="print one full sample as JSON; sends nothing",
        description="Print what the monitor sees now (CPU per core, memory, disks, slots, "
        "pilots and their log ages, pipeline) and the heartbeat body made of it.",
    )
    sample.add_argument("--heartbeat", action="store_true", help="print only the heartbeat body")
    sample.add_argument(
        "--interval",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="measure CPU use over this many seconds (default 0.5)",
    )
    sample.set_defaults(func=_sample)
    units = sub.add_parser(
        "units",
        help="print or install the systemd units shipped with vmagent",
        description="Print the systemd units (Type=notify monitor with WatchdogSec, slot "
        "manager, pilot pipeline), or write them into a directory.",
    )
    units.add_argument(
        "--output", metavar="DIR", help="write the units into DIR (e.g. /etc/systemd/system)"
    )
    units.set_defaults(func=_units)


def _run(args: argparse.Namespace) -> int:
    from .. import config, config_check
    from .loop import Monitor

    # checked whole (check-config's checks, the same lines, exit 2) in a forked child, so that the
    # monitor, which lives as long as the VM, never holds the JSON Schema library
    path = args.config or config.default_path()
    monitor = Monitor(config_check.load_for_monitor(path))
    if args.dry_run:
        _dump(monitor.preview())
        return 0
    decision = monitor.run(once=args.once)
    if decision is not None:
        print(f"halted: {decision.message}")
    elif monitor.stop_signal is not None:
        print(f"stopped by signal {monitor.stop_signal}; the VM was not halted")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from .. import config
    from ..clock import SystemClock
    from ..core.instance import instance_id as detect_instance_id
    from .sampler import Sampler, heartbeat

    cfg = config.load(args.config)
    clock = SystemClock()
    sampler = Sampler(cfg, clock)
    clock.sleep(max(0.0, args.interval))
    found = sampler.take()
    body = heartbeat(
        found, instance_id=detect_instance_id(cfg), seq=0, status="running", remaining=None
    )
    _dump(body if args.heartbeat else {"sample": found, "heartbeat": body})
    return 0


def _units(args: argparse.Namespace) -> int:
    from importlib import resources

    from ..core.files import write_atomic

    folder = resources.files("vmagent.monitor").joinpath("units")
    for name in UNITS:
        text = folder.joinpath(name).read_text()
        if args.output:
            write_atomic(os.path.join(args.output, name), text, 0o644)
            print(f"wrote {os.path.join(args.output, name)}")
        else:
            print(f"# {name}\n{text}")
    if args.output:
        print("then: systemctl daemon-reload && systemctl enable --now vmagent-monitor.service")
    return 0


def _dump(doc: Any) -> None:
    json.dump(doc, sys.stdout, indent=2, sort_keys=True, default=str)
    print()
