"""``launch``: start the slot manager as a long-running process beside the monitor."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Dict, Optional

from ..core import layout
from ..errors import CommandFailed
from ..pilot import Context, Result
from . import state

UNIT = "vmagent-slots.service"


class Launch:
    """Start the slot manager (pool or pilots mode) and wait until it reports ready.

    Under systemd it runs as its own unit (``vmagent-slots.service``: restarted on failure, its own
    delegated cgroup for the payloads' memory limits); elsewhere as a detached process.
    """

    name = "launch"
    options_schema: Dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "systemd_unit": {
                "type": ["string", "null"],
                "default": "auto",
                "description": "start the slot manager as this systemd unit; auto: "
                f"{UNIT} when systemd runs and the unit is installed; "
                "null: always a detached process",
            },
        },
    }

    def run(self, ctx: Context) -> Result:
        unit = self.unit(ctx)
        if unit:
            since = ctx.clock.time()
            ctx.run(["systemctl", "start", "--no-block", unit])
            if ctx.dry_run:
                return Result(facts={})
            ready = state.wait_ready(
                ctx.config, since, ctx.config.section("slots")["launch_timeout"], ctx.clock
            )
            if ready is None:
                raise CommandFailed(
                    f"{unit} did not report ready in {layout.pool_state(ctx.config)}",
                    hint=f"see journalctl -u {unit}",
                )
            return Result(
                facts={
                    "slots_unit": unit,
                    "slots_total_cores": ready["total_cores"],
                    "slots_total_memory_mb": ready["total_memory_mb"],
                }
            )
        argv = [sys.executable, "-m", "vmagent", "--config", ctx.config.source, "pool", "run"]
        log_dir = ctx.path(ctx.config.section("paths")["log_dir"])
        ctx.actions.record(ctx.step, "run", " ".join(argv) + " &", executed=not ctx.dry_run)
        if ctx.dry_run:
            return Result(facts={})
        os.makedirs(log_dir, exist_ok=True)
        since = ctx.clock.time()
        env = ctx.child_env()
        with open(os.path.join(log_dir, "pool.log"), "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        ready = state.wait_ready(
            ctx.config, since, ctx.config.section("slots")["launch_timeout"], ctx.clock, proc
        )
        if ready is None:
            code = proc.poll()
            with open(os.path.join(log_dir, "pool.log"), encoding="utf-8", errors="replace") as fh:
                last = (fh.read().strip().splitlines() or [""])[-1]
            raise CommandFailed(
                f"slot manager did not report ready in {layout.pool_state(ctx.config)}"
                + (f" (exited with {code}: {last})" if code is not None else ""),
                hint=f"see {os.path.join(log_dir, 'pool.log')}",
            )
        return Result(
            facts={
                "slots_pid": proc.pid,
                "slots_total_cores": ready["total_cores"],
                "slots_total_memory_mb": ready["total_memory_mb"],
            }
        )

    @staticmethod
    def unit(ctx: Context) -> Optional[str]:
        chosen = ctx.options["systemd_unit"]
        if chosen != "auto":
            return chosen or None
        booted = os.path.isdir(ctx.path("/run/systemd/system"))
        return UNIT if booted and os.path.exists(ctx.path(f"/etc/systemd/system/{UNIT}")) else None
