"""``example-vo-dirac``: the VO's own DIRAC set-up, used in place of vmagent's ``install-dirac``."""

from __future__ import annotations

import os
from typing import Any, Dict

from vmagent.errors import CommandFailed
from vmagent.pilot import Context, Result


class ExampleVoDirac:
    """Set up the VO's DIRAC release from its own software area and export its environment script."""

    name = "example-vo-dirac"
    defaults = {"once_per_instance": True, "retries": 1}
    options_schema: Dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["release"],
        "properties": {
            "release": {"type": "string", "pattern": "^v[0-9]+r[0-9]+"},
            "software_area": {"type": "string", "default": "/opt/vo-software"},
        },
    }

    def run(self, ctx: Context) -> Result:
        area = ctx.options["software_area"]
        script = f"{area}/dirac-{ctx.options['release']}/bashrc"
        ctx.write_file(
            script, f"export DIRAC_RELEASE={ctx.options['release']}\nexport VO_AREA={area}\n"
        )
        done = ctx.run(
            ["sh", "-c", '. "$1" && printf %s "$DIRAC_RELEASE"', "vo", ctx.path(script)],
            read_only=True,
        )
        if not ctx.dry_run and done.stdout != ctx.options["release"]:
            raise CommandFailed(f"{script} does not set up release {ctx.options['release']}")
        return Result(
            facts={
                "dirac_env_script": script,
                "dirac_version": ctx.options["release"],
                "vo_area": os.path.dirname(script),
            },
            env={"DIRAC_ENV_SCRIPT": script},
        )
