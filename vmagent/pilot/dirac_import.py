"""Turn a DIRAC Pilot ``pilot.json`` into a vmagent configuration.

``pilot.json`` is a dump of the CS Operations section: options merge from the defaults down to the
setup's (``Setups/<setup>``) or the VO's (``<vo>/Pilot``) section; ``Commands`` is keyed by CE type
with a ``Defaults`` fallback. DIRAC command names map onto vmagent's; what has no equivalent is
reported, never silently dropped.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

import yaml

from ..errors import ConfigError

MAPPING = {
    "CheckWorkerNode": ["check-node"],
    "InstallDIRAC": ["install-dirac"],
    "ConfigureBasics": ["configure-dirac"],
    "ConfigureSite": ["configure-dirac"],
    "ConfigureArchitecture": ["configure-dirac"],
    "ConfigureCPURequirements": ["configure-dirac"],
    "CheckCECapabilities": ["configure-dirac"],
    "CheckWNCapabilities": ["configure-dirac"],
    "LaunchAgent": ["setup-mjf", "launch"],
}
NO_EQUIVALENT = {
    "RegisterPilot": "vmagent VMs register with the vmagent manager (monitor, http endpoint) instead",
    "ConfigureDIRAC": "covered by configure-dirac",
}


def convert_file(
    path: str, *, vo: Optional[str] = None, ce_type: str = "Defaults", setup: Optional[str] = None
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
    config, report = convert(doc, vo=vo, ce_type=ce_type, setup=setup, source=path)
    header = "".join(
        f"# {line}\n" for line in [f"Converted from {path} by vmagent pilot import-dirac."] + report
    )
    return header + yaml.safe_dump(config, sort_keys=False), report


def pilot_section(
    doc: Dict[str, Any], vo: Optional[str], setup: Optional[str], source: str
) -> Dict[str, Any]:
    """The merged Pilot options: defaults first, then the setup's or the VO's own."""
    layers: List[Any] = []
    setups = doc.get("Setups") or {}
    chosen = setup or doc.get("DefaultSetup")
    layers += [setups.get("Defaults"), setups.get(chosen) if chosen else None]
    layers += [(doc.get("Defaults") or {}).get("Pilot")]
    if vo:
        if not isinstance(doc.get(vo), dict):
            known = sorted(k for k, v in doc.items() if isinstance(v, dict) and "Pilot" in v)
            raise ConfigError(
                source,
                [(vo, f"no section for VO {vo!r}; VO sections: {', '.join(known) or '(none)'}")],
            )
        layers.append(doc[vo].get("Pilot"))
    merged: Dict[str, Any] = {}
    for layer in layers:
        if isinstance(layer, dict):
            merged.update(layer)
    return merged


def convert(
    doc: Dict[str, Any],
    *,
    vo: Optional[str] = None,
    ce_type: str = "Defaults",
    setup: Optional[str] = None,
    source: str = "pilot.json",
) -> Tuple[Dict[str, Any], List[str]]:
    """The vmagent configuration dict and report lines for an already-parsed pilot.json."""
    pilot = pilot_section(doc, vo, setup, source)
    commands_by_ce = pilot.get("Commands") or {}
    names = commands_by_ce.get(ce_type) or commands_by_ce.get("Defaults") or []
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    report: List[str] = []
    if ce_type not in commands_by_ce and names:
        report.append(f"no Commands for CE type {ce_type!r}: took Defaults")
    if not names:
        report.append("no Commands found: used vmagent's default pipeline")
        names = ["CheckWorkerNode", "InstallDIRAC", "ConfigureBasics", "LaunchAgent"]
    ours: List[str] = []
    for name in names:
        mapped = _map(name, report)
        ours += [m for m in mapped if m not in ours]
    version = pilot.get("Version")
    version = version[0] if isinstance(version, list) and version else version
    extensions = pilot.get("Extensions") or []
    extensions = [extensions] if isinstance(extensions, str) else extensions
    servers = doc.get("ConfigurationServers") or pilot.get("ConfigurationServers") or []
    commands: List[Any] = []
    for name in ours:
        if name == "install-dirac":
            options: Dict[str, Any] = {"version": str(version) if version else None}
            if pilot.get("CVMFS_locations"):
                options["cvmfs_locations"] = list(pilot["CVMFS_locations"])
            if extensions:
                options["extension"] = f"{extensions[0]}DIRAC" if extensions[0] != "DIRAC" else None
                report.append(
                    f"extension {extensions[0]} mapped to pip package {options['extension']}: check the name"
                )
            commands.append({"name": name, "options": options})
        elif name == "configure-dirac":
            if not servers:
                report.append("no ConfigurationServers: set configure-dirac's cs_servers by hand")
            options = {
                "cs_servers": list(servers) or ["dips://cs.example.org:9135/Configuration/Server"]
            }
            if setup or doc.get("DefaultSetup"):
                options["setup"] = setup or doc.get("DefaultSetup")
            commands.append({"name": name, "options": options})
        else:
            commands.append(name)
    config: Dict[str, Any] = {"instance": {"vo": vo or ""}, "pilot": {"commands": commands}}
    return config, report


def _map(name: str, report: List[str]) -> List[str]:
    if name in MAPPING:
        return MAPPING[name]
    for dirac, ours in MAPPING.items():
        if name.endswith(dirac):  # a VO's own variant, e.g. LHCbConfigureArchitecture
            report.append(
                f"{name}: a VO variant of {dirac}, mapped to {', '.join(ours)}; "
                "a VO plugin may be needed for its extra behaviour"
            )
            return ours
    report.append(
        f"{name}: no vmagent equivalent ({NO_EQUIVALENT.get(name, 'write a VO plugin command')})"
    )
    return []
