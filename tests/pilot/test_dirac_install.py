"""install-dirac finds DIRAC where DIRAC lays it out, and installs branches unpinned; configure-dirac's /LocalSite."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from vmagent.pilot.commands.dirac import ConfigureDirac, InstallDirac, pip_version
from vmagent.testing import make_config, run_command, write_config

ARCH = platform.machine()


def release(root, path):
    """Make a release's diracosrc at the VM path ``path`` below ``root``."""
    rc = root / path.lstrip("/")
    rc.parent.mkdir(parents=True, exist_ok=True)
    rc.write_text("export DIRACOS=/nowhere\n")
    return rc


def planned(actions):
    """The external commands a dry run planned (not the read-only probes it ran)."""
    return [e["what"] for e in actions.entries if e["kind"] == "run" and not e["executed"]]


def test_dry_run_finds_a_cvmfs_release_laid_out_as_dirac_does(tmp_path):
    """The real CLI's dry run with <location>/lhcbdirac/<version>/Linux-<arch>/diracosrc present plans no download."""
    release(tmp_path, f"/cvmfs/lhcb.cern.ch/lhcbdirac/v11.0.4/Linux-{ARCH}/diracosrc")
    options = {"version": "v11.0.4", "project": "LHCb", "cvmfs_locations": ["/cvmfs/lhcb.cern.ch/"]}
    path = write_config(tmp_path, [{"name": "install-dirac", "options": options}])
    done = subprocess.run(
        [sys.executable, "-m", "vmagent", "-c", path, "pilot", "run", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"/cvmfs/lhcb.cern.ch/lhcbdirac/v11.0.4/Linux-{ARCH}/diracosrc" in done.stdout
    for download in ("curl", "DIRACOS", "pip install", "mkdir"):
        assert download not in done.stdout


def test_pro_and_env_prefix(tmp_path):
    """Without a version 'pro' is taken; DIRAC's preinstalledEnvPrefix layout is probed before CVMFS."""
    release(tmp_path, f"/cvmfs/dirac.egi.eu/dirac/pro/Linux-{ARCH}/diracosrc")
    release(tmp_path, f"/opt/prefix/v8.0.50/Linux-{ARCH}/diracosrc")
    config = make_config(tmp_path)
    result, actions = run_command(InstallDirac(), config, {}, dry_run=True)
    assert (
        result.facts["dirac_env_script"] == f"/cvmfs/dirac.egi.eu/dirac/pro/Linux-{ARCH}/diracosrc"
    )
    options = {"version": "v8.0.50", "env_prefix": "/opt/prefix"}
    result, actions = run_command(InstallDirac(), config, options, dry_run=True)
    assert result.facts["dirac_env_script"] == f"/opt/prefix/v8.0.50/Linux-{ARCH}/diracosrc"
    assert planned(actions) == [] and result.facts["dirac_source"] == "cvmfs"


def test_branch_version_installs_unpinned(tmp_path):
    """Version 'integration' is looked for on CVMFS under that name, then pip-installed without a pin."""
    config = make_config(tmp_path)
    options = {
        "version": "integration",
        "project": "LHCb",
        "cvmfs_locations": ["/cvmfs/lhcb.cern.ch"],
    }
    result, actions = run_command(InstallDirac(), config, options, dry_run=True)
    pip = [what for what in planned(actions) if "pip install" in what]
    assert len(pip) == 1 and pip[0].endswith("--no-cache-dir 'LHCbDIRAC[pilot]'")
    assert any(what.startswith("curl ") for what in planned(actions))
    assert result.facts["dirac_source"] == "installed"


def test_installer_from_cvmfs_is_not_downloaded(tmp_path):
    """The DIRACOS installer in CVMFS's installSource is run instead of downloading it."""
    release(tmp_path, f"/cvmfs/dirac.egi.eu/installSource/DIRACOS-Linux-{ARCH}.sh")
    config = make_config(tmp_path)
    _, actions = run_command(InstallDirac(), config, {"version": "v8r0p50"}, dry_run=True)
    assert not any(what.startswith("curl ") for what in planned(actions))
    assert f"bash /cvmfs/dirac.egi.eu/installSource/DIRACOS-Linux-{ARCH}.sh" in planned(actions)
    assert any(what.endswith("'DIRAC[pilot]==8.0.50'") for what in planned(actions))


@pytest.mark.parametrize(
    "version,pinned",
    [("v8.0.50", "8.0.50"), ("v7r3p4", "7.3.4"), ("v9.0.0a12", "9.0.0a12"), ("integration", None)],
)
def test_pip_versions(version, pinned):
    """DIRAC's release spellings become pip versions; branch names stay unpinned."""
    assert pip_version(version) == pinned


def test_configure_dirac_local_site(tmp_path):
    """configure-dirac passes the inner CE type, the project and the CVMFS locations in /LocalSite."""
    config = make_config(tmp_path, instance={"site": "LCG.Example.org", "ce": "ce01"})
    facts = {
        "dirac_env_script": "/opt/dirac/diracos/diracosrc",
        "dirac_project": "LHCb",
        "dirac_cvmfs_locations": ["/cvmfs/lhcb.cern.ch", "/cvmfs/grid.cern.ch"],
    }
    options = {
        "cs_servers": ["dips://cs.example.org:9135/Configuration/Server"],
        "local_ce": "Pool/Sudo",
    }
    _, actions = run_command(ConfigureDirac(), config, options, facts, dry_run=True)
    (argv,) = planned(actions)
    for expected in (
        "-o /LocalSite/LocalCE=Pool/Sudo",
        "-o /LocalSite/ReleaseProject=LHCb",
        "-o /LocalSite/CVMFS_locations=/cvmfs/lhcb.cern.ch,/cvmfs/grid.cern.ch",
    ):
        assert expected in argv
