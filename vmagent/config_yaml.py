"""Operator-written YAML read safely: UTF-8 only, PyYAML's safe loader within limits.

Every operator-written YAML file (the configuration, site descriptions) is read by ``read_text`` and
``yaml_document``: no deep nesting, no alias bombs or recursive aliases, no duplicate keys, and each
refusal is a ``ConfigError`` naming the line.
"""

from __future__ import annotations

from typing import Any, Dict, Hashable, List, Optional

import yaml

from .errors import ConfigError

MAX_DEPTH = 64  # a configuration needs about 6; PyYAML's composer recurses twice per level
MAX_NODES = 100_000  # values after expanding aliases: a "billion laughs" file stops here


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
