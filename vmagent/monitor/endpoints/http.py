"""``http``: the reference manager (register once, heartbeat, declare halting).

The connection comes from the ``manager`` section: this VM's own bearer token (from
``<state_dir>/manager.json``), TLS verified against ``manager.ca_file``, and a client certificate
when ``manager.cert_file`` is set. A VM without a stored credential registers once through
``vmagent.client.manager.vm_credentials`` in a short child process (under its lock, so the slot
manager and the monitor never both register), which keeps ``requests`` out of the long-lived
monitor. The answer is untrusted: a heartbeat period outside sane bounds is ignored and the
instructions go back to the monitor for validation.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, Dict, List, Mapping, Optional

from ...client.credentials import read_stored, segment
from ...config import Config
from ...core.layout import manager_credentials, vm_path
from ...errors import ConfigError, ManagerRefused, ManagerUnavailable
from .session import JsonSession

log = logging.getLogger("vmagent.monitor")

PERIOD_BOUNDS = (5.0, 3600.0)
REGISTER = """
import json, sys
from vmagent.config import from_dict
from vmagent.errors import ManagerRefused, VmagentError
from vmagent.client.manager import vm_credentials
try:
    vm_credentials(from_dict(json.load(sys.stdin), source=sys.argv[1]))
except ManagerRefused as exc:
    print(json.dumps({"refused": exc.status, "detail": exc.detail}))
except VmagentError as exc:
    print(json.dumps({"error": exc.code, "message": exc.message}))
else:
    print(json.dumps({"ok": True}))
"""


class HttpEndpoint:
    """Heartbeats to the manager at ``manager.url`` with this VM's own credential."""

    name = "http"
    options_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "follow_period": {
                "type": "boolean",
                "default": True,
                "description": "use the heartbeat period the manager answers (5 s to 1 h)",
            },
        },
    }

    def __init__(self, config: Config, options: Mapping[str, Any]) -> None:
        self.config, self.section = config, config.section("manager")
        if not self.section["url"]:
            raise ConfigError(
                config.source,
                [("manager.url", "is not set but the monitor's http endpoint uses it")],
                hint="set manager.url, e.g. https://manager.example.org:8443",
            )
        self.follow_period = bool(options.get("follow_period", True))
        self.credentials = manager_credentials(config)
        self.vm_id: Optional[str] = None
        self.session: Optional[JsonSession] = None
        self.period: Optional[float] = None

    def _connect(self) -> JsonSession:
        if self.session is None:
            stored = self._stored() or (self._register() and self._stored())
            if not stored:
                raise ManagerUnavailable(
                    f"no VM credential in {self.credentials} after registering"
                )
            section = self.section

            def configured(key: str) -> Optional[str]:
                return vm_path(self.config, section[key]) if section[key] else None

            self.vm_id = str(stored["vm_id"])
            self.session = JsonSession(
                section["url"],
                token=str(stored["token"]),
                ca_file=configured("ca_file"),
                cert_file=configured("cert_file"),
                key_file=configured("key_file"),
                timeout=float(section["timeout"]),
            )
        return self.session

    def _stored(self) -> Optional[Dict[str, Any]]:
        try:
            return read_stored(self.credentials)
        except ConfigError as exc:  # a refusal to the monitor, which keeps running and reports it
            raise ManagerRefused(0, f"{exc.message} ({exc.hint})") from None

    def _register(self) -> bool:
        from ...process import run

        done = run(
            [sys.executable, "-c", REGISTER, self.config.source],
            input=json.dumps(self.config.plain()),
            timeout=3 * float(self.section["timeout"]) + 30,
            check=False,
        )
        try:
            answer = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise ManagerUnavailable(
                f"registration failed (exit {done.returncode}): {done.stderr[-500:]}"
            ) from None
        if "refused" in answer:
            raise ManagerRefused(int(answer["refused"]), str(answer["detail"]))
        if "error" in answer:
            raise ManagerUnavailable(
                f"registration failed [{answer['error']}]: {answer['message']}"
            )
        log.info("registered with %s", self.section["url"])
        return True

    def send(self, heartbeat: Dict[str, Any], sample: Mapping[str, Any]) -> List[Any]:
        session = self._connect()
        answer = session.post(f"/vms/{segment(str(self.vm_id))}/heartbeat", heartbeat)
        if not isinstance(answer, dict):
            raise ManagerRefused(200, f"heartbeat answer is not an object: {str(answer)[:200]}")
        self._follow(answer.get("heartbeat_period"))
        instructions: List[Any] = answer.get(
            "instructions", []
        )  # validated by the monitor, list or not
        return instructions

    def _follow(self, period: Any) -> None:
        if not self.follow_period or period is None:
            self.period = None
            return
        low, high = PERIOD_BOUNDS
        if (
            isinstance(period, (int, float))
            and not isinstance(period, bool)
            and low <= period <= high
        ):
            self.period = float(period)
        else:
            log.warning(
                "ignoring heartbeat period %r from the manager (allowed %g to %g s)",
                period,
                low,
                high,
            )
            self.period = None

    def halting(self, decision: Any) -> None:
        session = self._connect()
        session.post(
            f"/vms/{segment(str(self.vm_id))}/halting",
            {
                "reason": f"{decision.policy}: {decision.reason}"[:1024],
                "vacuum_code": decision.vacuum_code,
                "message": decision.message,
            },
        )
