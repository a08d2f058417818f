"""Client of the manager's HTTP API v1 on ``requests``: the slot manager's and the operators'.

This module runs on Python 3.9 inside VMs and must never pull in the server's dependencies; the
long-lived monitor does not import it (it has its own ``http.client`` session). Connection
errors, timeouts, 5xx and 429 answers raise ``ManagerUnavailable`` (transient: retry with
backoff); other 4xx answers raise ``ManagerRefused`` (do not retry as is). Registration (the
document, the lock, the stored credential) is vmagent.client.registration's.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

import requests

from .. import __version__
from ..clock import Clock
from ..core.layout import manager_credentials, vm_path
from ..errors import ConfigError, ManagerRefused, ManagerUnavailable
from .credentials import API, read_stored, segment
from .registration import manager_url, read_token_file, register_once, registration

__all__ = ["API", "ManagerClient", "registration", "vm_credentials"]

Cert = Union[None, str, Tuple[str, str]]


class ManagerClient:
    """One keep-alive HTTP session to the manager, authenticated with one bearer token."""

    def __init__(
        self,
        url: str,
        *,
        token: Optional[str] = None,
        ca_file: Optional[str] = None,
        cert: Cert = None,
        timeout: float = 10.0,
    ):
        if not url or urlsplit(url).scheme not in ("http", "https"):
            raise ConfigError(
                "manager.url", [("manager.url", f"must be an http(s) URL, not {url!r}")]
            )
        self.url = url.rstrip("/")
        self.token = token
        self.ca_file = ca_file
        self.cert = cert
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"vmagent/{__version__}"
        # Passed with every request: a session-level ``verify`` loses to $REQUESTS_CA_BUNDLE.
        self.verify: Union[bool, str] = ca_file or True
        if cert:
            self.session.cert = cert

    @classmethod
    def from_config(cls, config: Any, *, token: Optional[str] = None) -> ManagerClient:
        """A client for ``manager.*``; token: the argument, else this VM's stored one, else ``token_file``'s."""
        section = config.section("manager")
        url = manager_url(config)
        if token is None:
            stored = read_stored(manager_credentials(config))
            token = stored["token"] if stored else read_token_file(config)
        cert: Cert = None
        if section["cert_file"]:
            cert_path = vm_path(config, section["cert_file"])
            cert = (
                (cert_path, vm_path(config, section["key_file"]))
                if section["key_file"]
                else cert_path
            )
        ca_file = vm_path(config, section["ca_file"]) if section["ca_file"] else None
        return cls(
            url,
            token=token,
            ca_file=ca_file,
            cert=cert,
            timeout=float(section["timeout"]),
        )

    def with_token(self, token: str) -> ManagerClient:
        """The same manager and TLS settings, another credential."""
        return ManagerClient(
            self.url, token=token, ca_file=self.ca_file, cert=self.cert, timeout=self.timeout
        )

    def close(self) -> None:
        self.session.close()

    # --- VM side -------------------------------------------------------------------------------

    def register(self, **vm: Any) -> Dict[str, Any]:
        """Register this VM; answers ``{vm_id, token, heartbeat_period}``."""
        return self._call("POST", "/register", vm)

    def heartbeat(self, vm_id: str, body: Mapping[str, Any]) -> Dict[str, Any]:
        """Send one heartbeat; answers ``{instructions, heartbeat_period}``."""
        answer = self._call("POST", f"/vms/{segment(vm_id)}/heartbeat", body)
        if not isinstance(answer.get("instructions"), list):
            raise ManagerUnavailable(f"{self.url}: heartbeat answer has no 'instructions' list")
        return answer

    def halting(self, vm_id: str, reason: str, vacuum_code: int, message: str = "") -> None:
        """Tell the manager this VM is going away and why (a vacuum outcome code)."""
        self._call(
            "POST",
            f"/vms/{segment(vm_id)}/halting",
            {"reason": reason, "vacuum_code": vacuum_code, "message": message},
        )

    def claim(self, vm_id: str, **request: Any) -> List[Dict[str, Any]]:
        """Lease payloads that fit ``free_cores``, ``free_memory_mb``, ``remaining_seconds``..."""
        answer = self._call("POST", f"/vms/{segment(vm_id)}/claim", request)
        payloads = answer.get("payloads")
        if not isinstance(payloads, list):
            raise ManagerUnavailable(f"{self.url}: claim answer has no 'payloads' list")
        return payloads

    def result(self, vm_id: str, payload_id: str, result: Mapping[str, Any]) -> None:
        """Report how a leased payload ended."""
        self._call("POST", f"/vms/{segment(vm_id)}/payloads/{segment(payload_id)}/result", result)

    # --- admin side ----------------------------------------------------------------------------

    def enrol(self, **kw: Any) -> Dict[str, Any]:
        """A single-use enrolment token for one VM: ``{enrolment_token, expires_at}``."""
        return self._call("POST", "/enrolments", kw)

    def submit(self, payload: Mapping[str, Any]) -> str:
        """Queue one payload; answers its id."""
        return str(self._call("POST", "/payloads", payload)["id"])

    def vms(self, **filters: Any) -> List[Dict[str, Any]]:
        """The VM table (filters: status, image, running_pod, ce, vo, limit, offset)."""
        return list(self._call("GET", "/vms", params=filters)["vms"])

    def vm(self, vm_id: str) -> Dict[str, Any]:
        """One VM with its transitions, recent heartbeats and pending instructions."""
        return self._call("GET", f"/vms/{segment(vm_id)}")

    def instruct(self, vm_id: str, action: str, **kw: Any) -> int:
        """Queue an instruction (drain, halt, shutdown_at) for a VM; answers its id."""
        return int(
            self._call("POST", f"/vms/{segment(vm_id)}/instructions", dict(kw, action=action))["id"]
        )

    def payloads(self, **filters: Any) -> List[Dict[str, Any]]:
        """The payload queue (filters: state, limit, offset)."""
        return list(self._call("GET", "/payloads", params=filters)["payloads"])

    def payload(self, payload_id: str) -> Dict[str, Any]:
        return self._call("GET", f"/payloads/{segment(payload_id)}")

    def accounting(self, group_by: str = "ce", **kw: Any) -> List[Dict[str, Any]]:
        """Accounting rows grouped by ``ce``, ``image``, ``running_pod`` or ``vo`` (``since``, ``until``)."""
        return list(self._call("GET", "/accounting", params=dict(kw, group_by=group_by))["rows"])

    # --- plumbing ------------------------------------------------------------------------------

    def _call(
        self, method: str, path: str, body: Any = None, params: Optional[Mapping[str, Any]] = None
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        url = f"{self.url}{API}{path}"
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self.session.request(
                method,
                url,
                json=body,
                params=query or None,
                headers=headers,
                timeout=self.timeout,
                verify=self.verify,
            )
        except requests.RequestException as exc:
            raise ManagerUnavailable(
                f"{method} {url}: {exc.__class__.__name__}: {exc}",
                hint="check manager.url, the network and manager.ca_file",
            ) from None
        if (
            response.status_code >= 500 or response.status_code == 429
        ):  # 429: too many failures, try later
            raise ManagerUnavailable(
                f"{method} {url}: HTTP {response.status_code} {_detail(response)}".rstrip()
            )
        if response.status_code >= 400:
            raise ManagerRefused(response.status_code, _detail(response))
        try:
            return response.json() if response.content else {}
        except ValueError:
            raise ManagerUnavailable(f"{method} {url}: answer is not JSON") from None


def _detail(response: requests.Response) -> str:
    try:
        detail = response.json().get("detail", "")
    except (ValueError, AttributeError):
        return response.text[:500]
    return detail if isinstance(detail, str) else json.dumps(detail)[:2000]


# --- this VM's own credential ----------------------------------------------------------------------


def vm_credentials(
    config: Any, client: Optional[ManagerClient] = None, *, clock: Optional[Clock] = None
) -> Tuple[str, str]:
    """This VM's ``(vm_id, token)``, registered once through ``client`` (see ``register_once``).

    ``client``'s own token registers when it has one, else the enrolment token of
    ``manager.token_file``.
    """

    def register(document: Dict[str, Any]) -> Mapping[str, Any]:
        sender = client or ManagerClient.from_config(config, token=read_token_file(config))
        if not sender.token:
            sender = sender.with_token(read_token_file(config))
        return sender.register(**document)

    return register_once(config, register, url=client.url if client else None, clock=clock)
