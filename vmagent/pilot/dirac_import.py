"""Turn a DIRAC Pilot ``pilot.json`` into a vmagent configuration, and say what did not carry over.

``dirac_json`` reads the file as DIRAC's pilot would for one VO, setup and CE; this maps the
commands (``dirac_names``), the version, project, CVMFS locations, CS servers, site, CE, queue and
local CE type onto vmagent's commands and ``instance`` section. Every option that has no
equivalent is named in the report; a missing CS server is a named gap that check-config refuses,
never a placeholder.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

import yaml

from ..errors import ConfigError
from . import dirac_json, dirac_names
from .dirac_json import PilotJson

NO_PROJECT = ("", "DIRAC", "None")  # vanilla DIRAC: releases in <location>/dirac, pip DIRAC


def convert_file(
    path: str,
    *,
    vo: Optional[str] = None,
    ce_type: Optional[str] = None,
    setup: Optional[str] = None,
    ce: Optional[str] = None,
    queue: Optional[str] = None,
) -> Tuple[str, List[str]]:
    """The YAML text of a vmagent configuration and the report lines for ``path``."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise ConfigError(path, [("", f"cannot read: {exc.strerror}")]) from None
    except ValueError as exc:
        raise ConfigError(path, [("", f"not JSON: {exc}")]) from None
    if not isinstance(doc, dict):
        raise ConfigError(
            path, [("", "must be a JSON object (a dump of the CS Operations section)")]
        )
    config, report = convert(
        doc, vo=vo, ce_type=ce_type, setup=setup, ce=ce, queue=queue, source=path
    )
    lines = [f"Converted from {path} by vmagent pilot import-dirac."] + report
    header = "".join(f"# {line}\n" for line in lines)
    return header + yaml.safe_dump(config, sort_keys=False), report


def convert(
    doc: Dict[str, Any],
    *,
    vo: Optional[str] = None,
    ce_type: Optional[str] = None,
    setup: Optional[str] = None,
    ce: Optional[str] = None,
    queue: Optional[str] = None,
    source: str = "pilot.json",
) -> Tuple[Dict[str, Any], List[str]]:
    """The vmagent configuration dict and report lines for an already-parsed pilot.json."""
    _check_vo(doc, vo, source)
    host = ce or _only_ce(doc)
    if ce and ce not in dirac_json.section(doc, "CEs"):
        known = ", ".join(sorted(dirac_json.section(doc, "CEs"))) or "(none)"
        raise ConfigError(source, [(f"CEs.{ce}", f"no such CE; CEs: {known}")])
    read = dirac_json.read(
        doc, vo=vo or "", setup=setup or "", ce_host=host or "", queue=queue or "",
        grid_ce_type=ce_type or "",
    )  # fmt: skip
    report = _about_source(read, ce, host, doc)
    plugged, broken = dirac_names.declared()
    report += [f"plugin not loadable: {line}" for line in broken]
    ours: List[str] = []
    for name in read.commands:
        ours += [m for m in dirac_names.map_command(name, plugged, report) if m not in ours]
    commands = [_command(name, read, report) for name in ours]
    report += _command_extensions(read, plugged)
    report += _uncarried(read)
    instance = {"vo": vo or ""}
    instance.update({"site": read.ce.site} if read.ce.site else {})
    instance.update({"ce": read.ce.host} if read.ce.host else {})
    instance.update({"queue": read.ce.queue} if read.ce.queue else {})
    return {"instance": instance, "pilot": {"commands": commands}}, report


def _check_vo(doc: Dict[str, Any], vo: Optional[str], source: str) -> None:
    if not vo or "Setups" in doc or isinstance(doc.get(vo), dict):
        return
    known = sorted(k for k, v in doc.items() if isinstance(v, dict) and "Pilot" in v)
    known = [k for k in known if k not in ("Defaults", doc.get("DefaultSetup"))]
    message = f"no section for VO {vo!r}; VO sections: {', '.join(known) or '(none)'}"
    raise ConfigError(source, [(vo, message)])


def _only_ce(doc: Dict[str, Any]) -> str:
    ces = dirac_json.section(doc, "CEs")
    return next(iter(ces)) if len(ces) == 1 else ""


def _about_source(read: PilotJson, ce: Optional[str], host: str, doc: Dict[str, Any]) -> List[str]:
    report = [f"{read.schema} schema; setup {read.setup or '(none)'}"]
    if host and not ce:
        report.append(f"CE {host}: the only one in CEs, taken")
    if not host:
        count = len(dirac_json.section(doc, "CEs"))
        report.append(
            f"no CE chosen ({count} in CEs; pass --ce HOST): instance.site, ce and queue "
            "are not set, the LocalCEType is not known"
        )
    report.append(f"commands: {read.commands_from} (GridCEType {read.grid_ce_type or 'none'})")
    return report + list(read.notes)


def _command(name: str, read: PilotJson, report: List[str]) -> Any:
    if name == "install-dirac":
        return {"name": name, "options": _install_options(read, report)}
    if name == "configure-dirac":
        return {"name": name, "options": _configure_options(read, report)}
    if name == "launch":
        report.append(
            "LaunchAgent: launch starts vmagent's slot manager; for DIRAC's JobAgent in it set "
            "slots.mode: pilots and slots.pilot.argv"
        )
    return name


def _install_options(read: PilotJson, report: List[str]) -> Dict[str, Any]:
    options: Dict[str, Any] = {"version": read.version or None}
    if not read.version:
        report.append(
            "gap: no Version: install-dirac takes 'pro' on CVMFS and stops when it is not there"
        )
    if read.project in NO_PROJECT:
        if read.project:
            report.append(f"Project {read.project}: vanilla DIRAC (releases in <location>/dirac)")
    else:
        options["project"] = read.project
    locations = []
    for location in read.cvmfs_locations:
        if location.startswith("/"):
            locations.append(location.rstrip("/") or "/")
        else:
            report.append(
                f"not carried: CVMFS_locations entry {location!r} (not an absolute path; DIRAC's "
                "pilot does not expand it either)"
            )
    options["cvmfs_locations"] = locations
    report.append(f"CVMFS locations from {read.cvmfs_from}: {', '.join(locations) or '(none)'}")
    return options


def _configure_options(read: PilotJson, report: List[str]) -> Dict[str, Any]:
    options: Dict[str, Any] = {}
    if read.cs_servers:
        options["cs_servers"] = list(read.cs_servers)
    else:
        report.append(
            "gap: no ConfigurationServers (nor Setups/.../ConfigurationServer): set "
            "configure-dirac's cs_servers; check-config refuses the file until then"
        )
    if read.setup:
        options["setup"] = read.setup
    if read.ce.local_type:
        options["local_ce"] = read.ce.local_type
        report.append(
            f"LocalCEType {read.ce.local_type}: DIRAC's own inner CE in the pilot (configure-dirac "
            "local_ce); vmagent's pool mode runs payloads from its own sources, not DIRAC's "
            "matcher, so it does not replace DIRAC's Pool"
        )
    if read.preferred_url_patterns:
        patterns = ",".join(read.preferred_url_patterns)
        options["extra_args"] = ["-o", f"/DIRAC/PreferredURLPatterns={patterns}"]
    return options


def _command_extensions(read: PilotJson, plugged: Dict[str, str]) -> List[str]:
    if not read.command_extensions:
        return []
    names = ", ".join(read.command_extensions)
    plugins = ", ".join(f"{d} by {p}" for d, p in sorted(plugged.items())) or "none installed"
    return [
        f"CommandExtensions {names}: DIRAC looks up commands in <name>Commands modules first; "
        f"vmagent in pilot command plugins declaring dirac_commands ({plugins})"
    ]


def _uncarried(read: PilotJson) -> List[str]:
    lines = []
    for path, value in read.unread.items():
        key = path.rsplit("/", 1)[-1]
        if key == "Extensions" and dirac_json.names(value) in ([], ["None"], [read.project]):
            continue  # none, or the Project itself: nothing lost
        why = dirac_names.why_uncarried(path)
        lines.append(f"not carried: {path} = {_short(value)} ({why})")
    for key in read.ce.unread:
        path = f"/CEs/{read.ce.host}/{key}"
        lines.append(f"not carried: {path} ({dirac_names.why_uncarried(path)})")
    return lines


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."
