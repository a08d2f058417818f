"""``setup-mjf``: write this VM's machine features, inheriting the site's where it provides them.

On a vacuum platform the VM is itself a job: its own job features (``mjf.upstream_jobfeatures``)
bound its life, so the machine's ``shutdowntime`` is never later than their end.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Mapping, Optional, Tuple

import psutil

from ..core import capacity
from ..errors import CommandFailed, InputRejected
from ..pilot import Context, Result
from .features import LEGACY_KEYS, MACHINE_KEYS, machine_dir, read_features, write_features

# what the VM's own job features say about its life and its share of the host
OWN_JOB_KEYS = ("jobstart_secs", "wall_limit_secs", "shutdowntime_job", "allocated_cpu")


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
        upstream = self._read(
            ctx, "upstream_machinefeatures", MACHINE_KEYS + LEGACY_KEYS + ("db12",)
        )
        own_job = self._read(ctx, "upstream_jobfeatures", OWN_JOB_KEYS)
        values: Dict[str, Any] = inherit(upstream, cores, settings["grace_secs"])
        if settings["hs06"] is not None:
            values["hs06"] = settings["hs06"]  # this VM's own figure for its whole machine
        db12 = settings["db12"] if settings["db12"] is not None else self._measure_db12(ctx)
        if db12 is not None:
            values["db12"] = db12
        if settings["lifetime_seconds"]:
            lease_end = int(psutil.boot_time() + settings["lifetime_seconds"])
            values["shutdowntime"] = min(lease_end, values.get("shutdowntime", lease_end))
        life_end = self._own_job_end(ctx, own_job, cores, now)
        if life_end is not None:
            values["shutdowntime"] = min(life_end, values.get("shutdowntime", life_end))
        if settings["legacy_keys"]:  # the VM's own count: its jobs never see the host's cores
            values.update(log_cores=cores, phys_cores=cores, jobslots=cores)
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
            "mjf_job_end": life_end,
            "mjf_allocated_cpu": own_job.get("allocated_cpu"),
            "mjf_values": dict(values),
        }
        return Result(facts=facts, env={"MACHINEFEATURES": target})

    def _read(self, ctx: Context, setting: str, keys: Tuple[str, ...]) -> Dict[str, Any]:
        """The features at ``mjf.<setting>`` (read once), without the values the platform got wrong."""
        location = ctx.config.section("mjf")[setting]
        if not location:
            return {}
        found = read_features(location, keys=keys, now=ctx.clock.time(), clock=ctx.clock)
        for key, problem in found.problems:
            ctx.log.warning("mjf.%s %s: %s: %s (ignored)", setting, location, key, problem)
        return dict(found.values)

    def _own_job_end(
        self, ctx: Context, own_job: Mapping[str, Any], cores: int, now: float
    ) -> Optional[int]:
        """When the VM's own job features say it must have ended; warns of what does not fit."""
        allocated = own_job.get("allocated_cpu")
        if allocated is not None and int(allocated) < cores:
            ctx.log.warning(
                "the VM's job features allocate it %d cores but it counts %d (slots.cores, else "
                "its usable CPUs) and uses that count; set slots.cores to %d if the platform is right",
                int(allocated),
                cores,
                int(allocated),
            )
        started = own_job.get("jobstart_secs")
        if "wall_limit_secs" in own_job and started is None:
            started = psutil.boot_time()
            ctx.log.warning("the VM's job features give no jobstart_secs: its boot time is used")
        end = job_end(own_job, started)
        if end is not None and end < now:
            ctx.log.warning("the VM's job features say it should have ended at %d, before now", end)
        return end

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


def inherit(upstream: Dict[str, Any], cores: int, grace_secs: int) -> Dict[str, Any]:
    """This VM's machine features from the site's (``upstream``, possibly empty) and its own core count.

    ``total_cpu`` is always this VM's count. ``hs06`` describes the whole machine: kept when this VM
    is the machine the site describes (same ``total_cpu``, or the site gives none), else scaled by
    ``cores / total_cpu``. ``shutdowntime`` and ``db12`` (one core's score) are kept. ``grace_secs`` is
    the smaller of the site's and ours: a shutdown the site announces is passed on as it comes.
    """
    values: Dict[str, Any] = {"total_cpu": cores, "grace_secs": int(grace_secs)}
    if "grace_secs" in upstream:
        values["grace_secs"] = min(values["grace_secs"], int(upstream["grace_secs"]))
    for key in ("shutdowntime", "db12"):
        if key in upstream:
            values[key] = upstream[key]
    if "hs06" in upstream:
        site_cores = upstream.get("total_cpu")
        scale = cores / float(site_cores) if site_cores and site_cores != cores else 1.0
        values["hs06"] = round(float(upstream["hs06"]) * scale, 3)
    return values


def job_end(own_job: Mapping[str, Any], started: Optional[float]) -> Optional[int]:
    """The end of the VM's life by its own job features: the earlier of ``started +
    wall_limit_secs`` (``started``: ``jobstart_secs``) and ``shutdowntime_job``; None when neither is given."""
    ends = [int(own_job["shutdowntime_job"])] if "shutdowntime_job" in own_job else []
    if "wall_limit_secs" in own_job and started is not None:
        ends.append(int(started) + int(own_job["wall_limit_secs"]))
    return min(ends) if ends else None
