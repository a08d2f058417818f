"""Plugins through entry points: one group per extension point, built-ins registered the same way.

Every configured name is resolved before anything runs. An unknown name is an error that lists what
is installed; a broken plugin is an error naming the plugin, its distribution and the defect.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterable, List, Tuple

from .errors import PluginError

GROUPS = {
    "pilot_commands": "vmagent.pilot_commands",
    "endpoints": "vmagent.endpoints",
    "payload_sources": "vmagent.payload_sources",
    "masonry_policies": "vmagent.masonry_policies",
    "halt_actions": "vmagent.halt_actions",
}


@dataclass(frozen=True)
class Plugin:
    """One entry point: its name, where it points and which distribution provides it."""

    group: str
    name: str
    value: str
    distribution: str
    version: str


_PRESET: Dict[Tuple[str, str], Plugin] = {}


def preset(plugins: Iterable[Plugin]) -> None:
    """Take these resolutions as given (made by a short child process that read the entry points).

    The long-lived monitor uses this to never import ``importlib.metadata`` (about 3 MiB resident).
    """
    _PRESET.update({(p.group, p.name): p for p in plugins})


def as_dict(plugin: Plugin) -> Dict[str, str]:
    return asdict(plugin)


def installed(group: str) -> Dict[str, List[Plugin]]:
    """All entry points of ``group`` by name (a name provided twice maps to two plugins)."""
    from importlib import metadata

    found: Dict[str, List[Plugin]] = {}
    seen = set()
    for dist in metadata.distributions():
        dist_name = dist.metadata["Name"] or "?"
        for ep in dist.entry_points:
            if ep.group != group:
                continue
            key = (ep.name, ep.value, dist_name)
            if key in seen:  # the same distribution seen twice on sys.path
                continue
            seen.add(key)
            found.setdefault(ep.name, []).append(
                Plugin(group, ep.name, ep.value, dist_name, dist.version)
            )
    return dict(sorted(found.items()))


def describe(group: str) -> str:
    names = sorted(installed(group))
    return ", ".join(names) if names else "(none)"


def resolve(group: str, name: str) -> Plugin:
    """The one plugin called ``name`` in ``group``, or a ``PluginError`` saying what is installed."""
    if (group, name) in _PRESET:
        return _PRESET[(group, name)]
    candidates = installed(group).get(name, [])
    if not candidates:
        raise PluginError(
            f"no plugin {name!r} in {group}; installed: {describe(group)}",
            hint="check the spelling or pip-install the package that provides it",
        )
    if len(candidates) > 1:
        owners = ", ".join(f"{p.distribution} ({p.value})" for p in candidates)
        raise PluginError(
            f"plugin {name!r} in {group} is provided twice: {owners}", hint="uninstall one of them"
        )
    return candidates[0]


def load(group: str, name: str) -> Any:
    """Import and return the object behind plugin ``name``."""
    return load_resolved(resolve(group, name))


def load_resolved(plugin: Plugin) -> Any:
    """Import and return the object behind ``plugin`` (from ``resolve``)."""
    module_name, _, attr = plugin.value.partition(":")
    try:
        obj: Any = __import__(module_name, fromlist=["_"])
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
    except Exception as exc:  # noqa: BLE001 - any defect in a plugin is reported, not raised raw
        raise PluginError(
            f"plugin {plugin.name!r} in {plugin.group} from {plugin.distribution} {plugin.version} "
            f"({plugin.value}) cannot be loaded: {type(exc).__name__}: {exc}",
            hint=f"reinstall or fix the {plugin.distribution} package",
        ) from exc
    return obj
