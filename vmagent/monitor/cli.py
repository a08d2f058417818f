"""``vmagent monitor run|sample``."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    monitor = subparsers.add_parser(
        "monitor", help="the watchdog: heartbeats, instructions, halt policies",
        description="Watch this VM, heartbeat to the configured endpoints, obey drain/halt/shutdown_at "
                    "and halt the VM by policy without losing payload output.")
    sub = monitor.add_subparsers(dest="monitor_command", metavar="ACTION", required=True)
    sub.add_parser("run", help="run until a policy or an instruction halts the VM").set_defaults(func=_run)
    sub.add_parser("sample", help="print one heartbeat body as JSON; sends nothing").set_defaults(func=_sample)


def _run(args: argparse.Namespace) -> int:
    from .. import config
    from .loop import Monitor

    decision = Monitor(config.load(args.config)).run()
    print(f"halted: {decision.message}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    import time

    from .. import config
    from .sampler import sample

    json.dump(sample(config.load(args.config), now=time.time(), seq=0, status="running", remaining=None),
              sys.stdout, indent=2, sort_keys=True)
    print()
    return 0
