"""``http``: the reference manager (register once, heartbeat, declare halting).

The connection comes from the ``manager`` section: this VM's own bearer token (from
``<state_dir>/manager.json``), TLS verified against ``manager.ca_file``, and a client certificate
when ``manager.cert_file`` is set. A VM without a stored credential registers once, in process,
over the monitor's own ``http.client`` session with the enrolment token: the registration logic
(document, lock, stored answer) is vmagent.client's, shared with the slot manager's ``requests``
client, and the slot manager and the monitor never both register. The answer is untrusted: a
heartbeat period outside sane bounds is ignored and the instructions go back to the monitor for
validation.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional

from ...client import read_stored, read_token_file, register_once, segment
from ...config import Config
from ...core.layout import manager_credentials, vm_path
from ...errors import ConfigError, ManagerRefused, ManagerUnavailable
from .session import JsonSession

log = logging.getLogger("vmagent.monitor")

PERIOD_BOUNDS = (5.0, 3600.0)


class HttpEndpoint:
    """Heartbeats to the manager at ``manager.url`` with this VM's own credential."""

    name = "http"
    requires_settings = ("manager.url",)
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
            self.vm_id = str(stored["vm_id"])
            self.session = self._session(str(stored["token"]))
        return self.session

    def _session(self, token: str) -> JsonSession:
        section = self.section

        def configured(key: str) -> Optional[str]:
            return vm_path(self.config, section[key]) if section[key] else None

        return JsonSession(
            section["url"],
            token=token,
            ca_file=configured("ca_file"),
            cert_file=configured("cert_file"),
            key_file=configured("key_file"),
            timeout=float(section["timeout"]),
        )

    def _stored(self) -> Optional[Dict[str, Any]]:
        try:
            return read_stored(self.credentials)
        except ConfigError as exc:  # a refusal to the monitor, which keeps running and reports it
            raise ManagerRefused(0, f"{exc.message} ({exc.hint})") from None

    def _register(self) -> bool:
        """Register this VM with the enrolment token, unless another process did meanwhile."""

        def register(document: Dict[str, Any]) -> Any:
            return self._session(read_token_file(self.config)).post("/register", document)

        try:
            register_once(self.config, register)
        except ConfigError as exc:  # no enrolment token yet: an outage the monitor retries
            raise ManagerUnavailable(f"registration failed [{exc.code}]: {exc.message}") from None
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
