"""``vmagent manager ...``: set up and serve the reference manager, and operate the fleet through it."""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import time
from typing import Any, Dict, List, Tuple

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
    _state_dir(init)
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
    _state_dir(serve)
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

    vms = _operator(sub, "vms", "list VMs (the VM table)")
    vms.add_argument("--state", help="only VMs in this state")
    for key in ("image", "ce", "running-pod", "vo", "site"):
        vms.add_argument(f"--{key}", help=f"only VMs with this {key}")
    vms.add_argument("--limit", type=int, default=100)
    vms.add_argument("--offset", type=int, default=0)
    vms.set_defaults(func=_vms)

    vm = _operator(sub, "vm", "one VM with its transitions, heartbeats and instructions (JSON)")
    vm.add_argument("vm_id")
    vm.set_defaults(func=lambda a: _print(_client(a).vm(a.vm_id)))

    for action, text in (
        ("drain", "ask a VM to take nothing new and finish its payloads"),
        ("halt", "ask a VM to stop its payloads and shut down"),
    ):
        cmd = _operator(sub, action, text)
        cmd.add_argument("vm_id")
        cmd.add_argument("--reason", default="", help="shown to the VM and in the logs")
        cmd.set_defaults(func=_instruct, action=action)

    shutdown = _operator(sub, "shutdown-at", "ask a VM to be gone by a UNIX time")
    shutdown.add_argument("vm_id")
    shutdown.add_argument("when", type=float, help="UNIX seconds")
    shutdown.add_argument("--reason", default="")
    shutdown.set_defaults(func=_instruct, action="shutdown_at")

    revoke = _operator(sub, "revoke", "revoke a VM's credential")
    revoke.add_argument("vm_id")
    revoke.set_defaults(func=_revoke)

    submit = _operator(
        sub, "submit", "queue payloads from a JSON file (one payload or a list; - for stdin)"
    )
    submit.add_argument("file")
    submit.set_defaults(func=_submit)

    enrol = _operator(
        sub,
        "enrol",
        "print a single-use enrolment token for one new VM; the token is a "
        "secret (it registers a VM): prefer -o FILE, written readable by you only",
    )
    enrol.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the token to FILE, mode 0600, atomically, "
        "instead of printing it (when stdout is a file of yours, it is made 0600 too)",
    )
    for key in ("site", "ce", "image", "running-pod", "vo"):
        enrol.add_argument(f"--{key}", default="")
    enrol.add_argument(
        "--ttl", type=float, default=3600, help="seconds the token stays valid (3600)"
    )
    enrol.add_argument("--json", action="store_true", help="print the whole answer as JSON")
    enrol.set_defaults(func=_enrol)

    payloads = _operator(sub, "payloads", "list the payload queue")
    payloads.add_argument("--state", help="queued, leased, done, failed, killed or lost")
    payloads.add_argument("--limit", type=int, default=100)
    payloads.set_defaults(func=_payloads)

    acc = _operator(sub, "accounting", "VMs, payloads and core-hours per group")
    acc.add_argument(
        "--group-by", default="ce", choices=("ce", "site", "image", "running_pod", "vo")
    )
    acc.add_argument("--since", type=float, help="UNIX seconds (default: everything)")
    acc.add_argument("--until", type=float)
    acc.add_argument("--json", action="store_true")
    acc.set_defaults(func=_accounting)


def _state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        default=os.environ.get("VMAGENT_MANAGER_DIR", "."),
        metavar="DIR",
        help="the manager's directory: certificates, admin token, url, SQLite database "
        "(default: $VMAGENT_MANAGER_DIR or .)",
    )


def _operator(sub: Any, name: str, text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=text, description=text)
    _state_dir(parser)
    parser.add_argument("--url", help="manager URL (default: <state-dir>/url)")
    parser.add_argument("--token", help="admin token file (default: <state-dir>/admin.token)")
    parser.add_argument("--ca", help="CA bundle (default: <state-dir>/ca.pem when it exists)")
    return parser


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


def _client(args: argparse.Namespace) -> Any:
    from ..client.manager import ManagerClient
    from ..errors import UsageError

    def read(path: str, what: str) -> str:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read().strip()
        except OSError as exc:
            raise UsageError(
                f"cannot read the {what} {path}: {exc.strerror}",
                hint="pass --state-dir of a running manager, or --url/--token/--ca",
            ) from None

    url = args.url or read(os.path.join(args.state_dir, "url"), "manager URL file")
    token = read(args.token or os.path.join(args.state_dir, "admin.token"), "admin token file")
    ca = args.ca or os.path.join(args.state_dir, "ca.pem")
    return ManagerClient(url, token=token, ca_file=ca if os.path.exists(ca) else None)


def _print(doc: Any) -> int:
    print(json.dumps(doc, indent=2, sort_keys=True))
    return 0


def _vms(args: argparse.Namespace) -> int:
    rows = _client(args).vms(
        state=args.state,
        image=args.image,
        ce=args.ce,
        running_pod=args.running_pod,
        vo=args.vo,
        site=args.site,
        limit=args.limit,
        offset=args.offset,
    )
    _table(
        rows,
        (
            ("id", "VM"),
            ("state", "STATE"),
            ("image", "IMAGE"),
            ("running_pod", "POD"),
            ("ce", "CE"),
            ("ip", "IP"),
            ("load1", "LOAD"),
            ("uptime", "UPTIME"),
            ("payloads_running", "RUN"),
            ("payloads_done", "DONE"),
        ),
    )
    return 0


def _table(rows: List[Dict[str, Any]], columns: Any) -> None:
    def cell(row: Dict[str, Any], key: str) -> str:
        value = row.get(key)
        if value is None:
            return "-"
        if key == "uptime":
            return f"{int(value) // 3600}h{int(value) % 3600 // 60:02d}m"
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    cells = [[cell(r, key) for key, _ in columns] for r in rows]
    widths = [
        max([len(title)] + [len(c[i]) for c in cells]) for i, (_, title) in enumerate(columns)
    ]
    for line in [[t for _, t in columns]] + cells:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip())
    if not rows:
        print("(none)")


def _instruct(args: argparse.Namespace) -> int:
    extra: Dict[str, Any] = {"reason": args.reason} if args.reason else {}
    if args.action == "shutdown_at":
        extra["shutdown_at"] = args.when
    new_id = _client(args).instruct(args.vm_id, args.action, **extra)
    print(
        f"queued {args.action} for {args.vm_id} as instruction {new_id}; it travels with the next heartbeat answer"
    )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    _client(args)._call("POST", f"/vms/{args.vm_id}/revoke")
    print(f"revoked the credential of {args.vm_id}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from ..errors import ConfigError

    source = "<stdin>" if args.file == "-" else args.file
    try:
        text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()
        doc = json.loads(text)
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read: {exc.strerror}")]) from None
    except ValueError as exc:
        raise ConfigError(source, [("", f"not valid JSON: {exc}")]) from None
    _check_payloads(source, doc)
    client = _client(args)
    answer = client._call("POST", "/payloads", doc)
    for payload_id in answer.get("ids") or [answer["id"]]:
        print(f"queued {payload_id}")
    return 0


def _check_payloads(source: str, doc: Any) -> None:
    """Validate locally first, so that a bad file is reported with its name and nothing is queued."""
    from .. import schemas
    from ..errors import ConfigError

    docs = doc if isinstance(doc, list) else [doc]
    found: List[Tuple[str, str]] = []
    for index, item in enumerate(docs):
        prefix = f"[{index}]" if isinstance(doc, list) else ""
        found.extend(
            (f"{prefix}.{p}".strip(".") if p else prefix, m)
            for p, m in schemas.problems("payload", item)
        )
    if not docs:
        found.append(("", "an empty list queues nothing"))
    if found:
        raise ConfigError(source, found)


def _enrol(args: argparse.Namespace) -> int:
    answer = _client(args).enrol(
        site=args.site,
        ce=args.ce,
        image=args.image,
        running_pod=args.running_pod,
        vo=args.vo,
        ttl_seconds=args.ttl,
    )
    if args.output:
        from ..core.files import write_atomic

        write_atomic(args.output, answer["enrolment_token"] + "\n", 0o600)
        print(f"enrolment token written to {args.output} (mode 0600)", file=sys.stderr)
    else:
        _private_stdout()
    if args.json:
        return _print(answer)
    if not args.output:
        print(answer["enrolment_token"])
    print(
        f"valid until {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(answer['expires_at']))}, once",
        file=sys.stderr,
    )
    return 0


def _private_stdout() -> None:
    """When stdout is a regular file of ours (``enrol > token``), make it readable by us only."""
    try:
        found = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):
        return
    if not stat.S_ISREG(found.st_mode) or found.st_uid != os.geteuid() or not found.st_mode & 0o077:
        return
    os.fchmod(sys.stdout.fileno(), stat.S_IMODE(found.st_mode) & 0o700)
    print(
        "note: stdout is a file; made it readable by its owner only (the token is a secret)",
        file=sys.stderr,
    )


def _payloads(args: argparse.Namespace) -> int:
    rows = _client(args).payloads(state=args.state, limit=args.limit)
    _table(
        rows,
        (
            ("id", "PAYLOAD"),
            ("state", "STATE"),
            ("cores", "CORES"),
            ("vo", "VO"),
            ("running_pod", "POD"),
            ("vm_id", "VM"),
            ("attempts", "TRIES"),
            ("outcome", "OUTCOME"),
        ),
    )
    return 0


def _accounting(args: argparse.Namespace) -> int:
    client = _client(args)
    answer = client._call(
        "GET",
        "/accounting",
        params={"group_by": args.group_by, "since": args.since, "until": args.until},
    )
    if args.json:
        return _print(answer)
    _table(
        answer["rows"],
        (
            (args.group_by, args.group_by.upper()),
            ("vms", "VMS"),
            ("vm_core_hours", "VM-CORE-H"),
            ("payloads", "PAYLOADS"),
            ("done", "DONE"),
            ("failed", "FAILED"),
            ("core_hours", "CORE-H"),
            ("cpu_hours", "CPU-H"),
        ),
    )
    return 0
