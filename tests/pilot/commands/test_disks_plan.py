"""setup-disks on real loop devices, and the default EL9 pipeline's dry run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from vmagent.errors import CommandFailed
from vmagent.pilot.commands.disks import SetupDisks
from vmagent.testing import make_config, run_command

REPO = Path(__file__).resolve().parents[3]


def loop_devices_usable() -> str:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("losetup", "mkfs.ext4", "mount", "findmnt"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return ""


@pytest.fixture
def loops(tmp_path):
    """Attach sparse files as loop devices; detach (and unmount) them afterwards."""
    attached, mounts = [], []

    def attach(name: str) -> str:
        image = tmp_path / f"{name}.img"
        with open(image, "wb") as fh:
            fh.truncate(64 * 2**20)
        done = subprocess.run(
            ["losetup", "--find", "--show", str(image)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(f"loop devices are not allowed here: {done.stderr.strip()}")
        attached.append(done.stdout.strip())
        return attached[-1]

    yield attach, mounts
    for target in reversed(mounts):
        subprocess.run(["umount", "-l", str(target)], capture_output=True)
    for device in attached:
        subprocess.run(["losetup", "-d", device], capture_output=True)


@pytest.mark.root
@pytest.mark.skipif(bool(loop_devices_usable()), reason=loop_devices_usable() or "usable")
def test_blank_formatted_and_data_kept(tmp_path, loops):
    """A blank volume is formatted and mounted; a volume with data is mounted, not reformatted; fstab verifies."""
    attach, mounts = loops
    root = tmp_path / "vm"
    blank, used = attach("blank"), attach("used")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "vmdata", used], check=True)
    seed = tmp_path / "seed"
    seed.mkdir()
    subprocess.run(["mount", used, str(seed)], check=True)
    (seed / "payload-output.txt").write_text("precious")
    subprocess.run(["umount", str(seed)], check=True)
    by_id = root / "dev/disk/by-id"
    by_id.mkdir(parents=True)
    (by_id / "virtio-scratch01").symlink_to(blank)
    config = make_config(root, [])
    mounts += [root / "scratch", root / "data"]
    result, _ = run_command(
        SetupDisks(),
        config,
        {
            "volumes": [
                {"match": {"by_id": "virtio-scratch01"}, "mount": "/scratch"},
                {"match": {"label": "vmdata"}, "mount": "/data"},
            ]
        },
    )
    formatted = {d["mount"]: d["formatted"] for d in result.facts["disks"]}
    assert formatted == {"/scratch": True, "/data": False}
    assert (root / "data/payload-output.txt").read_text() == "precious"
    assert os.path.ismount(root / "scratch")
    fstab = (root / "etc/fstab").read_text()
    assert fstab.count("nofail,x-systemd.device-timeout=30s") == 2 and "UUID=" in fstab
    # the entries name VM paths: verify a copy whose targets point into the test's root
    check = tmp_path / "fstab.verify"
    check.write_text(
        "".join(
            f"{f[0]} {root}{f[1]} {' '.join(f[2:])}\n" for f in map(str.split, fstab.splitlines())
        )
    )
    verified = subprocess.run(
        ["findmnt", "--verify", "--tab-file", str(check)], capture_output=True, text=True
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    again, _ = run_command(
        SetupDisks(), config, {"volumes": [{"match": {"label": "vmdata"}, "mount": "/data"}]}
    )
    assert (
        again.facts["disks"][0]["formatted"] is False
    )  # idempotent: mounted already, nothing done


LSBLK = {
    "blockdevices": [
        {
            "name": "/dev/vda",
            "type": "disk",
            "size": 10737418240,
            "fstype": None,
            "label": None,
            "uuid": None,
            "serial": "root0",
            "mountpoint": None,
            "pkname": None,
            "ro": False,
            "children": [
                {
                    "name": "/dev/vda1",
                    "type": "part",
                    "size": 10736369664,
                    "fstype": "ext4",
                    "label": "rootfs",
                    "uuid": "5a1e",
                    "serial": None,
                    "mountpoint": "/",
                    "pkname": "/dev/vda",
                    "ro": False,
                }
            ],
        },
        {
            "name": "/dev/vdb",
            "type": "disk",
            "size": 1048576,
            "fstype": "iso9660",
            "label": "cidata",
            "uuid": None,
            "serial": "seed",
            "mountpoint": None,
            "pkname": None,
            "ro": True,
        },
        {
            "name": "/dev/vdc",
            "type": "disk",
            "size": 107374182400,
            "fstype": None,
            "label": None,
            "uuid": None,
            "serial": "scratch01",
            "mountpoint": None,
            "pkname": None,
            "ro": False,
        },
    ]
}


def test_refuses_root_disk_and_seed(fp, tmp_path):
    """The root disk and the cloud-init seed are never touched."""
    fp.register(["lsblk", fp.any()], stdout=json.dumps(LSBLK), occurrences=2)
    fp.register(["blkid", "-p", "-o", "export", fp.any()], returncode=2, occurrences=10)
    config = make_config(tmp_path, [])
    with pytest.raises(CommandFailed) as refused:
        run_command(
            SetupDisks(), config, {"volumes": [{"match": {"serial": "root0"}, "mount": "/scratch"}]}
        )
    assert "root filesystem" in refused.value.message
    with pytest.raises(CommandFailed) as refused:
        run_command(
            SetupDisks(), config, {"volumes": [{"match": {"label": "cidata"}, "mount": "/scratch"}]}
        )
    assert refused.value.code == "disk-refused"


def test_default_el9_pipeline_dry_run(sample_dry_run):
    """The sample EL9 config's dry run prints the whole ordered plan of external commands, changing nothing."""
    out = sample_dry_run("el9", "almalinux-9", "i-el9", LSBLK)
    order = [
        "# check-node",
        "# setup-disks",
        "$ mkfs.xfs -f -q /dev/vdc",
        "write /etc/fstab",
        "# install-cvmfs",
        "$ dnf install -y",
        "write /etc/cvmfs/default.local",
        "$ cvmfs_config setup",
        "$ cvmfs_config probe lhcb.cern.ch",
        "# install-dirac",
        "DIRACOS-installer.sh",
        "DIRAC[pilot]==8.0.50",
        "# configure-dirac",
        "dirac-configure",
        "# setup-mjf",
        "# launch",
        "pool run &",
    ]
    positions = [out.find(item) for item in order]
    assert all(p >= 0 for p in positions), [o for o, p in zip(order, positions) if p < 0]
    assert positions == sorted(positions)


def test_swap_file_created_once(fp, tmp_path):
    """A swap file is allocated, made and enabled once, recorded in fstab; other swap entries stay."""
    config = make_config(tmp_path, [])
    fstab = Path(config.root) / "etc/fstab"
    fstab.parent.mkdir(parents=True, exist_ok=True)
    fstab.write_text("/dev/vdb1 none swap defaults 0 0\n")
    swap = str(Path(config.root) / "scratch/swapfile")
    fp.register(["fallocate", "-l", "512M", swap])
    fp.register(["chmod", "600", swap])
    fp.register(["mkswap", swap])
    fp.register(["swapon", swap], occurrences=2)
    options = {"swap_file": {"path": "/scratch/swapfile", "size_mb": 512}}
    result, _ = run_command(SetupDisks(), config, options)
    assert result.facts["swap_file"] == "/scratch/swapfile"
    Path(swap).parent.mkdir(parents=True, exist_ok=True)
    Path(swap).write_text("")
    run_command(SetupDisks(), config, options)
    assert fp.call_count(["mkswap", swap]) == 1 and fp.call_count(["swapon", swap]) == 2
    assert fstab.read_text().splitlines() == [
        "/dev/vdb1 none swap defaults 0 0",
        "/scratch/swapfile none swap defaults,nofail 0 0",
    ]


def test_stripe_blank_members_once(fp, tmp_path):
    """Two blank volumes become one RAID 0, formatted and mounted once; a member with data is refused."""
    two = {
        "blockdevices": [
            {
                "name": "/dev/vdb",
                "type": "disk",
                "size": 1,
                "fstype": None,
                "label": None,
                "uuid": None,
                "serial": "s1",
                "mountpoint": None,
                "pkname": None,
                "ro": False,
            },
            {
                "name": "/dev/vdc",
                "type": "disk",
                "size": 1,
                "fstype": None,
                "label": None,
                "uuid": None,
                "serial": "s2",
                "mountpoint": None,
                "pkname": None,
                "ro": False,
            },
        ]
    }
    config = make_config(tmp_path, [])
    fp.register(["lsblk", fp.any()], stdout=json.dumps(two))
    fp.register(["blkid", "-p", "-o", "export", fp.any()], returncode=2, occurrences=3)
    fp.register(
        [
            "mdadm",
            "--create",
            "/dev/md/scratch",
            "--run",
            "--level=0",
            "--raid-devices=2",
            "/dev/vdb",
            "/dev/vdc",
        ]
    )
    fp.register(["mkfs.xfs", "-f", "-q", "/dev/md/scratch"])
    fp.register(["blkid", "-s", "UUID", "-o", "value", "/dev/md/scratch"], stdout="1234-abcd\n")
    fp.register(["mkdir", fp.any()])
    fp.register(["mount", "/dev/md/scratch", fp.any()])
    stripe = {
        "members": [{"serial": "s1"}, {"serial": "s2"}],
        "mount": "/scratch",
        "name": "scratch",
    }
    result, _ = run_command(SetupDisks(), config, {"stripe": stripe})
    assert result.facts["disks"][0]["uuid"] == "1234-abcd" and result.facts["disks"][0]["formatted"]
    assert "UUID=1234-abcd /scratch xfs" in (Path(config.root) / "etc/fstab").read_text()
    two["blockdevices"][1]["fstype"] = "ext4"
    two["blockdevices"][1]["uuid"] = "u2"
    fp.register(["lsblk", fp.any()], stdout=json.dumps(two))
    fp.register(["blkid", "-p", "-o", "export", fp.any()], returncode=2)
    with pytest.raises(CommandFailed) as refused:
        run_command(SetupDisks(), config, {"stripe": stripe})
    assert refused.value.code == "disk-refused" and "not all blank" in refused.value.message
