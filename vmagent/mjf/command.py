"""``setup-mjf``: write this VM's machine features, inheriting the site's where it provides them."""

from __future__ import annotations

import sys
from typing import Any, Dict

import psutil

from ..core import capacity
from ..errors import CommandFailed, InputRejected
from ..pilot import Context, Result
from .features import machine_dir, read_features, write_features


class SetupMjf:
    """Write Machine Features (cores, HS06, shutdown time, grace) and export $MACHINEFEATURES."""

    name = "setup-mjf"
    options_schema: Dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {},
    }

    def run(self, ctx: Context) -> Result:
        settings = ctx.config.section("mjf")
        now = ctx.clock.time()
        cores = capacity.cores(ctx.config)
        values: Dict[str, Any] = {"total_cpu": cores, "grace_secs": settings["grace_secs"]}
        if settings["hs06"] is not None:
            values["hs06"] = settings["hs06"]
        db12 = settings["db12"] if settings["db12"] is not None else self._measure_db12(ctx)
        if db12 is not None:
            values["db12"] = db12
        shutdown = self._shutdown(ctx, now)
        if shutdown is not None:
            values["shutdowntime"] = int(shutdown)
        if settings["legacy_keys"]:
            values.update(
                log_cores=cores, phys_cores=psutil.cpu_count(logical=False) or cores, jobslots=cores
            )
        target = machine_dir(ctx.config)
        ctx.actions.record(
            ctx.step, "write", f"{target}/{{{','.join(sorted(values))}}}", not ctx.dry_run
        )
        if not ctx.dry_run:
            try:
                write_features(target, values)
            except InputRejected as exc:
                raise CommandFailed(f"machine features not written: {exc.message}") from None
        facts = {
            "mjf_machine_dir": target,
            "mjf_total_cpu": cores,
            "mjf_shutdowntime": values.get("shutdowntime"),
        }
        return Result(facts=facts, env={"MACHINEFEATURES": target})

    def _measure_db12(self, ctx: Context) -> Any:
        """The DIRAC Benchmark 2012 score of one core, when configured and the db12 package is installed."""
        if not ctx.config.section("mjf")["measure_db12"] or ctx.dry_run:
            return None
        code = "import db12, json; print(json.dumps(db12.single_dirac_benchmark()['NORM']))"
        done = ctx.run([sys.executable, "-c", code], check=False, read_only=True, timeout=300)
        try:
            return round(float(done.stdout.strip().splitlines()[-1]), 3)
        except (ValueError, IndexError):
            ctx.log.warning(
                "db12 not measured (is the db12 package installed?): %s", done.stderr.strip()[-300:]
            )
            return None

    def _shutdown(self, ctx: Context, now: float) -> Any:
        """The earliest of the VM's own lease end and the site's announced shutdown time."""
        settings = ctx.config.section("mjf")
        candidates = []
        if settings["lifetime_seconds"]:
            candidates.append(psutil.boot_time() + settings["lifetime_seconds"])
        upstream = settings["upstream_machinefeatures"]
        if upstream:
            found = read_features(
                upstream, keys=("shutdowntime", "grace_secs"), now=now, clock=ctx.clock
            )
            for key, problem in found.problems:
                ctx.log.warning(
                    "upstream machine features %s: %s: %s (ignored)", upstream, key, problem
                )
            if "shutdowntime" in found.values:
                candidates.append(float(found.values["shutdowntime"]))
        return min(candidates) if candidates else None
