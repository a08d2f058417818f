"""``install-dirac`` and ``configure-dirac``: DIRAC for the pilot, found or installed, then configured.

Install order, as DIRAC's own pilot: an explicit environment script; a CVMFS release's ``diracosrc``;
the DIRACOS2 installer plus ``pip install DIRAC==VERSION`` (and an optional VO extension).
"""

from __future__ import annotations

import os
import platform
from typing import Any, Dict, List

from ...core import capacity
from ...errors import CommandFailed
from ..command import Context, Result

SOURCED = (
    'source "$1" && shift && exec "$@"'  # argv stays argv: nothing is interpreted by the shell
)
DIRACOS = "https://github.com/DIRACGrid/DIRACOS2/releases/latest/download/DIRACOS-Linux-{arch}.sh"


def in_env(script: str, argv: List[str]) -> List[str]:
    """``argv`` run with ``script`` sourced first."""
    return ["bash", "-c", SOURCED, "vmagent", script, *argv]


class InstallDirac:
    """Find or install DIRAC at a pinned version; later commands source the environment script."""

    name = "install-dirac"
    defaults = {"timeout": 1800.0, "retries": 2, "backoff": 30.0, "once_per_instance": True}
    options_schema: Dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "version": {
                "type": ["string", "null"],
                "pattern": r"^v?[0-9][0-9A-Za-z.+-]*$",
                "default": None,
            },
            "env_script": {
                "type": ["string", "null"],
                "default": None,
                "description": "use this environment script",
            },
            "cvmfs_locations": {
                "type": "array",
                "items": {"type": "string"},
                "default": ["/cvmfs/dirac.egi.eu/dirac"],
                "description": "releases at <location>/<version|pro>/Linux-<arch>/diracosrc",
            },
            "installer_url": {
                "type": "string",
                "default": DIRACOS,
                "description": "{arch} is replaced",
            },
            "install_dir": {"type": "string", "default": "/opt/dirac"},
            "extension": {
                "type": ["string", "null"],
                "default": None,
                "description": "VO extension package to pip-install",
            },
        },
    }

    def run(self, ctx: Context) -> Result:
        o, arch = ctx.options, platform.machine()
        script = o["env_script"]
        if script and not os.path.exists(ctx.path(script)):
            raise CommandFailed(f"env_script {script} does not exist", code="dirac-env-missing")
        for location in [] if script else o["cvmfs_locations"]:
            candidate = f"{location}/{o['version'] or 'pro'}/Linux-{arch}/diracosrc"
            if os.path.exists(ctx.path(candidate)):
                script = candidate
                break
        how = "configured" if o["env_script"] else "cvmfs" if script else "installed"
        if not script:
            script = self._install(ctx, arch)
        version = ctx.run(
            in_env(script, ["python", "-c", "import DIRAC; print(DIRAC.version)"]),
            check=False,
            read_only=True,
        ).stdout.strip()
        facts = {
            "dirac_env_script": script,
            "dirac_version": version or o["version"],
            "dirac_source": how,
        }
        return Result(facts=facts, env={"DIRAC_ENV_SCRIPT": script})

    def _install(self, ctx: Context, arch: str) -> str:
        o = ctx.options
        if not o["version"]:
            raise CommandFailed(
                "DIRAC is not on CVMFS here and no version is configured to install",
                code="dirac-version-missing",
                hint="set options.version, e.g. v8.0.50",
            )
        target = o["install_dir"]
        installer = f"{target}/DIRACOS-installer.sh"
        ctx.run(["mkdir", "-p", target])
        ctx.run(
            ["curl", "-fsSL", "--retry", "3", "-o", installer, o["installer_url"].format(arch=arch)]
        )
        ctx.run(["bash", installer], cwd=ctx.path(target) if not ctx.dry_run else None)
        script = f"{target}/diracos/diracosrc"
        version = o["version"].lstrip("v")
        packages = [f"DIRAC=={version}"] + ([o["extension"]] if o["extension"] else [])
        ctx.run(in_env(script, ["pip", "install", "--no-cache-dir", *packages]))
        return script


class ConfigureDirac:
    """Run dirac-configure with site, CE, queue, VO, setup, CS servers, credentials and tags."""

    name = "configure-dirac"
    defaults = {"timeout": 600.0, "retries": 2, "backoff": 20.0}
    options_schema: Dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["cs_servers"],
        "properties": {
            "setup": {"type": ["string", "null"], "default": None},
            "cs_servers": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "pattern": "^(dips|https)://"},
            },
            "whole_node": {"type": "boolean", "default": False},
            "tags": {"type": "array", "items": {"type": "string"}, "default": []},
            "extra_args": {"type": "array", "items": {"type": "string"}, "default": []},
        },
    }

    def run(self, ctx: Context) -> Result:
        script = ctx.facts.get("dirac_env_script")
        if not script:
            raise CommandFailed(
                "no DIRAC environment: run install-dirac first", code="dirac-env-missing"
            )
        o, instance = ctx.options, ctx.config.section("instance")
        cores = capacity.pilot_cores(ctx.config)
        tags = list(o["tags"]) + ["WholeNode"] * o["whole_node"] + [f"{cores}Processors"]
        argv = [
            "dirac-configure",
            "-C",
            ",".join(o["cs_servers"]),
            "-n",
            instance["site"],
            "-N",
            instance["ce"],
            "-Q",
            instance["queue"],
            "-o",
            f"/LocalSite/NumberOfProcessors={cores}",
            "-o",
            f"/Resources/Computing/CEDefaults/Tag={','.join(tags)}",
        ]
        if o["setup"]:
            argv += ["-S", o["setup"]]
        if instance["vo"]:
            argv += ["-V", instance["vo"]]
        if instance["running_pod"]:
            argv += ["-o", f"/Resources/Computing/CEDefaults/RunningPod={instance['running_pod']}"]
        if "X509_USER_PROXY" in ctx.env:
            argv += ["-o", f"/DIRAC/Security/ProxyFile={ctx.env['X509_USER_PROXY']}"]
        elif "X509_USER_CERT" in ctx.env:
            argv += ["-o", "/DIRAC/Security/UseServerCertificate=yes"]
        ctx.run(in_env(script, argv + list(o["extra_args"])))
        return Result(facts={"dirac_configured": True, "dirac_tags": tags})
