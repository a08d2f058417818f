"""``vmagent pool run|status|submit``."""

from __future__ import annotations

import argparse
import json
import os
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    pool = subparsers.add_parser(
        "pool",
        help="the slot manager: run payloads on this VM's cores",
        description="Pull payloads from a source and pack them onto the VM's cores.",
    )
    sub = pool.add_subparsers(dest="pool_command", metavar="ACTION", required=True)
    run = sub.add_parser(
        "run", help="run the slot manager in the foreground until drained or stopped"
    )
    run.add_argument(
        "--exit-when-idle", action="store_true", help="leave once nothing waits and nothing runs"
    )
    run.set_defaults(func=_run)
    sub.add_parser("status", help="print the slot manager's state file").set_defaults(func=_status)
    submit = sub.add_parser(
        "submit", help="put payload descriptions (JSON file: one or a list) into the spool"
    )
    submit.add_argument("file")
    submit.set_defaults(func=_submit)
    sub.add_parser("drain", help="ask the slot manager to start nothing new").set_defaults(
        func=_drain
    )


def _run(args: argparse.Namespace) -> int:
    from .. import config
    from .slots import SlotManager

    overrides = {"slots.exit_when_idle": True} if args.exit_when_idle else None
    return SlotManager(config.load(args.config, overrides=overrides)).run()


def _status(args: argparse.Namespace) -> int:
    from .. import config
    from ..core import layout
    from . import state

    loaded = config.load(args.config)
    found, problems = state.read(loaded)
    for problem in problems:
        print(f"{layout.pool_state(loaded)}: {problem}", file=sys.stderr)
    if found is None:
        print("no usable slot manager state" if problems else "no slot manager state yet")
        return 1
    json.dump(found, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


def _submit(args: argparse.Namespace) -> int:
    from .. import config
    from ..core.files import write_atomic
    from ..errors import InputRejected
    from .sources import as_list, validated

    loaded = config.load(args.config)
    try:
        with open(args.file, encoding="utf-8") as fh:
            documents = as_list(json.load(fh))
    except (OSError, ValueError) as exc:
        raise InputRejected(f"{args.file}: {exc}") from None
    payloads = [
        validated(doc, f"{args.file}[{i}]") for i, doc in enumerate(documents)
    ]  # all or nothing
    incoming = os.path.join(loaded.path("slots.spool_dir"), "incoming")
    for payload in payloads:
        write_atomic(os.path.join(incoming, f"{payload['id']}.json"), json.dumps(payload), 0o644)
    print(f"queued {len(payloads)} payload(s) in {incoming}")
    return 0


def _drain(args: argparse.Namespace) -> int:
    from .. import config
    from ..core import drain, layout

    loaded = config.load(args.config)
    made = drain.request(loaded, "requested from the command line", dirac=False)
    already = "" if made else "already "
    print(f"drain {already}requested ({layout.drain_request(loaded)})")
    return 0
