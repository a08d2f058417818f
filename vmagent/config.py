"""One YAML file, one JSON Schema, frozen settings.

The schema is ``vmagent/schema.json`` with each subsystem's section (``mjf``, ``slots``, ``monitor``)
taken from that package's own ``schema.json``. Each pilot command's options are validated against
the schema the command declares (through ``vmagent.plugins``, the one place plugins are checked).
Defaults come from the schema; nothing is read before it is valid. The YAML is read safely by
``vmagent.config_yaml``; schema problems and defaults come from ``vmagent.config_validation``;
what a valid document configures (plugins, accounts, ...) is checked by ``vmagent.config_check``.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, Optional, Tuple

from . import plugins
from .config_validation import Problem, apply_defaults, non_finite, validation_problems
from .config_yaml import MAX_DEPTH, MAX_NODES, read_text, yaml_document
from .errors import ConfigError

__all__ = [  # the names others import from here, some defined in the modules split out of it
    "COMMAND_DEFAULTS",
    "MAX_DEPTH",
    "MAX_NODES",
    "CommandSpec",
    "Config",
    "apply_defaults",
    "default_path",
    "document",
    "freeze",
    "from_dict",
    "host_path",
    "load",
    "non_finite",
    "parse",
    "read_text",
    "schema",
    "thaw",
    "validation_problems",
    "yaml_document",
]

DEFAULT_PATH = "/etc/vmagent/vmagent.yaml"
ENV_VAR = "VMAGENT_CONFIG"
SECTIONS = {"mjf": "vmagent.mjf", "slots": "vmagent.pool_ce", "monitor": "vmagent.monitor"}
COMMAND_KEYS = ("timeout", "retries", "backoff", "on_failure", "once_per_instance")
COMMAND_DEFAULTS = {
    "timeout": 600.0,
    "retries": 0,
    "backoff": 5.0,
    "on_failure": "abort",
    "once_per_instance": False,
}


def schema() -> Dict[str, Any]:
    """The whole configuration schema, sections included."""
    whole = json.loads(resources.files("vmagent").joinpath("schema.json").read_text())
    for section, package in SECTIONS.items():
        whole["properties"][section] = json.loads(
            resources.files(package).joinpath("schema.json").read_text()
        )
    return whole


def default_path() -> str:
    return os.environ.get(ENV_VAR) or DEFAULT_PATH


@dataclass(frozen=True)
class CommandSpec:
    """One step of the pipeline as configured, options validated and defaulted."""

    name: str
    options: Mapping[str, Any]
    timeout: float
    retries: int
    backoff: float
    on_failure: str
    once_per_instance: bool
    env: Mapping[str, str]
    index: int
    skip: Optional[str] = None


@dataclass(frozen=True)
class Config:
    """The validated configuration. ``data`` is the whole document with defaults, read-only."""

    source: str
    data: Mapping[str, Any]
    commands: Tuple[CommandSpec, ...]
    checked: bool = False  # True: every plugin's options were validated (vmagent.config_check)

    def section(self, name: str) -> Mapping[str, Any]:
        return self.data[name]

    @property
    def root(self) -> str:
        return self.data["paths"]["root"]

    def path(self, key: str) -> str:
        """``paths.<key>`` (or a pilot path such as ``pilot.status_file``) below the root."""
        section, _, name = key.rpartition(".")
        value = self.data[section or "paths"][name]
        return host_path(self.root, value)

    def plain(self) -> Dict[str, Any]:
        """A mutable deep copy of ``data``, for printing or dumping."""
        return thaw(self.data)


def host_path(root: str, path: str) -> str:
    """``path`` (absolute, as seen inside the VM) below ``root``."""
    if root in ("", "/"):
        return path
    return os.path.join(root, path.lstrip("/"))


def load(path: Optional[str] = None, *, overrides: Optional[Mapping[str, Any]] = None) -> Config:
    """Read, validate and freeze the configuration at ``path`` (default: $VMAGENT_CONFIG or /etc)."""
    source = path or default_path()
    text = read_text(source, hint=f"pass --config FILE or set {ENV_VAR}")
    return parse(text, source, overrides=overrides)


def trusted(doc: Mapping[str, Any], source: str) -> Config:
    """A document that ``vmagent.config_check`` has just accepted, with defaults, not validated again.

    Without the pilot commands: for the long-lived monitor, which thus never loads the JSON Schema
    library (several MiB resident for the process's whole life). ``checked`` tells the plugins
    that their options are valid already.
    """
    document: Dict[str, Any] = copy.deepcopy(dict(doc))
    apply_defaults(schema(), document)
    return Config(source, freeze(document), (), checked=True)


def parse(
    text: str, source: str = "<string>", *, overrides: Optional[Mapping[str, Any]] = None
) -> Config:
    """Validate YAML ``text`` (reported as ``source``) and return the frozen configuration."""
    doc = document(text, source)
    for key, value in (overrides or {}).items():
        _set_dotted(doc, key, value)
    return from_dict(doc, source)


def document(text: str, source: str) -> Dict[str, Any]:
    """YAML ``text`` read safely as a mapping of sections (not validated yet)."""
    doc = yaml_document(text, source)
    if doc is None:  # a truncated or wrongly mounted file must not pass for "all defaults"
        raise ConfigError(source, [("", "is empty: no settings at all")])
    if not isinstance(doc, dict):
        raise ConfigError(
            source, [("", f"must be a mapping of sections, not {type(doc).__name__}")]
        )
    return doc


def from_dict(doc: Mapping[str, Any], source: str = "<dict>") -> Config:
    """Validate an already-parsed document."""
    document: Dict[str, Any] = copy.deepcopy(dict(doc))
    return _validated(document, source)


def _validated(doc: Dict[str, Any], source: str) -> Config:
    commands, problems = checked(doc)
    if problems:
        raise ConfigError(source, problems)
    return Config(source, freeze(doc), commands)


def checked(doc: Dict[str, Any]) -> Tuple[Tuple[CommandSpec, ...], List[Problem]]:
    """Validate ``doc`` against the schema, fill in defaults (in place) and build the pipeline."""
    whole = schema()
    problems = validation_problems(whole, doc)
    apply_defaults(whole, doc)
    commands, command_problems = _commands(doc)
    return commands, sorted(set(problems) | set(command_problems))


def _commands(doc: Dict[str, Any]) -> Tuple[Tuple[CommandSpec, ...], List[Problem]]:
    """Every configured command resolved and checked, its options validated (``plugins.examine``)."""
    specs: List[CommandSpec] = []
    problems: List[Problem] = []
    pilot = doc.get("pilot")
    entries = pilot.get("commands") if isinstance(pilot, dict) else None
    if not isinstance(entries, list):
        return (), problems
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = entries[i] = {"name": entry, "options": {}}
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("name"), str)
            and isinstance(entry.setdefault("options", {}), dict)
        ):
            continue  # its shape is already reported by the schema
        where = f"pilot.commands.{i}"
        found, entry_problems = plugins.examine(
            plugins.GROUPS["pilot_commands"],
            entry["name"],
            entry["options"],
            at=f"{where}.name",
            options_at=f"{where}.options",
        )
        problems.extend(entry_problems)
        if found is not None:
            entry["options"] = dict(found.options)  # shown with its defaults by 'config show'
            specs.append(_spec(i, entry, found))
    return tuple(specs), problems


def _spec(index: int, entry: Mapping[str, Any], found: plugins.Configured) -> CommandSpec:
    settings: Dict[str, Any] = dict(COMMAND_DEFAULTS)
    settings.update(getattr(found.factory, "defaults", {}))
    settings.update({k: entry[k] for k in COMMAND_KEYS if k in entry})
    return CommandSpec(
        name=entry["name"],
        options=freeze(found.options),
        timeout=float(settings["timeout"]),
        retries=int(settings["retries"]),
        backoff=float(settings["backoff"]),
        on_failure=settings["on_failure"],
        once_per_instance=bool(settings["once_per_instance"]),
        env=freeze(entry.get("env", {})),
        index=index,
        skip=entry.get("skip"),
    )


def _set_dotted(doc: Dict[str, Any], key: str, value: Any) -> None:
    node = doc
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def freeze(value: Any) -> Any:
    """A read-only deep copy: mappings become ``MappingProxyType``, lists become tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of ``freeze``: plain dicts and lists, safe to dump as JSON or YAML."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value
