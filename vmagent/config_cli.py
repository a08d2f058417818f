"""``vmagent check-config`` and ``vmagent config schema|show``."""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from . import config


def register(subparsers: argparse._SubParsersAction) -> None:
    check = subparsers.add_parser(
        "check-config",
        help="validate a configuration file",
        description="Validate FILE against vmagent's schema and check what it configures: every "
        "plugin (pilot commands, monitor endpoints, halt action, payload source, masonry policy) "
        "resolved, fitting its interface, its options valid; pilots mode's program; the accounts "
        "payloads and pilots run as; the settings plugins need (manager.url). Prints one "
        "'FILE: dotted.path: message' line per problem, all at once, and exits 2 if any.",
    )
    check.add_argument(
        "file", nargs="?", help="file to check (default: --config, $VMAGENT_CONFIG or /etc)"
    )
    check.set_defaults(func=_check)

    cfg = subparsers.add_parser(
        "config", help="print the configuration schema or the effective configuration"
    )
    sub = cfg.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    sub.add_parser("schema", help="print the JSON Schema of the configuration file").set_defaults(
        func=_schema
    )
    show = sub.add_parser("show", help="print the effective configuration, defaults filled in")
    show.add_argument("--format", choices=("yaml", "json"), default="yaml")
    show.set_defaults(func=_show)


def _check(args: argparse.Namespace) -> int:
    from .config_check import check_file

    checked = check_file(args.file or args.config or config.default_path())
    print(f"{checked.source}: ok ({len(checked.commands)} pilot commands)")
    return 0


def _schema(args: argparse.Namespace) -> int:
    json.dump(config.schema(), sys.stdout, indent=2)
    print()
    return 0


def _show(args: argparse.Namespace) -> int:
    data = config.load(args.config).plain()
    if args.format == "json":
        json.dump(data, sys.stdout, indent=2)
        print()
    else:
        yaml.safe_dump(data, sys.stdout, sort_keys=False)
    return 0
