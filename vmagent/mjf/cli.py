"""``vmagent mjf write|show|serve``."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    mjf = subparsers.add_parser(
        "mjf",
        help="Machine/Job Features: write, show, serve",
        description="Machine/Job Features (HSF-TN-2016-02): one file per key.",
    )
    sub = mjf.add_subparsers(dest="mjf_command", metavar="ACTION", required=True)
    write = sub.add_parser("write", help="write this VM's machine features from the configuration")
    write.add_argument(
        "--root", help="write below this directory instead of the configured state dir"
    )
    write.set_defaults(func=_write)
    show = sub.add_parser(
        "show", help="table of keys, values and units; what is missing or malformed"
    )
    show.add_argument(
        "location",
        nargs="?",
        help="features directory or http(s) URL (default: $MACHINEFEATURES, then $JOBFEATURES)",
    )
    show.add_argument("--job", help="also read this job features directory or URL")
    show.set_defaults(func=_show)
    serve = sub.add_parser("serve", help="serve a features tree read-only over loopback HTTP")
    serve.add_argument("root", help="directory holding machine/ and jobs/")
    serve.add_argument("--port", type=int, default=0)
    serve.set_defaults(func=_serve)


def _write(args: argparse.Namespace) -> int:
    from .. import config
    from ..clock import SystemClock
    from ..pilot import Actions, Context
    from .command import SetupMjf

    overrides = {"paths.root": args.root} if args.root else None
    loaded = config.load(args.config, overrides=overrides)
    ctx = Context(
        config=loaded,
        instance_id="local",
        options={},
        facts={},
        env={},
        clock=SystemClock(),
        deadline=float("inf"),
        actions=Actions(False),
        step="mjf write",
    )
    result = SetupMjf().run(ctx)
    print(f"machine features written to {result.env['MACHINEFEATURES']}")
    return 0


def _show(args: argparse.Namespace) -> int:
    import os

    from ..clock import SystemClock
    from ..errors import UsageError
    from .features import JOB_KEYS, LEGACY_KEYS, MACHINE_KEYS, UNITS, read_features

    locations = [
        loc
        for loc in (
            args.location or os.environ.get("MACHINEFEATURES"),
            args.job or os.environ.get("JOBFEATURES"),
        )
        if loc
    ]
    if not locations:
        raise UsageError("no features location: give a directory or URL, or set $MACHINEFEATURES")
    bad, seen = 0, set()
    clock = SystemClock()
    for location in locations:
        found = read_features(location, now=clock.time(), clock=clock)
        problems = dict(found.problems)
        print(f"# {location}")
        print(f"{'key':<20} {'value':<24} unit")
        for key in MACHINE_KEYS + JOB_KEYS + LEGACY_KEYS + ("db12",):
            if key in found.values:
                seen.add(key)
                print(f"{key:<20} {str(found.values[key]):<24} {UNITS[key]}")
            elif key in problems:
                bad += 1
                print(f"{key:<20} {'MALFORMED':<24} {problems[key]}")
    missing = [k for k in MACHINE_KEYS + JOB_KEYS if k not in seen]
    if missing:
        print(f"# not provided: {', '.join(missing)}")
    return 1 if bad else 0


def _serve(args: argparse.Namespace) -> int:
    from .server import make_server

    server = make_server(args.root, port=args.port)
    host, port = str(server.server_address[0]), int(server.server_address[1])
    print(f"serving {args.root} at http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
