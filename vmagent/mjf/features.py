"""The MJF keys, their units, and atomic writing and tolerant reading of a features tree.

Writers validate every value before touching a file; readers never raise for a malformed value but
report it in ``Features.problems``, so a bad upstream value is never propagated. A remote tree is
read with ``requests`` (only short-lived processes read one: the pilot's ``setup-mjf`` and
``vmagent mjf show``; the monitor and the slot manager read this VM's own directory).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from ..clock import Clock, SystemClock
from ..config import Config
from ..core.files import write_atomic
from ..errors import InputRejected

MACHINE_KEYS = ("total_cpu", "hs06", "shutdowntime", "grace_secs")
JOB_KEYS = (
    "allocated_cpu",
    "hs06_job",
    "shutdowntime_job",
    "grace_secs_job",
    "jobstart_secs",
    "job_id",
    "wall_limit_secs",
    "cpu_limit_secs",
    "max_rss_bytes",
    "max_swap_bytes",
    "scratch_limit_bytes",
)
LEGACY_KEYS = ("log_cores", "phys_cores", "jobslots")
EXTRA_KEYS = ("db12",)
UNITS = {
    "total_cpu": "cores",
    "hs06": "HS06",
    "shutdowntime": "UNIX s",
    "grace_secs": "s",
    "allocated_cpu": "cores",
    "hs06_job": "HS06",
    "shutdowntime_job": "UNIX s",
    "grace_secs_job": "s",
    "jobstart_secs": "UNIX s",
    "job_id": "text",
    "wall_limit_secs": "s",
    "cpu_limit_secs": "s",
    "max_rss_bytes": "bytes",
    "max_swap_bytes": "bytes",
    "scratch_limit_bytes": "bytes",
    "log_cores": "cores",
    "phys_cores": "cores",
    "jobslots": "slots",
    "db12": "DB12",
}
FLOAT_KEYS = {"hs06", "hs06_job", "db12"}
TEXT_KEYS = {"job_id"}
TIME_KEYS = {"shutdowntime", "shutdowntime_job", "jobstart_secs"}
NAME = re.compile(r"^[a-z0-9_]+$")
JOB_ID = re.compile(r"^[!-~]{1,256}$")  # printable, no spaces
Value = Union[int, float, str]


@dataclass(frozen=True)
class Features:
    """What a features directory or URL holds: parsed values and what was wrong with the rest."""

    location: str
    values: Dict[str, Value] = field(default_factory=dict)
    problems: List[Tuple[str, str]] = field(default_factory=list)


def parse_value(key: str, text: str, *, now: Optional[float] = None) -> Value:
    """The value of ``key`` from its file content; raises ``InputRejected`` saying what is wrong."""
    text = text.strip()
    if key in TEXT_KEYS:
        if not JOB_ID.match(text):
            raise InputRejected(f"{key}: {text!r} is not printable text without spaces")
        return text
    try:
        number = float(text) if key in FLOAT_KEYS else int(text)
    except ValueError:
        kind = "a number" if key in FLOAT_KEYS else "a whole number"
        raise InputRejected(f"{key}: {text[:40]!r} is not {kind}") from None
    if number < 0:
        raise InputRejected(f"{key}: {number} is negative")
    if key in TIME_KEYS and key != "jobstart_secs" and now is not None and number < now:
        raise InputRejected(f"{key}: {int(number)} is in the past (now {int(now)})")
    return number


def format_value(key: str, value: Any) -> str:
    """The file content for ``key``; validates ``value`` the way a reader will parse it."""
    if not NAME.match(key):
        raise InputRejected(
            f"{key!r} is not a valid features key (lowercase letters, digits, underscore)"
        )
    try:
        text = (
            str(value)
            if key in TEXT_KEYS
            else _decimal(float(value))
            if key in FLOAT_KEYS
            else str(int(value))
        )
    except (TypeError, ValueError, OverflowError):
        raise InputRejected(f"{key}: {str(value)[:40]!r} is not a number") from None
    if (
        key not in TEXT_KEYS
        and isinstance(value, float)
        and key not in FLOAT_KEYS
        and value != int(value)
    ):
        raise InputRejected(f"{key}: {value} must be a whole number of {UNITS.get(key, 'units')}")
    parse_value(key, text)
    return text


def _decimal(number: float) -> str:
    """A benchmark score as its file content: a whole number without a fraction (``160``, which DIRAC's
    integer reader accepts, not ``160.0``), else the shortest exact decimal (``53.25``)."""
    return str(int(number)) if number == int(number) else repr(number)


def write_features(directory: str, values: Mapping[str, Value]) -> None:
    """Validate every value, then write each key atomically (temporary file and rename)."""
    texts = {key: format_value(key, value) for key, value in values.items()}
    os.makedirs(directory, exist_ok=True)
    for key, text in texts.items():
        write_atomic(os.path.join(directory, key), text, 0o644)


def read_features(
    location: str,
    *,
    timeout: float = 5.0,
    keys: Optional[Tuple[str, ...]] = None,
    now: Optional[float] = None,
    retries: int = 2,
    clock: Optional[Clock] = None,
) -> Features:
    """Read a features directory (path) or base URL; malformed values go to ``problems``.

    ``clock`` times a remote tree's cache freshness and the waits between retries.
    """
    found = Features(location)
    clock = clock or SystemClock()
    wanted = keys or (MACHINE_KEYS + JOB_KEYS + LEGACY_KEYS + EXTRA_KEYS)
    remote = location.startswith(("http://", "https://"))
    for key in wanted:
        try:
            if remote:
                text = _fetch(location, key, timeout, retries, clock)
            else:
                text = _read_local(location, key)
        except FileNotFoundError:
            continue
        except OSError as exc:
            found.problems.append((key, f"cannot read: {exc}"))
            continue
        try:
            found.values[key] = parse_value(key, text, now=now)
        except InputRejected as exc:
            found.problems.append((key, exc.message.split(": ", 1)[-1]))
    return found


def _read_local(directory: str, key: str) -> str:
    with open(os.path.join(directory, key), encoding="utf-8", errors="replace") as fh:
        return fh.read(4096)


def _fetch(base: str, key: str, timeout: float, retries: int, clock: Clock) -> str:
    import requests  # only readers of a remote tree pay for it

    url = base.rstrip("/") + "/" + key
    cached = _CACHE.get(url)
    if cached is not None and cached[0] > clock.monotonic():
        return cached[2]  # Cache-Control max-age still fresh: no request
    headers = {"If-None-Match": cached[1]} if cached is not None and cached[1] else {}
    for attempt in range(retries + 1):
        try:
            with requests.get(url, headers=headers, timeout=timeout, stream=True) as answer:
                status = answer.status_code
                if status == 304 and cached is not None:
                    _remember(url, answer.headers, cached[2], clock)
                    return cached[2]
                if status == 404:
                    raise FileNotFoundError(url)
                if 200 <= status < 300:
                    raw = answer.raw.read(4096, decode_content=True)
                    text = raw.decode("utf-8", "replace")
                    _remember(url, answer.headers, text, clock)
                    return text
                if status < 500 or attempt == retries:
                    raise OSError(f"{url}: HTTP {status}")
        except requests.RequestException as exc:
            if attempt == retries:
                raise OSError(f"{url}: {exc.__class__.__name__}: {exc}") from None
        clock.sleep(0.2 * 2**attempt)
    raise OSError(url)


_CACHE: Dict[str, Tuple[float, str, str]] = {}  # url -> (fresh until, ETag, text)
MAX_AGE = re.compile(r"max-age=(\d+)")


def _remember(url: str, headers: Any, text: str, clock: Clock) -> None:
    """Keep a value with its ETag and freshness so that re-reads honour the server's cache headers."""
    control = (headers.get("Cache-Control") or "") if headers is not None else ""
    etag = (headers.get("ETag") or "") if headers is not None else ""
    age = MAX_AGE.search(control)
    if "no-store" in control or (not etag and not age):
        _CACHE.pop(url, None)
        return
    fresh = 0 if age is None or "no-cache" in control else int(age.group(1))
    _CACHE[url] = (clock.monotonic() + fresh, etag, text)


def features_root(config: Config) -> str:
    """The features tree of this VM: ``machine/`` and ``jobs/<slot>/`` (what the loopback server serves)."""
    return os.path.join(config.path("paths.state_dir"), "mjf")


def machine_dir(config: Config) -> str:
    """Where this VM's machine features live."""
    return os.path.join(features_root(config), "machine")


def job_dir(config: Config, slot: str) -> str:
    """Where the job features of one slot (pilot or payload) live."""
    return os.path.join(features_root(config), "jobs", slot)


def update_shutdowntime(config: Config, shutdown_at: float, *, clock: Clock) -> float:
    """Announce a new shutdown time to the machine and every job; never closer than ``grace_secs``."""
    machine = machine_dir(config)
    grace = read_features(machine, keys=("grace_secs",)).values.get("grace_secs", 0)
    value = int(max(shutdown_at, clock.time() + float(grace)))
    write_features(machine, {"shutdowntime": value})
    jobs = os.path.join(features_root(config), "jobs")
    for slot in sorted(os.listdir(jobs)) if os.path.isdir(jobs) else []:
        current = read_features(
            os.path.join(jobs, slot), keys=("shutdowntime_job", "grace_secs_job")
        ).values
        job_value = int(max(value, clock.time() + float(current.get("grace_secs_job", 0))))
        write_features(os.path.join(jobs, slot), {"shutdowntime_job": job_value})
    return value
