"""Plugins through entry points: one group per extension point, built-ins registered the same way.

The one place where a plugin is resolved (``resolve``), loaded and checked against its group's
interface (``load``, ``vmagent.interfaces``), and its options validated and defaulted
(``examine``, which returns every problem, and ``configure``, which raises them). An unknown name is
an error that lists what is installed; a broken plugin is an error naming the plugin, its
distribution and the defect.

Entry points are read from the ``entry_points.txt`` of every ``*.dist-info`` (or ``*.egg-info``)
directory on ``sys.path``, as ``importlib.metadata`` finds them, without importing it: the
long-lived monitor resolves its plugins itself and stays about 1 MiB smaller.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from . import interfaces
from .config_validation import apply_defaults, validation_problems
from .errors import ConfigError, PluginError

GROUPS = {
    "pilot_commands": "vmagent.pilot_commands",
    "endpoints": "vmagent.endpoints",
    "payload_sources": "vmagent.payload_sources",
    "masonry_policies": "vmagent.masonry_policies",
    "halt_actions": "vmagent.halt_actions",
}
NO_OPTIONS: Mapping[str, Any] = {"type": "object", "additionalProperties": False}
Problem = Tuple[str, str]


@dataclass(frozen=True)
class Plugin:
    """One entry point: its name, where it points and which distribution provides it."""

    group: str
    name: str
    value: str
    distribution: str
    version: str

    def describe(self) -> str:
        return (
            f"plugin {self.name!r} in {self.group} from {self.distribution} {self.version} "
            f"({self.value})"
        )


@dataclass(frozen=True)
class Configured:
    """A resolved, loaded and checked plugin with its options validated and defaulted."""

    plugin: Plugin
    factory: Any
    options: Mapping[str, Any]


def as_dict(plugin: Plugin) -> Dict[str, str]:
    return asdict(plugin)


_FOUND: Dict[Tuple[str, ...], Dict[str, List[Plugin]]] = {}


def installed(group: str) -> Dict[str, List[Plugin]]:
    """All entry points of ``group`` by name (a name provided twice maps to two plugins)."""
    key = tuple(sys.path)
    if key not in _FOUND:
        _FOUND.clear()
        _FOUND[key] = _discover()
    found: Dict[str, List[Plugin]] = {}
    for plugin in _FOUND[key].get(group, []):
        found.setdefault(plugin.name, []).append(plugin)
    return dict(sorted(found.items()))


def _discover() -> Dict[str, List[Plugin]]:
    """Every entry point of every distribution on ``sys.path``, by group, each listed once."""
    by_group: Dict[str, List[Plugin]] = {}
    seen = set()
    for folder in dict.fromkeys(entry or "." for entry in sys.path):
        try:
            names = sorted(os.listdir(folder))
        except OSError:  # missing, not a directory, a zip file
            continue
        for name in names:
            if not name.endswith((".dist-info", ".egg-info")):
                continue
            for plugin in _read_distribution(os.path.join(folder, name)):
                key = (plugin.group, plugin.name, plugin.value, plugin.distribution)
                if key not in seen:  # the same distribution seen twice on sys.path
                    seen.add(key)
                    by_group.setdefault(plugin.group, []).append(plugin)
    return by_group


def _read_distribution(directory: str) -> List[Plugin]:
    text = _read(os.path.join(directory, "entry_points.txt"))
    if not text:
        return []
    metadata = "METADATA" if directory.endswith(".dist-info") else "PKG-INFO"
    headers = _headers(_read(os.path.join(directory, metadata)))
    stem = os.path.basename(directory).rsplit(".", 1)[0]
    guessed_name, _, guessed_version = stem.partition("-")
    distribution = headers.get("Name") or guessed_name
    version = headers.get("Version") or guessed_version.partition("-")[0] or "?"
    found = []
    group = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1].strip()
        elif group.startswith("vmagent.") and "=" in line:
            name, _, value = line.partition("=")
            found.append(Plugin(group, name.strip(), value.strip(), distribution, version))
    return found


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def _headers(text: str) -> Dict[str, str]:
    """``Name`` and ``Version`` from a core metadata file (headers end at the first blank line)."""
    found: Dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        if key in ("Name", "Version") and key not in found:
            found[key] = value.strip()
    return found


def describe(group: str) -> str:
    names = sorted(installed(group))
    return ", ".join(names) if names else "(none)"


def resolve(group: str, name: str) -> Plugin:
    """The one plugin called ``name`` in ``group``, or a ``PluginError`` saying what is installed."""
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
    """Import and return the object behind plugin ``name``, checked against its group's interface."""
    return load_resolved(resolve(group, name))


def load_resolved(plugin: Plugin) -> Any:
    """Import and return the object behind ``plugin`` (from ``resolve``), checked likewise."""
    module_name, _, attr = plugin.value.partition(":")
    try:
        obj: Any = __import__(module_name.strip(), fromlist=["_"])
        for part in attr.strip().split(".") if attr.strip() else []:
            obj = getattr(obj, part)
    except Exception as exc:  # noqa: BLE001 - any defect in a plugin is reported, not raised raw
        raise PluginError(
            f"{plugin.describe()} cannot be loaded: {type(exc).__name__}: {exc}",
            hint=f"reinstall or fix the {plugin.distribution} package",
        ) from exc
    misfits = interfaces.misfits(plugin.group, obj)
    if misfits:
        noun = interfaces.INTERFACES[plugin.group].noun
        raise PluginError(
            f"{plugin.describe()} does not fit the {noun} interface: {'; '.join(misfits)}",
            hint=f"fix the {plugin.distribution} package (the interface: vmagent.interfaces)",
        )
    return obj


def examine(
    group: str,
    name: str,
    options: Optional[Mapping[str, Any]] = None,
    *,
    at: str,
    options_at: str = "",
    validate: bool = True,
) -> Tuple[Optional[Configured], List[Problem]]:
    """Resolve, load and check plugin ``name``, validate and default its ``options``.

    Returns the plugin (None when it cannot be used) and every problem as ``(dotted.path,
    message)``: the name's at ``at``, the options' below ``options_at``. ``validate=False`` only
    fills in defaults, for options already validated (the monitor, after its configuration check).
    """
    try:
        plugin = resolve(group, name)
        factory = load_resolved(plugin)
    except PluginError as exc:
        return None, [(at, exc.message)]
    settings, problems = validated_options(factory, options, options_at, validate=validate)
    if problems:
        return None, problems
    return Configured(plugin, factory, settings), []


def configure(
    source: str,
    group: str,
    name: str,
    options: Optional[Mapping[str, Any]] = None,
    *,
    at: str,
    options_at: str = "",
    validate: bool = True,
) -> Configured:
    """``examine``, raising: a ``PluginError`` for the plugin, a ``ConfigError`` for its options."""
    plugin = resolve(group, name)
    factory = load_resolved(plugin)
    settings, problems = validated_options(factory, options, options_at, validate=validate)
    if problems:
        raise ConfigError(source, problems)
    return Configured(plugin, factory, settings)


def validated_options(
    factory: Any, options: Optional[Mapping[str, Any]], at: str = "", *, validate: bool = True
) -> Tuple[Dict[str, Any], List[Problem]]:
    """``options`` checked against ``factory.options_schema`` (none accepted without one), defaulted."""
    settings = dict(options or {})
    schema = getattr(factory, "options_schema", NO_OPTIONS)
    if validate:
        problems = validation_problems(schema, settings, at)
        if problems:
            return settings, problems
    apply_defaults(schema, settings)
    return settings, []
