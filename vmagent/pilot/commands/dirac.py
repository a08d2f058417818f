"""``install-dirac`` and ``configure-dirac``: DIRAC for the pilot, found or installed, then configured.

Install order, as DIRAC's own pilot: an explicit environment script; a release under an environment
prefix (DIRAC's ``preinstalledEnvPrefix``: ``<prefix>/<version|pro>/Linux-<arch>/diracosrc``); a
release on CVMFS (``<location>/<project lowercase>dirac/<version|pro>/Linux-<arch>/diracosrc``);
the DIRACOS2 installer (from CVMFS's ``installSource`` when mounted, else downloaded) and ``pip
install <Project>DIRAC[pilot]==VERSION``. A version that is a branch name (``integration``) is
looked for on CVMFS under that name, as DIRAC does, and installed unpinned.
"""

from __future__ import annotations

import os
import platform
import re
from typing import Any, Dict, List, Optional

from ...core import capacity
from ...errors import CommandFailed
from ..command import Context, Result

SOURCED = (
    'source "$1" && shift && exec "$@"'  # argv stays argv: nothing is interpreted by the shell
)
DIRACOS = "https://github.com/DIRACGrid/DIRACOS2/releases/latest/download/DIRACOS-Linux-{arch}.sh"
DIRACOS_CVMFS = "/cvmfs/dirac.egi.eu/installSource/DIRACOS-Linux-{arch}.sh"
# DIRAC's release numbers: v8.0.50, 8.0.50, v7r3p4, v9.0.0a12 (pip wants 8.0.50, 7.3.4, 9.0.0a12)
RELEASE = re.compile(r"^v?(\d+)[r.](\d+)(?:[p.](\d+))?(?:(?:-pre|a)?(\d+))?$")


def in_env(script: str, argv: List[str]) -> List[str]:
    """``argv`` run with ``script`` sourced first."""
    return ["bash", "-c", SOURCED, "vmagent", script, *argv]


def pip_version(version: str) -> Optional[str]:
    """The version pip pins for DIRAC's ``version``, or None for a branch name (unpinned)."""
    match = RELEASE.match(version)
    if match:
        major, minor, patch, pre = match.groups()
        return f"{major}.{minor}.{patch or 0}" + (f"a{pre}" if pre else "")
    if re.match(r"^v?[0-9]", version):
        return version[1:] if version.startswith("v") else version
    return None


class InstallDirac:
    """Find or install DIRAC at a pinned version or branch; later commands source its environment."""

    name = "install-dirac"
    defaults = {"timeout": 1800.0, "retries": 2, "backoff": 30.0, "once_per_instance": True}
    options_schema: Dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "version": {
                "type": ["string", "null"],
                "pattern": r"^[A-Za-z0-9][A-Za-z0-9._+-]*$",
                "default": None,
                "description": "a release (v8.0.50, v7r3p4) or a branch such as integration "
                "(installed unpinned); null: only 'pro' from CVMFS",
            },
            "project": {
                "type": "string",
                "pattern": "^([A-Za-z][A-Za-z0-9]*)?$",
                "default": "",
                "description": "DIRAC's Project: LHCb means <location>/lhcbdirac on CVMFS and "
                "LHCbDIRAC from pip; empty: DIRAC itself",
            },
            "env_script": {
                "type": ["string", "null"],
                "default": None,
                "description": "use this environment script",
            },
            "env_prefix": {
                "type": ["string", "null"],
                "default": None,
                "description": "DIRAC's preinstalledEnvPrefix: releases at "
                "<prefix>/<version|pro>/Linux-<arch>/diracosrc",
            },
            "cvmfs_locations": {
                "type": "array",
                "items": {"type": "string", "pattern": "^/"},
                "default": ["/cvmfs/grid.cern.ch", "/cvmfs/dirac.egi.eu"],
                "description": "releases at <location>/<project lowercase>dirac/<version|pro>/"
                "Linux-<arch>/diracosrc (DIRAC's CVMFS_locations)",
            },
            "installer_url": {
                "type": "string",
                "default": DIRACOS,
                "description": "{arch} is replaced",
            },
            "installer_cvmfs": {
                "type": ["string", "null"],
                "default": DIRACOS_CVMFS,
                "description": "the DIRACOS installer on CVMFS, used instead of the download "
                "when present; {arch} is replaced",
            },
            "install_dir": {"type": "string", "default": "/opt/dirac"},
        },
    }

    def run(self, ctx: Context) -> Result:
        o = ctx.options
        script = o["env_script"]
        if script and not os.path.exists(ctx.path(script)):
            raise CommandFailed(f"env_script {script} does not exist", code="dirac-env-missing")
        how = "configured" if script else "cvmfs"
        script = script or self.find_release(ctx)
        if not script:
            how = "installed"
            script = self._install(ctx, platform.machine())
        version = ctx.run(
            in_env(script, ["python", "-c", "import DIRAC; print(DIRAC.version)"]),
            check=False,
            read_only=True,
        ).stdout.strip()
        facts = {
            "dirac_env_script": script,
            "dirac_version": version or o["version"],
            "dirac_source": how,
            "dirac_project": o["project"],
            "dirac_cvmfs_locations": list(o["cvmfs_locations"]),
        }
        return Result(facts=facts, env={"DIRAC_ENV_SCRIPT": script})

    @staticmethod
    def candidates(options: Any, arch: str) -> List[str]:
        """Where a release may be, in DIRAC's order: the environment prefix, then CVMFS."""
        release = f"{options['version'] or 'pro'}/Linux-{arch}/diracosrc"
        found = [f"{options['env_prefix'].rstrip('/')}/{release}"] if options["env_prefix"] else []
        project = f"{options['project'].lower()}dirac"
        for location in options["cvmfs_locations"]:
            found.append(f"{location.rstrip('/')}/{project}/{release}")
        return found

    def find_release(self, ctx: Context) -> Optional[str]:
        """The first release's diracosrc that exists below the configured root, if any."""
        for candidate in self.candidates(ctx.options, platform.machine()):
            if os.path.isfile(ctx.path(candidate)):
                return candidate
        return None

    def _install(self, ctx: Context, arch: str) -> str:
        o = ctx.options
        if not o["version"]:
            raise CommandFailed(
                "DIRAC 'pro' is not on CVMFS here and no version is configured to install",
                code="dirac-version-missing",
                hint="set options.version, e.g. v8.0.50 (or a branch such as integration)",
            )
        target = o["install_dir"]
        installer = f"{target}/DIRACOS-installer.sh"
        ctx.run(["mkdir", "-p", target])
        on_cvmfs = (o["installer_cvmfs"] or "").format(arch=arch)
        if on_cvmfs and os.path.isfile(ctx.path(on_cvmfs)):
            installer = on_cvmfs
        else:
            url = o["installer_url"].format(arch=arch)
            ctx.run(["curl", "-fsSL", "--retry", "3", "-o", installer, url])
        ctx.run(["bash", installer], cwd=ctx.path(target) if not ctx.dry_run else None)
        script = f"{target}/diracos/diracosrc"
        package = f"{o['project']}DIRAC[pilot]"
        pinned = pip_version(o["version"])
        package += f"=={pinned}" if pinned else ""
        ctx.run(in_env(script, ["pip", "install", "--no-cache-dir", package]))
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
            "local_ce": {
                "type": ["string", "null"],
                "pattern": "^[A-Za-z][A-Za-z/]*$",
                "default": None,
                "description": "DIRAC's LocalCEType for the pilot's inner CE: InProcess, Pool, "
                "Pool/Sudo, Pool/Singularity, Singularity (/LocalSite/LocalCE)",
            },
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
        argv += self.release_args(ctx)
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

    @staticmethod
    def release_args(ctx: Context) -> List[str]:
        """The inner CE, project and CVMFS locations, set in /LocalSite as DIRAC's pilot does."""
        argv = []
        if ctx.options["local_ce"]:
            argv += ["-o", f"/LocalSite/LocalCE={ctx.options['local_ce']}"]
        if ctx.facts.get("dirac_project"):
            argv += ["-o", f"/LocalSite/ReleaseProject={ctx.facts['dirac_project']}"]
        if ctx.facts.get("dirac_cvmfs_locations"):
            locations = ",".join(ctx.facts["dirac_cvmfs_locations"])
            argv += ["-o", f"/LocalSite/CVMFS_locations={locations}"]
        return argv
