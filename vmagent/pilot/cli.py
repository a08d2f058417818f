"""``vmagent pilot run|plan|commands|import-dirac``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EPILOG = """\
examples:
  vmagent pilot plan                      the resolved command list with options
  vmagent pilot run --dry-run             every external command, in order, nothing changed
  vmagent pilot run                       run it; status in /var/lib/vmagent/pilot-status.json
  vmagent pilot import-dirac pilot.json --vo lhcb --ce ce01.example.org -o vmagent.yaml
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    pilot = subparsers.add_parser(
        "pilot",
        help="run the pilot pipeline that prepares this node",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = pilot.add_subparsers(dest="pilot_command", metavar="ACTION", required=True)

    run = sub.add_parser("run", help="run the configured commands in order")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="list every external command and file write instead of doing them",
    )
    run.add_argument("--instance-id", help="override the detected cloud instance id")
    run.add_argument(
        "--status-file", help="where to write the JSON status (default: pilot.status_file)"
    )
    run.set_defaults(func=_run)

    sub.add_parser("plan", help="show the resolved command list; changes nothing").set_defaults(
        func=_plan
    )
    sub.add_parser(
        "commands", help="list installed pilot commands and who provides them"
    ).set_defaults(func=_commands)

    imp = sub.add_parser(
        "import-dirac", help="turn a DIRAC pilot.json into a vmagent configuration"
    )
    imp.add_argument("pilot_json", help="DIRAC pilot.json (a dump of the CS Operations section)")
    imp.add_argument("--vo", help="take the VO's own Pilot sections over the defaults")
    imp.add_argument(
        "--ce",
        help="the CE this VM serves (a host under CEs): its Site, Queue, GridCEType, LocalCEType "
        "(default: the only CE, if the file has one)",
    )
    imp.add_argument("--queue", help="the CE's queue (default: its Queue, or its only queue)")
    imp.add_argument(
        "--ce-type",
        help="GridCEType that selects the Commands list (default: the CE's; then Defaults)",
    )
    imp.add_argument("--setup", help="DIRAC setup to take (default: the file's DefaultSetup)")
    imp.add_argument("-o", "--out", help="write the configuration here instead of stdout")
    imp.set_defaults(func=_import_dirac)


def _run(args: argparse.Namespace) -> int:
    from .. import config
    from .runner import Runner

    loaded = config.load(args.config)
    runner = Runner(
        loaded, dry_run=args.dry_run, instance_id=args.instance_id, status_file=args.status_file
    )
    try:
        status = runner.run()
    finally:
        if args.dry_run:
            _print_actions(runner)
    print(status.summary)
    return 0


def _print_actions(runner: Any) -> None:
    print(f"# dry run for instance {runner.instance_id}: nothing below was changed")
    for number, step in enumerate(runner.status.steps, 1):
        reason = f": {step.reason}" if step.reason else ""
        print(f"# {step.name} ({step.outcome}{reason})")
        for entry in (e for e in runner.actions.entries if e["index"] == number):
            mark = "   (read-only, executed)" if entry["executed"] else ""
            verb = "$" if entry["kind"] == "run" else "write"
            print(f"{verb} {entry['what']}{mark}")


def _plan(args: argparse.Namespace) -> int:
    from .. import config
    from ..config import thaw
    from ..core.instance import instance_id as detect_instance_id

    loaded = config.load(args.config)
    print(f"# pilot plan from {loaded.source} for instance {detect_instance_id(loaded)}")
    for number, spec in enumerate(loaded.commands, 1):
        flags = [f"timeout {spec.timeout:g}s", f"retries {spec.retries}"]
        if spec.retries:
            flags.append(f"backoff {spec.backoff:g}s")
        flags.append(f"on failure {spec.on_failure}")
        if spec.once_per_instance:
            flags.append("once per instance")
        if spec.skip:
            flags = [f"skipped: {spec.skip}"]
        print(f"{number:2d}. {spec.name}  ({', '.join(flags)})")
        options = thaw(spec.options)
        if options:
            print(f"      options: {json.dumps(options, sort_keys=True)}")
        if spec.env:
            print(f"      exports: {', '.join(sorted(spec.env))}")
    if not loaded.commands:
        print("(no commands configured: add them under pilot.commands)")
    return 0


def _commands(args: argparse.Namespace) -> int:
    from .. import plugins
    from ..errors import PluginError
    from .command import summary

    group = plugins.GROUPS["pilot_commands"]
    rows = []
    for name, found in plugins.installed(group).items():
        for plugin in found:
            try:
                doc = summary(plugins.load(group, name))
            except PluginError as exc:
                doc = f"BROKEN: {exc.message}"
            rows.append((name, f"{plugin.distribution} {plugin.version}", doc))
    width = max((len(r[0]) for r in rows), default=4)
    dist_width = max((len(r[1]) for r in rows), default=4)
    for name, dist, doc in rows:
        print(f"{name:<{width}}  {dist:<{dist_width}}  {doc}")
    return 0


def _import_dirac(args: argparse.Namespace) -> int:
    from .dirac_import import convert_file

    text, report = convert_file(
        args.pilot_json,
        vo=args.vo,
        ce_type=args.ce_type,
        setup=args.setup,
        ce=args.ce,
        queue=args.queue,
    )
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    for line in report:
        print(f"import-dirac: {line}", file=sys.stderr)
    return 0
