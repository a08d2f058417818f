"""This VM's registration with the manager: what it says about itself, once, under a lock.

One logic, two transports: the slot manager and the operators' commands register through
``ManagerClient`` (``requests``, vmagent.client.manager), the long-lived monitor through its own
``http.client`` session (vmagent.monitor.endpoints.http). Each passes ``register_once`` a function
that sends the registration document (with the enrolment token, ``read_token_file``) and answers
the manager's reply.
Nothing here imports ``requests``.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from typing import Any, Callable, Dict, Mapping, Optional, Tuple
from urllib.parse import urlsplit

from .. import __version__
from ..clock import Clock, SystemClock
from ..core import capacity
from ..core.files import write_atomic
from ..core.instance import instance_id as detect_instance_id
from ..core.layout import manager_credentials, manager_lock, vm_path
from ..errors import ConfigError, ManagerUnavailable
from .credentials import read_stored

# registration document -> the manager's answer {vm_id, token, heartbeat_period}
Register = Callable[[Dict[str, Any]], Mapping[str, Any]]


def register_once(
    config: Any,
    register: Register,
    *,
    url: Optional[str] = None,
    clock: Optional[Clock] = None,
) -> Tuple[str, str]:
    """This VM's ``(vm_id, token)``: stored in ``<state_dir>/manager.json``, else registered once.

    An exclusive ``fcntl`` lock on ``<state_dir>/manager.lock`` makes sure that the monitor and the
    slot manager, starting together, never both spend the single-use enrolment token.
    """
    target = manager_credentials(config)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    stored = read_stored(target)
    if stored:
        return stored["vm_id"], stored["token"]
    with open(manager_lock(config), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            stored = read_stored(target)  # the other process may have registered meanwhile
            if stored:
                return stored["vm_id"], stored["token"]
            url = url or manager_url(config)
            answer = register(registration(config, url))
            doc = store(target, url, answer, clock or SystemClock())
            return doc["vm_id"], doc["token"]
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def manager_url(config: Any) -> str:
    """``manager.url`` without its trailing slash; a ``ConfigError`` when it is not set."""
    url = config.section("manager")["url"]
    if not url:
        raise ConfigError(
            config.source,
            [("manager.url", "is not set but the manager is used")],
            hint="set manager.url, e.g. https://manager.example.org:8443",
        )
    return str(url).rstrip("/")


def registration(config: Any, url: str) -> Dict[str, Any]:
    """What this VM tells the manager about itself when it registers."""
    instance = config.section("instance")
    body: Dict[str, Any] = {
        "instance_id": detect_instance_id(config),
        "hostname": instance["hostname"] or socket.gethostname(),  # the platform's name first
        "ip": _local_ip(url),
        # the slot manager's count (slots.cores, else the CPUs it may use): the manager bounds claims by it
        "total_cores": capacity.cores(config),
        "total_memory_mb": _total_memory_mb(),
        "vmagent_version": __version__,
    }
    for key in ("site", "ce", "image", "running_pod", "vo"):
        if instance[key]:
            body[key] = instance[key]
    return body


def store(target: str, url: str, answer: Mapping[str, Any], clock: Clock) -> Dict[str, Any]:
    """Keep the manager's answer as this VM's credential (mode 0600); answers what was stored."""
    if not isinstance(answer, Mapping) or not answer.get("vm_id") or not answer.get("token"):
        raise ManagerUnavailable(f"{url}: registration answer lacks vm_id or token")
    doc = {
        "url": url,
        "vm_id": str(answer["vm_id"]),
        "token": str(answer["token"]),
        "heartbeat_period": answer.get("heartbeat_period"),
        "registered_at": clock.time(),
    }
    write_atomic(target, json.dumps(doc, indent=2) + "\n", 0o600)
    return doc


def read_token_file(config: Any) -> str:
    """The enrolment token from ``manager.token_file``; a ``ConfigError`` naming what is wrong."""
    name = config.section("manager")["token_file"]
    if not name:
        raise ConfigError(
            config.source,
            [("manager.token_file", "is not set; no credential to register with")],
            hint="point manager.token_file at the enrolment token given at boot",
        )
    path = vm_path(config, name)
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    except OSError as exc:
        raise ConfigError(
            config.source, [("manager.token_file", f"cannot read {path}: {exc.strerror}")]
        ) from None
    if not token:
        raise ConfigError(config.source, [("manager.token_file", f"{path} is empty")])
    return token


def _local_ip(url: str) -> str:
    """The address this host uses to reach the manager (no packet is sent)."""
    host = urlsplit(url).hostname or "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 9))
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def _total_memory_mb() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total // 2**20)
    except (ImportError, OSError):
        return 0
