"""``vmagent check-config`` and ``vmagent config schema|show``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import List

import yaml

from . import config, plugins


def register(subparsers: argparse._SubParsersAction) -> None:
    check = subparsers.add_parser(
        "check-config",
        help="validate a configuration file",
        description="Validate FILE against vmagent's schema, including every pilot command's options. "
        "Prints one 'FILE: dotted.path: message' line per problem and exits 2 if any.",
    )
    check.add_argument(
        "file", nargs="?", help="file to check (default: --config, $VMAGENT_CONFIG or /etc)"
    )
    check.add_argument(
        "--plugins",
        action="store_true",
        help="also resolve the monitor's and the slots' plugins (endpoints, halt action, payload "
        "source, masonry policy) and print them as one JSON line",
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
    loaded = config.load(args.file or args.config)
    if args.plugins:
        print(json.dumps([plugins.as_dict(p) for p in configured_plugins(loaded)]))
        return 0
    print(f"{loaded.source}: ok ({len(loaded.commands)} pilot commands)")
    return 0


def configured_plugins(loaded: config.Config) -> List[plugins.Plugin]:
    """The plugins the monitor and the slot manager will load, each resolved (and importable)."""
    monitor, slots = loaded.section("monitor"), loaded.section("slots")
    wanted = [(plugins.GROUPS["endpoints"], e["name"]) for e in monitor["endpoints"]]
    wanted += [
        (plugins.GROUPS["halt_actions"], monitor["halt_action"]),
        (plugins.GROUPS["payload_sources"], slots["source"]),
        (plugins.GROUPS["masonry_policies"], slots["policy"]),
    ]
    found = []
    for group, name in dict.fromkeys(wanted):
        plugin = plugins.resolve(group, name)
        plugins.load_resolved(plugin)  # a broken plugin is reported here, by the check
        found.append(plugin)
    return found


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
