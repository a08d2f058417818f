"""``exec``: run a site or VO program as a pipeline step."""

from __future__ import annotations

import json
from typing import Any, Dict

from ...errors import CommandFailed
from ..command import Context, Result


class Exec:
    """Run a configured program (argv, no shell); optionally take facts from its JSON output."""

    name = "exec"
    options_schema: Dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["argv"],
        "properties": {
            "argv": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string"},
                "description": "program and arguments, no shell",
            },
            "cwd": {"type": ["string", "null"], "default": None},
            "env": {"type": "object", "additionalProperties": {"type": "string"}, "default": {}},
            "facts": {
                "enum": ["none", "json"],
                "default": "none",
                "description": "json: stdout is a JSON object of facts for later commands",
            },
        },
    }

    def run(self, ctx: Context) -> Result:
        done = ctx.run(ctx.options["argv"], cwd=ctx.options["cwd"], env=ctx.options["env"])
        if ctx.options["facts"] != "json" or ctx.dry_run:
            return Result(facts={})
        try:
            facts = json.loads(done.stdout)
        except ValueError as exc:
            raise CommandFailed(
                f"{ctx.options['argv'][0]} printed no JSON object: {exc}",
                hint="print one JSON object on stdout or set facts: none",
            ) from None
        if not isinstance(facts, dict):
            raise CommandFailed(f"{ctx.options['argv'][0]} printed JSON that is not an object")
        return Result(facts=facts)
