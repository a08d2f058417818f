"""``launch``: start the slot manager as a long-running process beside the monitor."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Dict

from ..errors import CommandFailed
from ..pilot.command import Context, Result
from . import slots, state


class Launch:
    """Start the slot manager (pool or pilots mode) detached, and wait until it reports ready."""

    name = "launch"
    options_schema: Dict[str, Any] = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "systemd_unit": {"type": ["string", "null"], "default": None,
                             "description": "start this systemd unit instead of a detached process"},
        },
    }

    def run(self, ctx: Context) -> Result:
        if ctx.options["systemd_unit"]:
            ctx.run(["systemctl", "start", "--no-block", ctx.options["systemd_unit"]])
            return Result(facts={"slots_unit": ctx.options["systemd_unit"]})
        argv = [sys.executable, "-m", "vmagent", "--config", ctx.config.source, "pool", "run"]
        log_dir = ctx.path(ctx.config.section("paths")["log_dir"])
        ctx.actions.record(ctx.step, "run", " ".join(argv) + " &", executed=not ctx.dry_run)
        if ctx.dry_run:
            return Result(facts={})
        os.makedirs(log_dir, exist_ok=True)
        since = ctx.clock.time()
        env = ctx.child_env()
        with open(os.path.join(log_dir, "pool.log"), "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                    start_new_session=True, close_fds=True)
        ready = slots.wait_ready(ctx.config, since, ctx.config.section("slots")["launch_timeout"], proc)
        if ready is None:
            code = proc.poll()
            with open(os.path.join(log_dir, "pool.log"), encoding="utf-8", errors="replace") as fh:
                last = (fh.read().strip().splitlines() or [""])[-1]
            raise CommandFailed(
                f"slot manager did not report ready in {state.state_path(ctx.config)}"
                + (f" (exited with {code}: {last})" if code is not None else ""),
                hint=f"see {os.path.join(log_dir, 'pool.log')}")
        return Result(facts={"slots_pid": proc.pid, "slots_total_cores": ready["total_cores"],
                             "slots_total_memory_mb": ready["total_memory_mb"]})
