"""What one manager process needs to know: database, timings, limits, where its files are."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Optional

from ..errors import UsageError

ENV_VAR = "VMAGENT_MANAGER_SETTINGS"


@dataclass(frozen=True)
class Settings:
    """Manager settings; passed to worker processes as JSON in ``$VMAGENT_MANAGER_SETTINGS``."""

    db_url: str
    admin_token_hash: str
    state_dir: Optional[str] = None
    url: Optional[str] = None
    heartbeat_period: float = 60.0
    stall_seconds: float = 300.0
    sweep_interval: float = 15.0
    lease_seconds: float = 900.0
    max_attempts: int = 3
    history_per_vm: int = 1000
    history_seconds: float = 7 * 86400.0
    vm_token_ttl: float = 30 * 86400.0
    max_body_bytes: int = 1 << 20
    max_heartbeat_bytes: int = 640 << 10  # room for the schema's 4096 payload ids of 128 characters
    clock_slack_seconds: float = 120.0  # a result's times may stray this far from its lease window
    auth_failures: int = 100  # failed authentications of one client address within the window...
    auth_failure_window: float = 300.0  # ...before it is answered 429 until the window has passed
    auth_tracked_addresses: int = 10000  # addresses the failure limiter remembers (oldest dropped)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> Settings:
        """The settings ``vmagent manager serve`` passed to this worker process."""
        raw = os.environ.get(ENV_VAR)
        if not raw:
            raise UsageError(
                f"${ENV_VAR} is not set: this is a worker of 'vmagent manager serve'",
                hint="start the manager with 'vmagent manager serve'",
            )
        doc: Any = json.loads(raw)
        return cls(**doc)
