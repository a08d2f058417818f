"""DIRAC pilot command names and pilot.json options, as vmagent takes them or says why not.

A DIRAC command maps onto vmagent's built-in commands (``MAPPING``), onto a pilot command plugin
that declares it (``dirac_commands = ("LHCbAddCVMFSTags",)`` on the plugin's class), or onto
nothing, and is then named in the import report. Options with no vmagent equivalent are named with
the reason (``UNCARRIED``).
"""

from __future__ import annotations

from typing import Dict, List, Tuple

from .. import plugins
from ..errors import PluginError

MAPPING = {
    "CheckWorkerNode": ["check-node"],
    "InstallDIRAC": ["install-dirac"],
    "ConfigureBasics": ["configure-dirac"],
    "ConfigureSite": ["configure-dirac"],
    "ConfigureArchitecture": ["configure-dirac"],
    "ConfigureArchitectureWithoutCLI": ["configure-dirac"],
    "ConfigureCPURequirements": ["configure-dirac"],
    "CheckCECapabilities": ["configure-dirac"],
    "CheckWNCapabilities": ["configure-dirac"],
    "LaunchAgent": ["setup-mjf", "launch"],
}
NO_EQUIVALENT = {
    "RegisterPilot": "vmagent VMs register with the vmagent manager (monitor, http endpoint) instead",
    "ConfigureDIRAC": "covered by configure-dirac",
    "GetPilotVersion": "vmagent is installed in the image; no pilot version to fetch",
    "NagiosProbes": "SAM/Nagios probes: run them with the exec command if needed",
}
_LOGGING = "DIRAC's remote pilot logging: vmagent's status file and monitor endpoints carry the log"
_SCRIPTS = "where DIRAC fetches the pilot scripts: vmagent is installed in the image"
_SERVER = "read by DIRAC's pilot submission on the server, not by the pilot"
UNCARRIED = {
    "RemoteLogging": _LOGGING,
    "RemoteLoggerURL": _LOGGING,
    "RemoteLoggerTimerInterval": _LOGGING,
    "RemoteLoggerBufsize": _LOGGING,
    "RemoteLoggerCEsWhiteList": _LOGGING,
    "LoggingShifterName": _LOGGING,
    "PilotLogLevel": "pilot log level: use vmagent -v",
    "Logging": "the old pilot's logging section: vmagent logs to its status file and journal",
    "UploadSE": "upload of pilot logs to a DIRAC storage element: no vmagent equivalent",
    "UploadPath": "upload of pilot logs to a DIRAC storage element: no vmagent equivalent",
    "pilotFileServer": _SCRIPTS,
    "pilotRepo": _SCRIPTS,
    "pilotRepoBranch": _SCRIPTS,
    "pilotVORepo": _SCRIPTS,
    "pilotVORepoBranch": _SCRIPTS,
    "pilotScriptsPath": _SCRIPTS,
    "pilotVOScriptsPath": _SCRIPTS,
    "CheckVersion": "the pilot's own version check: no vmagent equivalent",
    "GenericPilotGroup": _SERVER,
    "GenericPilotDN": _SERVER,
    "NagiosProbes": "SAM/Nagios probes: no vmagent equivalent",
    "NagiosPutURL": "SAM/Nagios probes: no vmagent equivalent",
    "Extensions": "DIRAC's pilot installs <Project>DIRAC and does not read Extensions: set Project",
    "InstallDIRACInContainer": "vmagent installs DIRAC on the VM, not in a container",
    "CVMFS_locations": "DIRAC's pilot reads it only in the new schema (files without Setups)",
}
VO_SECTION = "a VO section: DIRAC's pilot reads VO sections only in files without Setups"


def why_uncarried(path: str) -> str:
    """Why the option at ``path`` (``/Setups/Defaults/UploadSE``) has no vmagent equivalent."""
    if path.count("/") == 1:
        return VO_SECTION
    return UNCARRIED.get(path.rsplit("/", 1)[-1], "no vmagent equivalent")


def declared() -> Tuple[Dict[str, str], List[str]]:
    """DIRAC command names that installed pilot command plugins declare, and load failures."""
    group = plugins.GROUPS["pilot_commands"]
    found: Dict[str, str] = {}
    broken: List[str] = []
    for name in plugins.installed(group):
        try:
            command = plugins.load(group, name)
        except PluginError as exc:
            broken.append(f"{name}: {exc.message}")
            continue
        for dirac in getattr(command, "dirac_commands", ()) or ():
            found.setdefault(str(dirac), name)
    return found, broken


def map_command(name: str, plugged: Dict[str, str], report: List[str]) -> List[str]:
    """vmagent's commands for DIRAC's ``name``; what is not exact goes into ``report``."""
    if name in plugged:
        report.append(f"{name}: run by the plugin command {plugged[name]} (it declares {name})")
        return [plugged[name]]
    if name in MAPPING:
        return MAPPING[name]
    for dirac, ours in MAPPING.items():
        if name.endswith(dirac):  # a VO's own variant, e.g. LHCbConfigureBasics
            report.append(
                f"{name}: a VO variant of {dirac}, mapped to {', '.join(ours)}; "
                "a VO plugin declaring it is needed for its extra behaviour"
            )
            return ours
    why = NO_EQUIVALENT.get(name, "write a VO plugin command declaring it in dirac_commands")
    report.append(f"{name}: no vmagent equivalent ({why})")
    return []
