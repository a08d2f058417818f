"""Read a DIRAC Pilot ``pilot.json`` the way DIRAC's pilot reads it.

Two schemas, told apart as the pilot does (a ``Setups`` key means the old one):

- old: ``Setups/<setup>`` over ``Setups/Defaults`` for Commands, CommandExtensions, Version,
  Project and ``ConfigurationServer`` (a string), the top-level ``ConfigurationServers`` below them;
  the pilot reads nothing else there (CVMFS locations keep the pilot's built-in ones).
- new: the sections ``/Defaults/Pilot``, ``/<setup>/Pilot``, ``/<vo>/Defaults/Pilot``,
  ``/<vo>/<setup>/Pilot`` and ``/<vo>/Pilot`` merged key by key in that order (a later section's
  ``Commands`` replaces an earlier one's whole), the top-level ``ConfigurationServers`` list.

Commands are looked up by the grid CE type (``CEs/<host>/GridCEType``, or given), then
``Defaults``; without any, the pilot's built-in list. What was read is returned with the names of
the options it holds that nobody read, so that the import can report them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

# DIRAC's pilot runs these when pilot.json names no commands (PilotParams' built-in list)
BUILT_IN = (
    "CheckWorkerNode",
    "InstallDIRAC",
    "ConfigureBasics",
    "RegisterPilot",
    "CheckCECapabilities",
    "CheckWNCapabilities",
    "ConfigureSite",
    "ConfigureArchitecture",
    "ConfigureCPURequirements",
    "LaunchAgent",
)
# DIRAC's pilot probes these for releases when pilot.json does not say (PilotParams' default)
CVMFS_DEFAULT = ("/cvmfs/grid.cern.ch", "/cvmfs/dirac.egi.eu")
READ = frozenset({"Commands", "CommandExtensions", "Version", "Project", "CVMFS_locations"})
READ_OLD = frozenset({"Commands", "CommandExtensions", "Version", "Project", "ConfigurationServer"})


@dataclass(frozen=True)
class CE:
    """What ``CEs/<host>`` says about the CE this VM serves."""

    host: str = ""
    site: str = ""
    queue: str = ""
    grid_type: str = ""
    local_type: str = ""
    unread: Tuple[str, ...] = ()


@dataclass(frozen=True)
class PilotJson:
    """The settings DIRAC's pilot takes from one pilot.json for one VO, setup and CE."""

    schema: str
    setup: str
    ce: CE
    grid_ce_type: str
    commands: Tuple[str, ...]
    commands_from: str
    command_extensions: Tuple[str, ...]
    version: str
    project: str
    cvmfs_locations: Tuple[str, ...]
    cvmfs_from: str
    cs_servers: Tuple[str, ...]
    preferred_url_patterns: Tuple[str, ...]
    options: Dict[str, Any]
    unread: Dict[str, Any] = field(default_factory=dict)
    notes: Tuple[str, ...] = ()


def names(value: Any) -> List[str]:
    """A list or a comma-separated string as a list of stripped, non-empty names."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return [item.strip() for item in items if item.strip()]


def first(value: Any) -> str:
    """The first of comma-separated versions (the pilot takes the first), or ``""``."""
    found = names(value)
    return found[0] if found else ""


def section(doc: Dict[str, Any], path: str) -> Dict[str, Any]:
    """The dict at ``/a/b/c`` in ``doc``, or an empty one."""
    target: Any = doc
    for part in path.strip("/").split("/"):
        target = target.get(part) if isinstance(target, dict) else None
    return target if isinstance(target, dict) else {}


def read_ce(doc: Dict[str, Any], host: str, queue: str) -> CE:
    """``CEs/<host>``: site, grid CE type and the local CE type (a queue's own overrides)."""
    entry = section(doc, "CEs").get(host)
    if not isinstance(entry, dict):
        return CE(host=host, queue=queue)
    queues = [k for k, v in entry.items() if isinstance(v, dict)]
    if not queue:
        queue = str(entry.get("Queue") or (queues[0] if len(queues) == 1 else ""))
    local = str(entry.get("LocalCEType") or "")
    own: Dict[str, Any] = section(entry, queue) if queue else {}
    local = str(own.get("LocalCEType") or local)
    taken = {"Site", "Queue", "GridCEType", "LocalCEType"}
    unread = [k for k in entry if k not in taken and k not in queues]
    unread += [f"{queue}/{k}" for k in own if k != "LocalCEType"]
    return CE(
        host=host,
        site=str(entry.get("Site") or ""),
        queue=queue,
        grid_type=str(entry.get("GridCEType") or ""),
        local_type=local,
        unread=tuple(unread),
    )


def lookup_commands(found: List[Tuple[str, Any]], grid_ce_type: str) -> Tuple[List[str], str]:
    """The first of ``found`` (path, Commands dict) holding the CE type, then Defaults, per path."""
    for path, commands in found:
        for key in (grid_ce_type, "Defaults"):
            if key and isinstance(commands, dict) and commands.get(key) is not None:
                return names(commands[key]), f"{path}/Commands/{key}"
    return list(BUILT_IN), "DIRAC's built-in list (no matching Commands in the file)"


def read(
    doc: Dict[str, Any],
    *,
    vo: str = "",
    setup: str = "",
    ce_host: str = "",
    queue: str = "",
    grid_ce_type: str = "",
) -> PilotJson:
    """What DIRAC's pilot would take from ``doc`` for this VO, setup, CE and queue."""
    setup = setup or str(doc.get("DefaultSetup") or "")
    ce = read_ce(doc, ce_host, queue) if ce_host else CE(queue=queue)
    grid_ce_type = grid_ce_type or ce.grid_type
    reader = _read_old if "Setups" in doc else _read_new
    return reader(doc, vo, setup, ce, grid_ce_type)


def _read_new(doc: Dict[str, Any], vo: str, setup: str, ce: CE, grid_type: str) -> PilotJson:
    paths = ["/Defaults/Pilot"] + ([f"/{setup}/Pilot"] if setup else [])
    if vo:
        paths += [f"/{vo}/Defaults/Pilot"]
        paths += [f"/{vo}/{setup}/Pilot"] if setup else []
        paths += [f"/{vo}/Pilot"]
    merged: Dict[str, Any] = {}
    origin: Dict[str, str] = {}
    notes: List[str] = []
    for path in paths:
        layer = section(doc, path)
        if "Commands" in layer and "Commands" in merged:
            hidden = sorted(set(merged["Commands"]) - set(layer["Commands"] or {}))
            if hidden:
                notes.append(
                    f"Commands of {path} replace those of {origin['Commands']} (DIRAC merges "
                    f"sections key by key): CE types {', '.join(hidden)} of the latter are unused"
                )
        merged.update(layer)
        origin.update({key: path for key in layer})
    commands, commands_from = lookup_commands(
        [(origin.get("Commands", ""), merged.get("Commands"))], grid_type
    )
    cvmfs = names(merged.get("CVMFS_locations"))
    unread = {f"{origin[k]}/{k}": v for k, v in merged.items() if k not in READ}
    return PilotJson(
        schema="new",
        setup=setup,
        ce=ce,
        grid_ce_type=grid_type,
        commands=tuple(commands),
        commands_from=commands_from,
        command_extensions=tuple(names(merged.get("CommandExtensions"))),
        version=first(merged.get("Version")),
        project=str(merged.get("Project") or ""),
        cvmfs_locations=tuple(cvmfs) if "CVMFS_locations" in merged else CVMFS_DEFAULT,
        cvmfs_from=origin.get("CVMFS_locations", "DIRAC's pilot default"),
        cs_servers=tuple(names(doc.get("ConfigurationServers"))),
        preferred_url_patterns=tuple(names(doc.get("PreferredURLPatterns"))),
        options=merged,
        unread=unread,
        notes=tuple(notes),
    )


def _read_old(doc: Dict[str, Any], vo: str, setup: str, ce: CE, grid_type: str) -> PilotJson:
    mine = section(doc, f"Setups/{setup}") if setup else {}
    defaults = section(doc, "Setups/Defaults")
    # The pilot's last fallback is /Defaults/Commands/Defaults (top level), then its built-in list.
    found = [
        (f"/Setups/{setup}", mine.get("Commands")),
        ("/Setups/Defaults", {grid_type: defaults.get("Commands", {}).get(grid_type)}),
        ("/Defaults", {"Defaults": section(doc, "Defaults/Commands").get("Defaults")}),
    ]
    commands, commands_from = lookup_commands(found, grid_type)

    def pick(key: str) -> Any:
        return mine.get(key) if key in mine else defaults.get(key)

    servers = names(doc.get("ConfigurationServers"))
    servers = names(pick("ConfigurationServer")) or servers
    unread = {f"/Setups/{setup}/{k}": v for k, v in mine.items() if k not in READ_OLD}
    unread.update({f"/Setups/Defaults/{k}": v for k, v in defaults.items() if k not in READ_OLD})
    for key in ("Commands", "CommandExtensions", "Version", "Project", "ConfigurationServer"):
        if key in mine and key in defaults and key != "Commands":
            unread[f"/Setups/Defaults/{key}"] = defaults[key]
    notes = []
    if "Defaults" in (defaults.get("Commands") or {}) and commands_from.startswith("DIRAC"):
        notes.append(
            "/Setups/Defaults/Commands/Defaults is not read by DIRAC's pilot (its last fallback is "
            "/Defaults/Commands/Defaults): it runs its built-in list"
        )
    if vo and isinstance(doc.get(vo), dict):
        unread[f"/{vo}"] = doc[vo]
    merged = {**defaults, **mine}
    return PilotJson(
        schema="old",
        setup=setup,
        ce=ce,
        grid_ce_type=grid_type,
        commands=tuple(commands),
        commands_from=commands_from,
        command_extensions=tuple(names(pick("CommandExtensions"))),
        version=first(pick("Version")),
        project=str(pick("Project") or ""),
        cvmfs_locations=CVMFS_DEFAULT,
        cvmfs_from="DIRAC's pilot default (the old schema has no CVMFS_locations)",
        cs_servers=tuple(servers),
        preferred_url_patterns=tuple(names(doc.get("PreferredURLPatterns"))),
        options=merged,
        unread=unread,
        notes=tuple(notes),
    )
