"""The ``vmagent`` command line. The only place that prints errors and chooses exit codes.

Exit codes: 0 ok, 1 failure, 2 bad configuration or usage.
Each subsystem adds its subcommands through ``register(subparsers)`` in its own ``cli`` module,
importing anything heavy only inside its handlers so that ``vmagent --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from typing import Any, List, Optional

from . import __version__
from .errors import ConfigError, VmagentError

SUBCOMMAND_MODULES = (
    "vmagent.config_cli",
    "vmagent.pilot.cli",
    "vmagent.mjf.cli",
    "vmagent.pool_ce.cli",
    "vmagent.monitor.cli",
    "vmagent.manager.cli",
    "vmagent.userdata.cli",
    "vmagent.demo",
)

DESCRIPTION = """\
vmagent turns a bare cloud VM into a grid working node and retires it cleanly.

Typical use inside a VM (cloud-init starts these for you):
  vmagent check-config /etc/vmagent/vmagent.yaml   validate the configuration
  vmagent pilot plan                              what the pipeline will do
  vmagent pilot run --dry-run                     every external command it would run
  vmagent pilot run                               prepare the node and launch the slots
  vmagent monitor run                             watchdog and heartbeats

On a laptop: 'vmagent demo' runs an agent and a manager on this machine.
"""


class JsonFormatter(logging.Formatter):
    """One JSON object per log line, for shipping logs off a VM before it disappears."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(verbosity: int, fmt: str) -> None:
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter(
            "%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ"
        )
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    root = logging.getLogger("vmagent")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmagent",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vmagent {__version__}")
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="configuration file (default: $VMAGENT_CONFIG or /etc/vmagent/vmagent.yaml)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more detail in the log")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="log line format"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue  # a subsystem not present in this build
        module.register(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(-1 if args.quiet else args.verbose, args.log_format)
    try:
        result: Any = args.func(args)
    except ConfigError as exc:
        print(exc.message, file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except VmagentError as exc:
        print(f"vmagent: error [{exc.code}]: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vmagent: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
