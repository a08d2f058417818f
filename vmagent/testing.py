"""Helpers for testing vmagent and its plugins: a fake clock and ready-made configurations."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

import yaml

from .clock import FakeClock
from .config import Config, from_dict

__all__ = ["FakeClock", "make_config", "run_command", "send_json", "write_config"]


def send_json(handler: Any, code: int, doc: Any) -> None:
    """Answer an ``http.server`` request with ``doc`` as JSON and status ``code`` (stand-in servers)."""
    import json

    data = json.dumps(doc).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def make_config(root: str, commands: Optional[List[Any]] = None, **sections: Any) -> Config:
    """A validated configuration rooted at ``root`` (a tmp_path), with the given pilot commands."""
    doc = _document(root, commands, sections)
    return from_dict(doc, source=os.path.join(str(root), "vmagent.yaml"))


def write_config(root: str, commands: Optional[List[Any]] = None, **sections: Any) -> str:
    """Write such a configuration to ``<root>/vmagent.yaml`` and return its path."""
    path = os.path.join(str(root), "vmagent.yaml")
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(_document(root, commands, sections), fh, sort_keys=False)
    return path


def _document(root: str, commands: Optional[List[Any]], sections: Dict[str, Any]) -> Dict[str, Any]:
    doc: Dict[str, Any] = {"instance": {"id": "i-test"}, "paths": {"root": str(root)}}
    doc.update(sections)
    doc.setdefault("paths", {}).setdefault("root", str(root))
    if commands is not None:
        doc.setdefault("pilot", {})["commands"] = commands
    return doc


def run_command(
    command: Any,
    config: Config,
    options: Optional[Dict[str, Any]] = None,
    facts: Optional[Dict[str, Any]] = None,
    *,
    dry_run: bool = False,
    clock: Any = None,
) -> Any:
    """Run one pilot command as the runner would: options validated and defaulted, a fresh context.

    Returns ``(result, actions)``; ``actions.entries`` lists every external effect in order.
    """
    from .config import freeze
    from .errors import ConfigError
    from .pilot.command import Actions, Context, Result
    from .plugins import validated_options

    options, problems = validated_options(command, options)
    if problems:
        raise ConfigError(f"{command.name} options", problems)
    actions = Actions(dry_run)
    clock = clock or FakeClock()
    ctx = Context(
        config=config,
        instance_id="i-test",
        options=freeze(options),
        facts=freeze(facts or {}),
        env=freeze({}),
        clock=clock,
        deadline=clock.monotonic() + 3600,
        actions=actions,
        step=command.name,
    )
    result = command.run(ctx)
    return (result if isinstance(result, Result) else Result(facts=dict(result or {}))), actions
