"""One YAML file, one JSON Schema, frozen settings.

The schema is ``vmagent/schema.json`` with each subsystem's section (``mjf``, ``slots``, ``monitor``)
taken from that package's own ``schema.json``. Each pilot command's options are validated against
the schema the command declares. Defaults come from the schema; nothing is read before it is valid.
Every operator-written YAML file (this one, site descriptions) is read by ``read_text`` and
``yaml_document``: UTF-8 only, PyYAML's safe loader within limits, no duplicate keys; NaN and
infinity are refused wherever a document is validated.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Dict, Hashable, List, Mapping, Optional, Tuple

import yaml

if TYPE_CHECKING:  # imported where validation happens: the monitor keeps its memory small
    import jsonschema

from . import plugins
from .errors import ConfigError, PluginError

DEFAULT_PATH = "/etc/vmagent/vmagent.yaml"
ENV_VAR = "VMAGENT_CONFIG"
SECTIONS = {"mjf": "vmagent.mjf", "slots": "vmagent.pool_ce", "monitor": "vmagent.monitor"}
COMMAND_KEYS = ("timeout", "retries", "backoff", "on_failure", "once_per_instance")
MAX_DEPTH = 64  # a configuration needs about 6; PyYAML's composer recurses twice per level
MAX_NODES = 100_000  # values after expanding aliases: a "billion laughs" file stops here
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


def load_checked(path: str) -> Config:
    """The configuration at ``path`` that ``vmagent check-config`` has just accepted, in a child process.

    Parsed and completed with the schema's defaults but not validated again here, and without the
    pilot commands resolved: for the long-lived monitor, which then never loads the JSON Schema
    library (several MiB resident for the process's whole life).
    """
    doc = _document(read_text(path), path)
    problems = non_finite(doc)
    if problems:
        raise ConfigError(path, problems)
    apply_defaults(schema(), doc)
    return Config(path, freeze(doc), ())


def parse(
    text: str, source: str = "<string>", *, overrides: Optional[Mapping[str, Any]] = None
) -> Config:
    """Validate YAML ``text`` (reported as ``source``) and return the frozen configuration."""
    doc = _document(text, source)
    for key, value in (overrides or {}).items():
        _set_dotted(doc, key, value)
    return from_dict(doc, source)


def _document(text: str, source: str) -> Dict[str, Any]:
    doc = yaml_document(text, source)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(
            source, [("", f"must be a mapping of sections, not {type(doc).__name__}")]
        )
    return doc


def read_text(source: str, *, hint: Optional[str] = None) -> str:
    """The UTF-8 text of file ``source``; ``ConfigError`` when it cannot be read or is not UTF-8."""
    try:
        with open(source, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read: {exc.strerror}")], hint=hint) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problem = f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        raise ConfigError(source, [(f"line {line}", problem)]) from None


def yaml_document(text: str, source: str) -> Any:
    """YAML ``text`` parsed by ``SafeLoader`` within limits: depth, aliases, no duplicate keys.

    Every operator-written YAML file (configuration, site description) is read through here.
    """
    try:
        return yaml.load(text, Loader=_LimitedLoader)
    except _Refused as exc:
        raise ConfigError(source, [(f"line {exc.line}", exc.problem)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(
            source, [("", f"not valid YAML: {where}{getattr(exc, 'problem', exc)}")]
        ) from None
    except RecursionError:  # a limit above missed a way to nest: still no traceback
        raise ConfigError(source, [("", f"nested deeper than {MAX_DEPTH} levels")]) from None


class _Refused(yaml.YAMLError):
    """Valid YAML that vmagent refuses, at a line."""

    def __init__(self, mark: Any, problem: str) -> None:
        super().__init__(problem)
        self.line = mark.line + 1
        self.problem = problem


class _LimitedLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses deep nesting, alias bombs, recursive aliases and duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.trail: List[str] = []
        self.paths: Dict[yaml.Node, str] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.depth >= MAX_DEPTH:
            raise _Refused(self.peek_event().start_mark, f"nested deeper than {MAX_DEPTH} levels")
        self.depth += 1
        self.trail.append(index.value if isinstance(index, yaml.ScalarNode) else str(index))
        try:
            node: Any = super().compose_node(parent, index)
            self.paths.setdefault(node, ".".join(self.trail[1:]))
        finally:
            self.depth -= 1
            self.trail.pop()
        return node

    def construct_document(self, node: Any) -> Any:
        _check_expansion(node)
        return super().construct_document(node)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<' brings keys that the mapping's own keys may override
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable) and key in seen:
                where = self.paths.get(node) or "(top)"
                raise _Refused(key_node.start_mark, f"duplicate key {key!r} in mapping at {where}")
            seen.add(key if isinstance(key, Hashable) else id(key))
        return super().construct_mapping(node, deep)


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases refer to themselves or expand to more than MAX_NODES values."""
    sizes: Dict[yaml.Node, int] = {}
    ancestors = set()
    stack = [(root, False)]
    while stack:
        node, finished = stack.pop()
        children = _children(node)
        if finished:
            ancestors.discard(node)
            sizes[node] = 1 + sum(sizes[child] for child in children)
            if sizes[node] > MAX_NODES:
                raise _Refused(
                    node.start_mark, f"expands to more than {MAX_NODES} values through aliases"
                )
        elif node in ancestors:
            raise _Refused(
                node.start_mark, "an alias refers to itself (a value that contains itself)"
            )
        elif node not in sizes:
            ancestors.add(node)
            stack.append((node, True))
            stack.extend((child, False) for child in children)


def _children(node: yaml.Node) -> List[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def from_dict(doc: Mapping[str, Any], source: str = "<dict>") -> Config:
    """Validate an already-parsed document."""
    document: Dict[str, Any] = copy.deepcopy(dict(doc))
    return _validated(document, source)


def _validated(doc: Dict[str, Any], source: str) -> Config:
    whole = schema()
    problems = validation_problems(whole, doc)
    apply_defaults(whole, doc)
    commands, command_problems = _commands(doc)
    problems = sorted(set(problems) | set(command_problems))
    if problems:
        raise ConfigError(source, problems)
    return Config(source, freeze(doc), commands)


def validation_problems(
    schema_: Mapping[str, Any], doc: Any, prefix: str = ""
) -> List[Tuple[str, str]]:
    """``(dotted.path, message)`` for everything in ``doc`` that ``schema_`` rejects."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema_)
    found = []
    for error in validator.iter_errors(doc):
        found.extend(_explain(error, prefix))
    found.extend(non_finite(doc, prefix))
    return sorted(set(found))


def non_finite(doc: Any, prefix: str = "") -> List[Tuple[str, str]]:
    """``(dotted.path, message)`` for every NaN or infinity in ``doc``: JSON Schema's numbers accept them."""
    if isinstance(doc, float) and not math.isfinite(doc):
        return [(prefix, "must be a finite number")]
    if isinstance(doc, Mapping):
        items: Any = doc.items()
    elif isinstance(doc, (list, tuple)):
        items = enumerate(doc)
    else:
        return []
    found = []
    for key, value in items:
        found.extend(non_finite(value, _join(prefix, str(key))))
    return found


def _explain(error: jsonschema.ValidationError, prefix: str) -> List[Tuple[str, str]]:
    path = ".".join([prefix] * bool(prefix) + [str(p) for p in error.absolute_path])
    if error.validator == "oneOf" and error.context:
        # Report the branch that got furthest instead of "is not valid under any of the given schemas".
        best = max(error.context, key=lambda e: len(e.absolute_path))
        return _explain(best, prefix)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return [
            (_join(path, k), f"unknown key; allowed: {', '.join(allowed) or '(none)'}")
            for k in extra
        ]
    if error.validator == "enum":
        return [
            (
                path,
                f"{error.instance!r} is not allowed; use one of: {', '.join(map(str, error.validator_value))}",
            )
        ]
    return [(path, error.message)]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def apply_defaults(schema_: Mapping[str, Any], doc: Any) -> None:
    """Fill in schema ``default`` values for missing object keys, recursively, in place."""
    if not isinstance(doc, dict):
        return
    for key, sub in schema_.get("properties", {}).items():
        if key not in doc and "default" in sub:
            doc[key] = copy.deepcopy(sub["default"])
        if key in doc:
            apply_defaults(sub, doc[key])
            items = sub.get("items")
            if isinstance(items, dict) and isinstance(doc[key], list):
                for item in doc[key]:
                    apply_defaults(items, item)
    extra = schema_.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in doc.items():
            if key not in schema_.get("properties", {}):
                apply_defaults(extra, value)


def _commands(doc: Dict[str, Any]) -> Tuple[Tuple[CommandSpec, ...], List[Tuple[str, str]]]:
    """Resolve every configured command and validate its options against the command's schema."""
    specs: List[CommandSpec] = []
    problems: List[Tuple[str, str]] = []
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
        try:
            command = plugins.load(plugins.GROUPS["pilot_commands"], entry["name"])
        except PluginError as exc:
            problems.append((f"{where}.name", exc.message))
            continue
        options = entry["options"]
        options_schema = getattr(
            command, "options_schema", {"type": "object", "additionalProperties": False}
        )
        found = validation_problems(options_schema, options, f"{where}.options")
        if found:
            problems.extend(found)
            continue
        apply_defaults(options_schema, options)
        settings: Dict[str, Any] = dict(COMMAND_DEFAULTS)
        settings.update(getattr(command, "defaults", {}))
        settings.update({k: entry[k] for k in COMMAND_KEYS if k in entry})
        specs.append(
            CommandSpec(
                name=entry["name"],
                options=freeze(options),
                timeout=float(settings["timeout"]),
                retries=int(settings["retries"]),
                backoff=float(settings["backoff"]),
                on_failure=settings["on_failure"],
                once_per_instance=bool(settings["once_per_instance"]),
                env=freeze(entry.get("env", {})),
                index=i,
                skip=entry.get("skip"),
            )
        )
    return tuple(specs), problems


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
