"""The operators' enrolment commands of ``vmagent manager``: enrol, enrolments, revoke-enrolment.

``enrol`` prints a token for one VM, or with ``--uses N`` for N VMs of a vacuum platform's
machinetype (passed to each as ``##user_data_option_enrolment_token##``), valid for ``--expires``.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
import time
from typing import Any, Callable

from . import tables

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(sub: Any, operator: Callable[[Any, str, str], argparse.ArgumentParser]) -> None:
    """Add the enrolment commands; ``operator`` makes a subcommand that finds a running manager."""
    enrol = operator(
        sub,
        "enrol",
        "print an enrolment token for one new VM (or --uses N VMs of a vacuum platform's "
        "machinetype); the token is a secret (it registers VMs): prefer -o FILE, written readable "
        "by you only",
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
    enrol.add_argument(
        "--expires",
        type=duration,
        metavar="DURATION",
        help="how long the token stays valid, e.g. 90m, 12h, 7d (at most 30d); overrides --ttl",
    )
    enrol.add_argument(
        "--uses",
        type=int,
        default=1,
        metavar="N",
        help="VMs the token registers (1); more than one needs --site and --running-pod or --vo",
    )
    enrol.add_argument("--json", action="store_true", help="print the whole answer as JSON")
    enrol.set_defaults(func=_enrol)

    listing = operator(sub, "enrolments", "list enrolment tokens by id: uses, expiry, state")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_enrolments)

    revoke = operator(
        sub,
        "revoke-enrolment",
        "refuse further registrations with an enrolment token (its VMs keep their credentials)",
    )
    revoke.add_argument("enrolment_id", help="the id 'enrol' and 'enrolments' show")
    revoke.set_defaults(func=_revoke)


def duration(text: str) -> float:
    """Seconds in ``90m``, ``12h``, ``7d``, ``30s`` or a plain number of seconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not found:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90m, 12h or 7d")
    return float(found.group(1)) * UNITS[found.group(2) or "s"]


def _client(args: argparse.Namespace) -> Any:
    from .operations import _client as client

    return client(args)


def _enrol(args: argparse.Namespace) -> int:
    answer = _client(args).enrol(
        site=args.site,
        ce=args.ce,
        image=args.image,
        running_pod=args.running_pod,
        vo=args.vo,
        ttl_seconds=args.expires if args.expires is not None else args.ttl,
        uses=args.uses,
    )
    if args.output:
        from ..core.files import write_atomic

        write_atomic(args.output, answer["enrolment_token"] + "\n", 0o600)
        print(f"enrolment token written to {args.output} (mode 0600)", file=sys.stderr)
    else:
        _private_stdout()
    if args.json:
        return tables.dump(answer)
    if not args.output:
        print(answer["enrolment_token"])
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(answer["expires_at"]))
    uses = answer.get("uses", 1)
    times = "once" if uses == 1 else f"for {uses} VMs"
    print(f"enrolment {answer.get('id', '')}: valid until {until}, {times}", file=sys.stderr)
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


def _enrolments(args: argparse.Namespace) -> int:
    rows = _client(args)._call("GET", "/enrolments")["enrolments"]
    if args.json:
        return tables.dump(rows)
    tables.show(rows, ENROLMENTS)
    return 0


ENROLMENTS = (
    ("id", "ENROLMENT"),
    ("state", "STATE"),
    ("uses", "USED"),
    ("max_uses", "OF"),
    ("site", "SITE"),
    ("running_pod", "POD"),
    ("vo", "VO"),
    ("expires_at", "EXPIRES"),
)


def _revoke(args: argparse.Namespace) -> int:
    _client(args)._call("POST", f"/enrolments/{args.enrolment_id}/revoke")
    print(f"revoked enrolment {args.enrolment_id}: it registers no more VMs")
    return 0
