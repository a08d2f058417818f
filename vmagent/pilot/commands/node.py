"""``check-node``: is this VM fit to run payloads? Stops the pipeline (vacuum code 500) if not."""

from __future__ import annotations

import os
import shutil
import socket
from typing import Any, Dict, List
from urllib.parse import urlsplit

import psutil

from ...errors import NodeUnfit
from .. import osrelease
from ..command import Context


class CheckNode:
    """Check OS, cores, memory, scratch space and reachability of the manager and proxies."""

    name = "check-node"
    defaults = {"timeout": 120.0}
    options_schema: Dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "min_cores": {"type": "integer", "minimum": 1, "default": 1},
            "min_memory_mb_per_core": {"type": "integer", "minimum": 0, "default": 1000},
            "min_scratch_free_mb": {"type": "integer", "minimum": 0, "default": 10000},
            "check_os": {
                "type": "boolean",
                "default": True,
                "description": "refuse unsupported operating systems",
            },
            "endpoints": {
                "type": "array",
                "items": {"type": "string"},
                "default": [],
                "description": "extra host:port or URLs that must answer a TCP connect (e.g. CVMFS proxies)",
            },
            "connect_timeout": {"type": "number", "exclusiveMinimum": 0, "default": 5},
        },
    }

    def run(self, ctx: Context) -> Dict[str, Any]:
        o = ctx.options
        facts: Dict[str, Any] = {}
        if o["check_os"]:
            path = ctx.path("/etc/os-release")
            try:
                with open(path, encoding="utf-8") as fh:
                    found = osrelease.identify(fh.read(), path)
            except OSError as exc:
                raise NodeUnfit(f"{path}: cannot read ({exc.strerror})") from None
            facts.update(
                os_id=found.id,
                os_family=found.family,
                os_version=found.version,
                os_name=found.pretty_name,
            )
        cores = len(os.sched_getaffinity(0))
        memory_mb = psutil.virtual_memory().total // 2**20
        facts.update(cores=cores, memory_mb=memory_mb)
        problems: List[str] = []
        if cores < o["min_cores"]:
            problems.append(f"{cores} cores, {o['min_cores']} needed")
        if memory_mb < o["min_memory_mb_per_core"] * cores:
            problems.append(
                f"{memory_mb} MB memory, {o['min_memory_mb_per_core'] * cores} MB needed for {cores} cores"
            )
        scratch = self._existing(ctx.path(ctx.config.section("paths")["scratch"]))
        facts["scratch_free_mb"] = shutil.disk_usage(scratch).free // 2**20
        if facts["scratch_free_mb"] < o["min_scratch_free_mb"]:
            problems.append(
                f"{scratch} has {facts['scratch_free_mb']} MB free, {o['min_scratch_free_mb']} MB needed"
            )
        unreachable = [
            e for e in self._endpoints(ctx) if not self._reachable(e, o["connect_timeout"])
        ]
        if unreachable:
            problems.append("cannot connect to " + ", ".join(unreachable))
        facts["endpoints_checked"] = len(self._endpoints(ctx))
        if problems and ctx.dry_run:  # a dry run lists what a real run would refuse, and goes on
            ctx.log.warning("a real run would stop here: %s", "; ".join(problems))
            facts["problems"] = problems
        elif problems:
            raise NodeUnfit(
                "node check failed: " + "; ".join(problems),
                hint="use a larger flavour, attach scratch, or check the network and security groups",
            )
        return facts

    @staticmethod
    def _existing(path: str) -> str:
        while not os.path.exists(path):
            path = os.path.dirname(path)
        return path

    @staticmethod
    def _endpoints(ctx: Context) -> List[str]:
        found = list(ctx.options["endpoints"])
        if ctx.config.section("manager")["url"]:
            found.append(ctx.config.section("manager")["url"])
        return found

    @staticmethod
    def _reachable(endpoint: str, timeout: float) -> bool:
        if "://" in endpoint:
            parts = urlsplit(endpoint)
            host, port = (
                parts.hostname or "",
                parts.port or (443 if parts.scheme == "https" else 80),
            )
        else:
            host, _, port_text = endpoint.rpartition(":")
            port = int(port_text) if port_text.isdigit() else 3128
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            return False
