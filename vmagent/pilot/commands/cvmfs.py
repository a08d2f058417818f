"""``install-cvmfs``: make the configured CVMFS repositories mount, installing the client if needed."""

from __future__ import annotations

import os
import shutil
from typing import Any, Dict, List

from ...errors import CommandFailed, ProcessFailed
from .. import osrelease
from ..command import Context, Result

RPM = "https://cvmrepo.s3.cern.ch/cvmrepo/yum/cvmfs-release-latest.noarch.rpm"
DEB = "https://cvmrepo.s3.cern.ch/cvmrepo/apt/cvmfs-release-latest_all.deb"


class InstallCvmfs:
    """Install (unless present), configure and probe the CVMFS client for the configured repositories."""

    name = "install-cvmfs"
    defaults = {"timeout": 900.0, "retries": 2, "backoff": 15.0, "once_per_instance": True}
    options_schema: Dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["repositories"],
        "properties": {
            "repositories": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "pattern": r"^[a-z0-9.-]+$"},
            },
            "http_proxy": {
                "type": "string",
                "default": "DIRECT",
                "description": "CVMFS_HTTP_PROXY: '|' load-balances, ';' fails over",
            },
            "use_cdn": {"type": "boolean", "default": True},
            "cache_base": {
                "type": ["string", "null"],
                "default": None,
                "description": "default: <paths.scratch>/cvmfs-cache (a local filesystem)",
            },
            "quota_mb": {
                "type": ["integer", "null"],
                "minimum": 1000,
                "default": None,
                "description": "default: half the free space of the cache disk, 4000 to 50000 MB",
            },
            "release_rpm_url": {
                "type": "string",
                "default": RPM,
                "description": "for a local mirror",
            },
            "release_deb_url": {
                "type": "string",
                "default": DEB,
                "description": "for a local mirror",
            },
            "probe_attempts": {"type": "integer", "minimum": 1, "default": 3},
            "probe_delay": {"type": "number", "minimum": 0, "default": 10},
        },
    }

    def run(self, ctx: Context) -> Result:
        repos: List[str] = list(ctx.options["repositories"])
        if self._probe_all(ctx, repos, attempts=1):
            return Result(
                facts=self._facts(ctx, repos),
                skipped="repositories already mount (baked image or CernVM)",
            )
        if not shutil.which("cvmfs2") or ctx.dry_run:
            self._install(
                ctx, ctx.facts.get("os_family") or osrelease.family_of(ctx.path("/etc/os-release"))
            )
        ctx.write_file("/etc/cvmfs/default.local", self._default_local(ctx))
        ctx.run(["cvmfs_config", "setup"])
        if not self._probe_all(ctx, repos, attempts=ctx.options["probe_attempts"], read_only=False):
            raise CommandFailed(
                f"CVMFS repositories do not mount: {', '.join(repos)}",
                code="cvmfs-probe-failed",
                hint=f"check http_proxy {ctx.options['http_proxy']!r} and the network",
            )
        return Result(facts=self._facts(ctx, repos))

    def _install(self, ctx: Context, family: Any) -> None:
        if family == "el":
            steps = [
                ["dnf", "install", "-y", ctx.options["release_rpm_url"]],
                ["dnf", "install", "-y", "cvmfs"],
            ]
        elif family in ("debian", "ubuntu"):
            deb = "/tmp/cvmfs-release-latest_all.deb"
            steps = [
                ["curl", "-fsSL", "--retry", "3", "-o", deb, ctx.options["release_deb_url"]],
                ["dpkg", "-i", deb],
                ["apt-get", "update"],
                ["apt-get", "install", "-y", "cvmfs"],
            ]
        else:
            raise CommandFailed(
                f"cannot install CVMFS on OS family {family!r}",
                code="unsupported-os",
                hint="run check-node first, or use an image with CVMFS",
            )
        for argv in steps:
            try:
                ctx.run(argv)
            except ProcessFailed as exc:
                busy = "lock" in exc.stderr_tail.lower()
                raise CommandFailed(
                    f"{' '.join(argv[:3])} failed ({exc.message})",
                    code="package-install-failed",
                    hint="another package manager holds the lock; retried by the pipeline"
                    if busy
                    else "check the mirror URL and the network",
                ) from None

    def _default_local(self, ctx: Context) -> str:
        o = ctx.options
        cache = o["cache_base"] or os.path.join(
            ctx.config.section("paths")["scratch"], "cvmfs-cache"
        )
        quota = o["quota_mb"] or self._quota(ctx.path(cache))
        lines = [
            f"CVMFS_REPOSITORIES={','.join(o['repositories'])}",
            f"CVMFS_HTTP_PROXY='{o['http_proxy']}'",
            "CVMFS_CLIENT_PROFILE=single",
            f"CVMFS_USE_CDN={'yes' if o['use_cdn'] else 'no'}",
            f"CVMFS_CACHE_BASE={cache}",
            f"CVMFS_QUOTA_LIMIT={quota}",
        ]
        return "# Written by vmagent install-cvmfs\n" + "\n".join(lines) + "\n"

    @staticmethod
    def _quota(path: str) -> int:
        while not os.path.exists(path):
            path = os.path.dirname(path)
        free_mb = shutil.disk_usage(path).free // 2**20
        return int(
            min(50000, max(4000, free_mb // 2))
        )  # half the disk: headroom for payload scratch

    def _probe_all(
        self, ctx: Context, repos: List[str], attempts: int, read_only: bool = True
    ) -> bool:
        if read_only and not shutil.which("cvmfs_config"):
            return False
        for repo in repos:
            for attempt in range(attempts):
                if (
                    ctx.run(
                        ["cvmfs_config", "probe", repo], check=False, read_only=read_only
                    ).returncode
                    == 0
                ):
                    break
                if attempt + 1 < attempts:
                    ctx.clock.sleep(ctx.options["probe_delay"])
            else:
                return False
        return True

    def _facts(self, ctx: Context, repos: List[str]) -> Dict[str, Any]:
        version = ""
        if shutil.which("cvmfs2"):
            version = ctx.run(["cvmfs2", "--version"], check=False, read_only=True).stdout.strip()
        return {"cvmfs_version": version, "cvmfs_repositories": repos}
