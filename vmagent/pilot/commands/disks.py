"""``setup-disks``: find attached volumes by serial, id, label or UUID; format only blank ones; mount.

Never by ``/dev/vdX`` order (it changes between boots). The root disk, mounted devices, the
cloud-init seed and swap are never touched; a device with a filesystem is mounted, not reformatted,
unless ``force`` names it. fstab entries use the UUID with ``nofail``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from ...errors import CommandFailed
from ..command import Context, Result

LSBLK = [
    "lsblk",
    "-J",
    "-b",
    "-p",
    "-o",
    "NAME,TYPE,SIZE,FSTYPE,LABEL,UUID,SERIAL,MOUNTPOINT,PKNAME,RO",
]
MATCH_KEYS = ("serial", "by_id", "label", "uuid")


class SetupDisks:
    """Format blank attached volumes, mount them at their places and record them in fstab by UUID."""

    name = "setup-disks"
    defaults = {"timeout": 600.0}
    options_schema: Dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "$defs": {
            "match": {
                "type": "object",
                "additionalProperties": False,
                "minProperties": 1,
                "maxProperties": 1,
                "properties": {k: {"type": "string", "minLength": 1} for k in MATCH_KEYS},
            }
        },
        "properties": {
            "volumes": {
                "type": "array",
                "default": [],
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["match", "mount"],
                    "properties": {
                        "match": {"$ref": "#/$defs/match"},
                        "mount": {"type": "string", "pattern": "^/"},
                        "fstype": {"enum": ["ext4", "xfs"], "default": "ext4"},
                        "force": {
                            "type": "boolean",
                            "default": False,
                            "description": "reformat even with a filesystem",
                        },
                        "owner": {
                            "type": ["string", "null"],
                            "default": None,
                            "description": "user:group of the mount",
                        },
                        "options": {"type": "string", "default": "defaults"},
                    },
                },
            },
            "device_timeout": {"type": "integer", "minimum": 1, "default": 30},
            "stripe": {
                "type": ["object", "null"],
                "default": None,
                "additionalProperties": False,
                "required": ["members", "mount"],
                "description": "several blank volumes as one RAID 0 (mdadm) mounted once",
                "properties": {
                    "members": {"type": "array", "minItems": 2, "items": {"$ref": "#/$defs/match"}},
                    "mount": {"type": "string", "pattern": "^/"},
                    "name": {
                        "type": "string",
                        "pattern": "^[a-z0-9-]+$",
                        "default": "vmagent-scratch",
                    },
                    "fstype": {"enum": ["ext4", "xfs"], "default": "xfs"},
                    "owner": {"type": ["string", "null"], "default": None},
                    "options": {"type": "string", "default": "defaults"},
                },
            },
            "swap_file": {
                "type": ["object", "null"],
                "default": None,
                "additionalProperties": False,
                "required": ["path", "size_mb"],
                "description": "optional swap file, e.g. on scratch",
                "properties": {
                    "path": {"type": "string", "pattern": "^/"},
                    "size_mb": {"type": "integer", "minimum": 1},
                },
            },
        },
    }

    def run(self, ctx: Context) -> Result:
        volumes = ctx.options["volumes"]
        stripe = ctx.options["stripe"]
        if not volumes and not stripe and not ctx.options["swap_file"]:
            return Result(skipped="no volumes configured")
        devices = _devices(ctx) if volumes or stripe else []
        mounted = []
        for volume in volumes:
            device = self._find(ctx, devices, volume["match"])
            mounted.append(self._prepare(ctx, device, volume))
        if stripe:
            mounted.append(self._stripe(ctx, devices, stripe))
        facts: Dict[str, Any] = {"disks": mounted}
        if ctx.options["swap_file"]:
            facts["swap_file"] = _swap_file(ctx, ctx.options["swap_file"])
        return Result(facts=facts)

    def _find(
        self, ctx: Context, devices: List[Dict[str, Any]], match: Dict[str, str]
    ) -> Dict[str, Any]:
        key, wanted = next(iter(match.items()))
        if key == "by_id":
            path = wanted if wanted.startswith("/") else f"/dev/disk/by-id/{wanted}"
            real = os.path.realpath(ctx.path(path))
            found = [d for d in devices if d["name"] == real or d["name"] == path]
        else:
            found = [d for d in devices if (d.get(key) or "") == wanted]
        if not found:
            raise CommandFailed(
                f"no attached volume with {key} {wanted!r}",
                code="disk-not-found",
                hint="check the volume is attached; 'lsblk -o NAME,SERIAL,LABEL,UUID' lists them",
            )
        device = found[0]
        if (
            device.get("fstype") == "swap"
            or (device.get("label") or "").lower() == "cidata"
            or device.get("ro")
        ):
            raise CommandFailed(
                f"{device['name']} is swap, the cloud-init seed or read-only: refused",
                code="disk-refused",
            )
        if device.get("mountpoint") in ("/", "/boot") or any(
            d.get("mountpoint") == "/" and d.get("pkname") == device["name"] for d in devices
        ):
            raise CommandFailed(
                f"{device['name']} holds the root filesystem: refused", code="disk-refused"
            )
        return device

    def _stripe(
        self, ctx: Context, devices: List[Dict[str, Any]], stripe: Dict[str, Any]
    ) -> Dict[str, Any]:
        """Create the RAID 0 from blank members once (members already in an array are reused), then mount it."""
        members = [self._find(ctx, devices, match)["name"] for match in stripe["members"]]
        md = f"/dev/md/{stripe['name']}"
        if os.path.ismount(ctx.path(stripe["mount"])):
            return {"device": md, "mount": stripe["mount"], "formatted": False}
        kinds = {next((d.get("fstype") for d in devices if d["name"] == m), None) for m in members}
        if kinds == {"linux_raid_member"}:
            ctx.run(["mdadm", "--assemble", md, *members], check=False)
        elif kinds == {None}:
            ctx.run(
                [
                    "mdadm",
                    "--create",
                    md,
                    "--run",
                    "--level=0",
                    f"--raid-devices={len(members)}",
                    *members,
                ]
            )
        else:
            raise CommandFailed(
                f"stripe members {', '.join(members)} are not all blank",
                code="disk-refused",
                hint="stripe only blank volumes; mount volumes with data one by one",
            )
        volume = {**stripe, "force": False}
        return self._prepare(ctx, {"name": md}, volume)

    def _prepare(
        self, ctx: Context, device: Dict[str, Any], volume: Dict[str, Any]
    ) -> Dict[str, Any]:
        name, target = device["name"], volume["mount"]
        if device.get("mountpoint"):
            if device["mountpoint"] not in (target, ctx.path(target)):
                raise CommandFailed(
                    f"{name} is already mounted at {device['mountpoint']}", code="disk-refused"
                )
            return {"device": name, "mount": target, "formatted": False}
        probe = ctx.run(["blkid", "-p", "-o", "export", name], check=False, read_only=True)
        blank = probe.returncode == 2
        formatted = False
        if blank or volume["force"]:
            ctx.run(
                [
                    f"mkfs.{volume['fstype']}",
                    *(["-F"] if volume["fstype"] == "ext4" else ["-f"]),
                    "-q",
                    name,
                ]
            )
            formatted = True
        uuid = _uuid(ctx, name) or device.get("uuid") or ""
        ctx.run(["mkdir", "-p", ctx.path(target)])
        ctx.run(["mount", name, ctx.path(target)])
        if volume["owner"]:
            ctx.run(["chown", volume["owner"], ctx.path(target)])
        self._fstab(ctx, uuid or name, target, volume)
        return {"device": name, "mount": target, "uuid": uuid, "formatted": formatted}

    def _fstab(self, ctx: Context, uuid: str, target: str, volume: Dict[str, Any]) -> None:
        source = f"UUID={uuid}" if not uuid.startswith("/") else uuid
        options = (
            f"{volume['options']},nofail,x-systemd.device-timeout={ctx.options['device_timeout']}s"
        )
        _fstab_line(ctx, target, f"{source} {target} {volume['fstype']} {options} 0 2")


def _fstab_line(ctx: Context, target: str, line: str) -> None:
    """Replace the fstab entry for ``target`` with ``line``."""
    path = ctx.path("/etc/fstab")
    current = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            current = fh.read()
    field = 0 if target == "none" else 1  # swap entries are keyed by their file
    key = line.split()[field : field + 1]
    kept = [entry for entry in current.splitlines() if entry.split()[field : field + 1] != key]
    ctx.write_file("/etc/fstab", "\n".join(kept + [line]) + "\n", 0o644)


def _devices(ctx: Context) -> List[Dict[str, Any]]:
    """Every block device, flattened, with blkid filling what lsblk missed."""
    devices = _flatten(
        json.loads(ctx.run(LSBLK, read_only=True).stdout or '{"blockdevices": []}')["blockdevices"]
    )
    for device in devices:
        if not device.get("uuid") and device.get("type") in (
            "disk",
            "part",
            "loop",
            "raid0",
            "lvm",
        ):
            device.update(
                _probe(ctx, device["name"])
            )  # without udev, lsblk may miss a new filesystem
    return devices


def _swap_file(ctx: Context, spec: Dict[str, Any]) -> str:
    """Create, enable and record a swap file once; an existing file is only switched on."""
    path, host = spec["path"], ctx.path(spec["path"])
    if not os.path.exists(host):
        ctx.run(["fallocate", "-l", f"{spec['size_mb']}M", host])
        ctx.run(["chmod", "600", host])
        ctx.run(["mkswap", host])
    if not _swap_active(host):
        ctx.run(["swapon", host])
    _fstab_line(ctx, "none", f"{path} none swap defaults,nofail 0 0")
    return path


def _swap_active(host: str) -> bool:
    try:
        with open("/proc/swaps", encoding="utf-8") as fh:
            return any(line.split()[:1] == [host] for line in fh.read().splitlines()[1:])
    except OSError:
        return False


def _probe(ctx: Context, device: str) -> Dict[str, Any]:
    """fstype, label and UUID straight from the device (exit 2: blank)."""
    done = ctx.run(["blkid", "-p", "-o", "export", device], check=False, read_only=True)
    found = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    keys = {"TYPE": "fstype", "LABEL": "label", "UUID": "uuid"}
    return {ours: found[theirs] for theirs, ours in keys.items() if found.get(theirs)}


def _uuid(ctx: Context, device: str) -> Optional[str]:
    done = ctx.run(["blkid", "-s", "UUID", "-o", "value", device], check=False, read_only=True)
    return done.stdout.strip() or None


def _flatten(devices: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    found = []
    for device in devices:
        found.append({k: v for k, v in device.items() if k != "children"})
        found.extend(_flatten(device.get("children", [])))
    return found
