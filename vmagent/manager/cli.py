"""``vmagent manager ...``: set up (``init``) and serve (``serve``) the reference manager.

The operators' commands, which talk to a running manager, are in ``operations``.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import operations

EPILOG = """\
examples:
  vmagent manager init --state-dir /srv/vmagent          CA, server certificate, admin token (idempotent)
  vmagent manager serve --state-dir /srv/vmagent --port 8443
  vmagent manager serve --state-dir D --db postgresql://vmagent@db/vmagent --workers 2
  vmagent manager enrol --ce cern-openstack --image el9 --vo lhcb    single-use token for one VM
  vmagent manager vms --state running                    the VM table
  vmagent manager drain vm-0a1b2c3d4e5f                  ask a VM to finish its payloads and stop
  vmagent manager submit payloads.json                   queue a payload (or a list of them)

Operator commands find the manager through --state-dir (files url, admin.token, ca.pem) or
--url/--token/--ca; $VMAGENT_MANAGER_DIR sets the default state directory.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    top = subparsers.add_parser(
        "manager",
        help="the reference central manager (needs vmagent[manager] to serve)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(dest="manager_command", metavar="ACTION", required=True)

    init = sub.add_parser(
        "init", help="create the CA, server certificate and admin token (keeps existing ones)"
    )
    state_dir(init)
    init.add_argument(
        "--name",
        action="append",
        default=[],
        metavar="HOST",
        help="extra host name or IP address for the server certificate (repeatable)",
    )
    init.set_defaults(func=_init)

    serve = sub.add_parser(
        "serve", help="serve the API and dashboard (HTTPS unless --insecure-http)"
    )
    state_dir(serve)
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    serve.add_argument(
        "--port", type=int, default=8443, help="port; 0 picks a free one (default: 8443)"
    )
    serve.add_argument(
        "--db",
        metavar="URL",
        help="database URL (default: sqlite in the state directory; "
        "postgresql://user:pw@host/db for several manager processes)",
    )
    serve.add_argument("--workers", type=int, default=1, help="manager processes (default: 1)")
    serve.add_argument(
        "--insecure-http", action="store_true", help="plain HTTP: only on a trusted network"
    )
    serve.add_argument(
        "--heartbeat-period", type=float, default=60.0, help="seconds between heartbeats (60)"
    )
    serve.add_argument(
        "--stall-after", type=float, default=300.0, help="seconds without heartbeat: Stalled (300)"
    )
    serve.add_argument(
        "--sweep-interval", type=float, default=15.0, help="seconds between sweeps (15)"
    )
    serve.add_argument(
        "--lease",
        type=float,
        default=900.0,
        help="payload lease in seconds, renewed by heartbeats (900)",
    )
    serve.add_argument(
        "--max-attempts", type=int, default=3, help="attempts per payload before 'lost' (3)"
    )
    serve.add_argument("--history", type=int, default=1000, help="heartbeats kept per VM (1000)")
    serve.add_argument(
        "--history-days", type=float, default=7.0, help="days of heartbeat history kept (7)"
    )
    serve.add_argument(
        "--vm-token-days", type=float, default=30.0, help="lifetime of a VM credential (30)"
    )
    serve.add_argument(
        "--auth-failures",
        type=int,
        default=100,
        metavar="N",
        help="failed authentications "
        "of one client address within --auth-failure-window before it is answered 429 (100)",
    )
    serve.add_argument(
        "--auth-failure-window",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="window of --auth-failures, and the longest wait it imposes (300)",
    )
    serve.set_defaults(func=_serve)
    operations.register(sub, state_dir)


def state_dir(parser: argparse.ArgumentParser) -> None:
    """Add ``--state-dir``, which every manager command takes."""
    parser.add_argument(
        "--state-dir",
        default=os.environ.get("VMAGENT_MANAGER_DIR", "."),
        metavar="DIR",
        help="the manager's directory: certificates, admin token, url, SQLite database "
        "(default: $VMAGENT_MANAGER_DIR or .)",
    )


def _init(args: argparse.Namespace) -> int:
    from .pki import init

    for name, action in init(args.state_dir, args.name).items():
        print(f"{action:8} {os.path.join(args.state_dir, name)}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from ..errors import UsageError

    try:
        import fastapi  # noqa: F401
        import sqlalchemy  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            f"the manager server needs {exc.name}, which is not installed",
            hint="pip install 'vmagent[manager]'",
        ) from None
    from .server import admin_hash, default_db, serve
    from .settings import Settings

    if args.workers < 1 or not 0 <= args.port <= 65535:
        raise UsageError("--workers must be >= 1 and --port within 0..65535")
    if args.auth_failures < 1 or args.auth_failure_window <= 0:
        raise UsageError("--auth-failures must be >= 1 and --auth-failure-window > 0")
    db_url = default_db(args.state_dir, args.db)
    if args.workers > 1 and db_url.startswith("sqlite"):
        print(
            "note: several workers on SQLite share one write lock; use PostgreSQL to scale",
            file=sys.stderr,
        )
    settings = Settings(
        db_url=db_url,
        admin_token_hash=admin_hash(args.state_dir),
        state_dir=os.path.abspath(args.state_dir),
        heartbeat_period=args.heartbeat_period,
        stall_seconds=args.stall_after,
        sweep_interval=args.sweep_interval,
        lease_seconds=args.lease,
        max_attempts=args.max_attempts,
        history_per_vm=args.history,
        history_seconds=args.history_days * 86400,
        vm_token_ttl=args.vm_token_days * 86400,
        auth_failures=args.auth_failures,
        auth_failure_window=args.auth_failure_window,
    )
    serve(settings, args.host, args.port, args.workers, tls=not args.insecure_http)
    return 0
