"""Write docs/configuration.md from the configuration schema and each pilot command's options schema.

Usage: python scripts/config_reference.py [--check]
With --check, exit 1 when docs/configuration.md differs from what the schema says.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

from vmagent import config, plugins
from vmagent.pilot.command import summary

TARGET = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def rows(schema: Dict[str, Any], prefix: str = "") -> Iterator[Tuple[str, str, str, str]]:
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        kind = sub.get("type", "enum" if "enum" in sub else "")
        kind = " or ".join(kind) if isinstance(kind, list) else kind
        if "enum" in sub:
            kind = " \\| ".join(json.dumps(v) for v in sub["enum"])
        default = (
            json.dumps(sub["default"])
            if "default" in sub and sub["default"] not in ({}, [])
            else ""
        )
        yield path, kind, default, sub.get("description", "").replace("|", "\\|")
        if sub.get("type") == "object" and "properties" in sub:
            yield from rows(sub, path)
        items = sub.get("items")
        if isinstance(items, dict) and "properties" in items:
            yield from rows(items, f"{path}[]")


def table(schema: Dict[str, Any], prefix: str = "") -> List[str]:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [
        f"| `{p}` | {k} | {f'`{d}`' if d else ''} | {m} |" for p, k, d, m in rows(schema, prefix)
    ]
    return lines


def render() -> str:
    whole = config.schema()
    out = [
        "# vmagent configuration reference",
        "",
        "Generated from the schema by `python scripts/config_reference.py`; `vmagent config schema` prints",
        "the schema itself. One YAML file, default `/etc/vmagent/vmagent.yaml` (`--config` or",
        "`VMAGENT_CONFIG`). `vmagent check-config FILE` validates it; `vmagent config show` prints it with",
        "defaults filled in.",
        "",
    ]
    for section, sub in whole["properties"].items():
        out += [f"## `{section}`", "", sub.get("description", ""), ""]
        if section == "pilot":
            commands = sub["properties"]["commands"]["items"]["oneOf"][1]
            out += table(
                {"properties": {k: v for k, v in sub["properties"].items() if k != "commands"}},
                section,
            )
            out += ["", "Each entry of `pilot.commands` is a command name or a mapping:", ""]
            out += table(commands, "pilot.commands[]")
        else:
            out += table(sub, section)
        out.append("")
    out += ["## Pilot commands and their options", ""]
    group = plugins.GROUPS["pilot_commands"]
    for name in plugins.installed(group):
        command = plugins.load(group, name)
        out += [f"### `{name}`", "", summary(command), ""]
        options = getattr(command, "options_schema", {})
        out += table(options, "options") if options.get("properties") else ["(no options)"]
        out.append("")
    return "\n".join(out)


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            print(
                f"{TARGET} is out of date: run python scripts/config_reference.py", file=sys.stderr
            )
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
