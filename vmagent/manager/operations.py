"""The operators' commands of ``vmagent manager``: the VM table, instructions, the queue.

The enrolment commands are in ``enrolling``.

Each talks to a running manager through its API (``vmagent.client.ManagerClient``), found through
``--state-dir`` (files url, admin.token, ca.pem) or ``--url``/``--token``/``--ca``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Dict, List, Tuple

from . import enrolling, tables


def register(sub: Any, state_dir: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the operators' commands to ``vmagent manager``'s subparsers; ``state_dir`` adds the option."""

    def _operator(sub: Any, name: str, text: str) -> argparse.ArgumentParser:
        """A subcommand that finds a running manager: --state-dir or --url/--token/--ca."""
        parser: argparse.ArgumentParser = sub.add_parser(name, help=text, description=text)
        state_dir(parser)
        parser.add_argument("--url", help="manager URL (default: <state-dir>/url)")
        parser.add_argument("--token", help="admin token file (default: <state-dir>/admin.token)")
        parser.add_argument("--ca", help="CA bundle (default: <state-dir>/ca.pem when it exists)")
        return parser

    vms = _operator(sub, "vms", "list VMs (the VM table)")
    vms.add_argument("--state", help="only VMs in this state")
    for key in ("image", "ce", "running-pod", "vo", "site"):
        vms.add_argument(f"--{key}", help=f"only VMs with this {key}")
    vms.add_argument("--limit", type=int, default=100)
    vms.add_argument("--offset", type=int, default=0)
    vms.set_defaults(func=_vms)

    vm = _operator(sub, "vm", "one VM with its transitions, heartbeats and instructions (JSON)")
    vm.add_argument("vm_id")
    vm.set_defaults(func=lambda a: tables.dump(_client(a).vm(a.vm_id)))

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

    enrolling.register(sub, _operator)

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


def _client(args: argparse.Namespace) -> Any:
    from ..client import ManagerClient
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
    tables.show(rows, tables.VMS)
    return 0


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


def _payloads(args: argparse.Namespace) -> int:
    rows = _client(args).payloads(state=args.state, limit=args.limit)
    tables.show(rows, tables.PAYLOADS)
    return 0


def _accounting(args: argparse.Namespace) -> int:
    client = _client(args)
    answer = client._call(
        "GET",
        "/accounting",
        params={"group_by": args.group_by, "since": args.since, "until": args.until},
    )
    if args.json:
        return tables.dump(answer)
    tables.show(answer["rows"], tables.accounting(args.group_by))
    return 0
