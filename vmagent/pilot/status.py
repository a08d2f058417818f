"""The machine-readable record of a pipeline run, rewritten after every step."""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from ..core.files import write_atomic


@dataclass
class StepStatus:
    """One command's record: outcome (pending, running, ok, skipped, failed, not-run), timing, attempts, facts, error."""

    name: str
    outcome: str = "pending"
    started: Optional[float] = None
    duration: Optional[float] = None
    attempts: int = 0
    facts: Dict[str, Any] = field(default_factory=dict)
    reason: Optional[str] = None
    error: Optional[Dict[str, Any]] = None


@dataclass
class RunStatus:
    """A whole run: the instance it ran for, its outcome and every step."""

    instance_id: str
    config: str
    started: float
    dry_run: bool = False
    finished: Optional[float] = None
    outcome: str = "running"
    steps: List[StepStatus] = field(default_factory=list)
    summary: str = ""

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def save(self, path: str) -> None:
        write_atomic(
            path, json.dumps(self.as_dict(), indent=2, sort_keys=True, default=str) + "\n", 0o644
        )


def load(path: str) -> Dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        data: Dict[str, Any] = json.load(fh)
    return data


def env_script(env: Mapping[str, str]) -> str:
    """A POSIX shell file exporting ``env``, for pilots and payloads to source."""
    lines = ["# Written by vmagent pilot run: the environment its commands export."]
    lines += [f"export {key}={shlex.quote(str(value))}" for key, value in sorted(env.items())]
    return "\n".join(lines) + "\n"
