"""A bootable Debian 12 image with cloud-init, built once with debootstrap and cached by recipe.

No loop devices are needed: the root filesystem is made with ``mkfs.ext4 -d``. The guest gets its
network from QEMU's user-mode DHCP through systemd-networkd; cloud-init's own network rendering is
switched off so that the two never disagree.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict

SUITES = {"bookworm": "3.11", "bullseye": "3.9"}  # suite: its python3
INCLUDE = "systemd,systemd-sysv,udev,dbus,python3,python3-venv,ca-certificates,iproute2,kmod"
PACKAGES = ["cloud-init", "linux-image-cloud-amd64"]
NETWORK = "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n"
CLOUD_CFG = "datasource_list: [NoCloud, None]\nnetwork: {config: disabled}\n"
RECIPE = "|".join([INCLUDE, *PACKAGES, NETWORK, CLOUD_CFG, "v2"])
CACHE = Path(os.environ.get("VMAGENT_E2E_CACHE", "/var/cache/vmagent-e2e"))


def run(argv, **kw) -> None:
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, **kw)


def build(log, suite: str = "bookworm") -> Dict[str, Path]:
    """The cached image (root.img, vmlinuz, initrd.img) of ``suite``, built when the recipe changed."""
    target = CACHE / f"{suite}-{hashlib.sha256(RECIPE.encode()).hexdigest()[:16]}"
    files = {name: target / name for name in ("root.img", "vmlinuz", "initrd.img")}
    if all(p.exists() for p in files.values()):
        return files
    work = target.with_suffix(".build")
    shutil.rmtree(work, ignore_errors=True)
    rootfs = work / "rootfs"
    rootfs.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"}
    env["DEBIAN_FRONTEND"] = "noninteractive"
    mirror = _mirror()
    run(
        ["debootstrap", "--variant=minbase", f"--include={INCLUDE}", suite, str(rootfs), mirror],
        stdout=log,
        stderr=log,
        env=env,
    )
    (rootfs / "etc/kernel/postinst.d").mkdir(parents=True, exist_ok=True)
    run(
        ["chroot", str(rootfs), "apt-get", "install", "-y", "--no-install-recommends", *PACKAGES],
        stdout=log,
        stderr=log,
        env=env,
    )
    (rootfs / "etc/systemd/network/80-dhcp.network").write_text(NETWORK)
    (rootfs / "etc/cloud/cloud.cfg.d/99-vmagent-e2e.cfg").write_text(CLOUD_CFG)
    (rootfs / "etc/fstab").write_text("LABEL=rootfs / ext4 defaults 0 1\n")
    (rootfs / "etc/hostname").write_text("vmagent-e2e\n")
    for unit in ("systemd-networkd.service",):
        link = rootfs / "etc/systemd/system/multi-user.target.wants" / unit
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(f"/lib/systemd/system/{unit}")
    boot = rootfs / "boot"
    kernel = sorted(boot.glob("vmlinuz-*"))[-1]
    initrd = sorted(boot.glob("initrd.img-*"))[-1]
    shutil.copy(kernel, work / "vmlinuz")
    shutil.copy(initrd, work / "initrd.img")
    shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
    run(
        ["mkfs.ext4", "-q", "-L", "rootfs", "-d", str(rootfs), str(work / "root.img"), "3G"],
        stdout=log,
        stderr=log,
    )
    shutil.rmtree(rootfs)
    shutil.rmtree(target, ignore_errors=True)
    work.rename(target)
    return files


def _mirror() -> str:
    """The Debian mirror this machine already uses."""
    for source in Path("/etc/apt/sources.list.d").glob("*.sources"):
        for line in source.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split(":", 1)[1].strip()
    raise RuntimeError("no Debian mirror configured in /etc/apt/sources.list.d")


if __name__ == "__main__":
    import sys
    import time

    started = time.monotonic()
    print(build(sys.stdout, *sys.argv[1:2]), f"{time.monotonic() - started:.0f} s")
