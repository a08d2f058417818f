"""install-cvmfs, install-dirac and configure-dirac against the commands the real tools expect."""

from __future__ import annotations

import pytest

from vmagent.errors import CommandFailed
from vmagent.pilot.commands.cvmfs import DEB, RPM, InstallCvmfs
from vmagent.pilot.commands.dirac import ConfigureDirac, InstallDirac
from vmagent.testing import run_command

REPOS = ["lhcb.cern.ch", "lhcb-condb.cern.ch"]
EL = [["dnf", "install", "-y", RPM], ["dnf", "install", "-y", "cvmfs"]]
DEBIAN = [
    ["curl", "-fsSL", "--retry", "3", "-o", "/tmp/cvmfs-release-latest_all.deb", DEB],
    ["dpkg", "-i", "/tmp/cvmfs-release-latest_all.deb"],
    ["apt-get", "update"],
    ["apt-get", "install", "-y", "cvmfs"],
]


@pytest.mark.parametrize(
    "os_name,installs",
    [("almalinux-9", EL), ("rocky-8", EL), ("debian-12", DEBIAN), ("ubuntu-24.04", DEBIAN)],
)
def test_install_cvmfs_per_os(fp, vm_root, os_name, installs):
    """Each OS family installs the client its own way, then writes default.local, sets up and probes."""
    root, config = vm_root(os_name)
    for argv in (
        installs + [["cvmfs_config", "setup"]] + [["cvmfs_config", "probe", r] for r in REPOS]
    ):
        fp.register(argv)
    result, _ = run_command(
        InstallCvmfs(),
        config,
        {"repositories": REPOS, "http_proxy": "http://p1:3128|http://p2:3128;DIRECT"},
    )
    assert [call for call in fp.calls if call[0] != "cvmfs2"] == installs + [
        ["cvmfs_config", "setup"]
    ] + [["cvmfs_config", "probe", r] for r in REPOS]
    local = (root / "etc/cvmfs/default.local").read_text()
    assert "CVMFS_REPOSITORIES=lhcb.cern.ch,lhcb-condb.cern.ch" in local
    assert "CVMFS_HTTP_PROXY='http://p1:3128|http://p2:3128;DIRECT'" in local
    assert (
        "CVMFS_CLIENT_PROFILE=single" in local and "CVMFS_CACHE_BASE=/scratch/cvmfs-cache" in local
    )
    assert result.facts["cvmfs_repositories"] == REPOS


def test_mirror_down_is_a_clear_error(fp, vm_root):
    """A release package that cannot be fetched ends in package-install-failed with a hint."""
    _, config = vm_root("almalinux-9")
    fp.register(EL[0], returncode=1, stderr="Curl error (6): Couldn't resolve host name")
    with pytest.raises(CommandFailed) as failed:
        run_command(InstallCvmfs(), config, {"repositories": REPOS})
    assert failed.value.code == "package-install-failed" and "mirror" in failed.value.hint


def test_dnf_lock_busy_says_so(fp, vm_root):
    """dnf waiting on another process's lock is reported as such (the pipeline retries it)."""
    _, config = vm_root("almalinux-9")
    fp.register(EL[0])
    fp.register(
        EL[1], returncode=1, stderr="Error: Waiting for process with pid 812 to finish: lock held"
    )
    with pytest.raises(CommandFailed) as failed:
        run_command(InstallCvmfs(), config, {"repositories": REPOS})
    assert failed.value.code == "package-install-failed" and "lock" in failed.value.hint


def test_probe_failing_after_retries(fp, vm_root):
    """A repository that never mounts fails with cvmfs-probe-failed after the configured attempts."""
    _, config = vm_root("debian-12")
    for argv in DEBIAN + [["cvmfs_config", "setup"]]:
        fp.register(argv)
    fp.register(["cvmfs_config", "probe", "lhcb.cern.ch"], returncode=1, occurrences=3)
    with pytest.raises(CommandFailed) as failed:
        run_command(InstallCvmfs(), config, {"repositories": ["lhcb.cern.ch"], "probe_attempts": 3})
    assert failed.value.code == "cvmfs-probe-failed"
    assert fp.call_count(["cvmfs_config", "probe", "lhcb.cern.ch"]) == 3


def test_unsupported_os_is_refused(vm_root):
    """An OS outside the supported list is refused before anything is installed."""
    from vmagent.errors import NodeUnfit

    _, config = vm_root("opensuse-leap-15")
    with pytest.raises(NodeUnfit) as refused:
        run_command(InstallCvmfs(), config, {"repositories": REPOS})
    assert "openSUSE Leap 15.6 is not supported" in refused.value.message


def test_install_dirac_from_cvmfs_release(fp, vm_root):
    """A release on CVMFS is used as it is: nothing is downloaded."""
    import platform

    root, config = vm_root("almalinux-9")
    rc = root / f"cvmfs/lhcb.cern.ch/lhcbdirac/v8.0.50/Linux-{platform.machine()}/diracosrc"
    rc.parent.mkdir(parents=True)
    rc.write_text("export DIRAC=/cvmfs\n")
    fp.register(["bash", "-c", fp.any()], stdout="8.0.50\n")
    result, _ = run_command(
        InstallDirac(),
        config,
        {"version": "v8.0.50", "project": "LHCb", "cvmfs_locations": ["/cvmfs/lhcb.cern.ch"]},
    )
    assert result.facts["dirac_source"] == "cvmfs" and result.facts["dirac_version"] == "8.0.50"
    assert result.env["DIRAC_ENV_SCRIPT"].endswith("/diracosrc")
    assert not any(call[0] == "curl" for call in fp.calls)


def test_install_dirac_with_installer_and_pip(fp, vm_root):
    """Without a CVMFS release, the DIRACOS installer runs, then pip installs the pinned DIRAC."""
    _, config = vm_root("almalinux-9")
    fp.register(["mkdir", "-p", "/opt/dirac"])
    fp.register(["curl", fp.any()])
    fp.register(["bash", "/opt/dirac/DIRACOS-installer.sh"])
    fp.register(["bash", "-c", fp.any()], occurrences=3)
    run_command(InstallDirac(), config, {"version": "v8.0.50", "cvmfs_locations": []}, dry_run=True)
    result, actions = run_command(
        InstallDirac(), config, {"version": "v8.0.50", "cvmfs_locations": []}
    )
    pip = [c for c in fp.calls if c[:2] == ["bash", "-c"] and "pip" in c][0]
    assert "DIRAC[pilot]==8.0.50" in pip and result.facts["dirac_source"] == "installed"


def test_dirac_version_missing(vm_root):
    """No CVMFS release and no version to install ends in dirac-version-missing, not a traceback."""
    _, config = vm_root("almalinux-9")
    with pytest.raises(CommandFailed) as failed:
        run_command(InstallDirac(), config, {"cvmfs_locations": []})
    assert failed.value.code == "dirac-version-missing"


def test_configure_dirac_arguments(fp, vm_root):
    """dirac-configure gets site, CE, queue, VO, setup, CS servers and the tags."""
    _, config = vm_root(
        "almalinux-9",
        instance={
            "id": "i-1",
            "site": "CLOUD.CERN.ch",
            "ce": "cern-openstack",
            "vo": "lhcb",
            "running_pod": "lhcb-mc",
        },
        slots={"cores": 8},
    )
    fp.register(["bash", "-c", fp.any()])
    run_command(
        ConfigureDirac(),
        config,
        {
            "setup": "LHCb-Production",
            "whole_node": True,
            "cs_servers": ["dips://cs.example.org:9135/Configuration/Server"],
        },
        facts={"dirac_env_script": "/opt/dirac/diracos/diracosrc", "cores": 8},
    )
    argv = fp.calls[0]
    joined = " ".join(argv)
    for expected in (
        "dirac-configure",
        "-n CLOUD.CERN.ch",
        "-N cern-openstack",
        "-Q default",
        "-V lhcb",
        "-S LHCb-Production",
        "WholeNode",
        "8Processors",
        "RunningPod=lhcb-mc",
        "/LocalSite/NumberOfProcessors=8",
    ):
        assert expected in joined
