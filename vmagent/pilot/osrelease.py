"""Which operating system this is, from ``/etc/os-release``, and whether vmagent supports it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Dict

from ..errors import NodeUnfit

EL_IDS = {"rhel", "almalinux", "rocky", "centos", "ol", "scientific", "fedora"}
SUPPORTED = {
    ("el", "8"),
    ("el", "9"),
    ("debian", "11"),
    ("debian", "12"),
    ("ubuntu", "22.04"),
    ("ubuntu", "24.04"),
}


@dataclass(frozen=True)
class OsRelease:
    """The parts of os-release vmagent decides on: family (el, debian, ubuntu), major version, name."""

    id: str
    family: str
    version: str
    pretty_name: str


def parse(text: str) -> Dict[str, str]:
    found = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            parts = shlex.split(value, posix=True) or [""]
            found[key.strip()] = parts[0]
    return found


def identify(text: str, source: str = "/etc/os-release") -> OsRelease:
    """The OS described by os-release ``text``; ``NodeUnfit`` (500) when it is not supported."""
    fields = parse(text)
    os_id = fields.get("ID", "").lower()
    likes = set(fields.get("ID_LIKE", "").lower().split())
    version = fields.get("VERSION_ID", "")
    if os_id in EL_IDS or likes & {"rhel", "centos", "fedora"}:
        family, version = "el", version.split(".")[0]
    elif os_id == "debian":
        family = "debian"
    elif os_id == "ubuntu":
        family = "ubuntu"
    else:
        family = os_id or "unknown"
    name = fields.get("PRETTY_NAME") or f"{os_id} {version}"
    if (family, version) not in SUPPORTED:
        allowed = ", ".join(f"{f}{v}" for f, v in sorted(SUPPORTED))
        raise NodeUnfit(
            f"{source}: {name} is not supported (family {family}, version {version or '?'})",
            hint=f"use one of: {allowed}",
        )
    return OsRelease(os_id, family, version, name)


def family_of(path: str) -> str:
    """The OS family of the os-release file at ``path`` (refusing unsupported systems)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return identify(fh.read(), path).family
    except OSError as exc:
        raise NodeUnfit(f"{path}: cannot read ({exc.strerror})") from None
