"""The slot manager's state file, its lock and pid files, what finished (docs/contracts.md).

A state file that cannot be read whole (truncated, garbage, another version) or holds wrongly typed
entries is never trusted silently: ``read`` names each problem and keeps what is valid, the slot
manager sets the file aside and recovers the rest from the pid files and work directories.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from typing import Any, Dict, List, Optional, Set, Tuple

from .. import schemas
from ..clock import Clock
from ..config import Config, apply_defaults
from ..core import layout, pool_view
from ..core.files import write_atomic
from ..errors import VmagentError

VERSION = pool_view.VERSION
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
NUMBER = {"type": "number"}
MAYBE_NUMBER = {"type": ["number", "null"]}
INTEGERS = {"type": "array", "items": {"type": "integer", "minimum": 0}}
RUNNING_SCHEMA = {
    "type": "object",
    "required": [
        "id",
        "payload",
        "cores",
        "slots",
        "cpus",
        "memory_mb",
        "pid",
        "pgid",
        "started_at",
        "estimated_end",
        "workdir",
    ],
    "properties": {
        "id": {"type": "string"},
        "payload": {"type": "object"},
        "cores": {"type": "integer", "minimum": 1},
        "slots": INTEGERS,
        "cpus": INTEGERS,
        "memory_mb": {"type": "integer", "minimum": 0},
        "pid": {"type": "integer", "minimum": 1},
        "pgid": {"type": "integer", "minimum": 1},
        "started_at": NUMBER,
        "estimated_end": NUMBER,
        "workdir": {"type": "string"},
        "create_time": MAYBE_NUMBER,
        "deadline": MAYBE_NUMBER,
        "kill_at": MAYBE_NUMBER,
        "stopped_because": {"type": ["string", "null"]},
        "spawn_rss": {"type": ["integer", "null"]},
        "cpus_unknown": {"type": "boolean"},
        "state": {"enum": ["starting", "running", "stopping", "ended"]},
    },
}


def disk_full(exc: OSError) -> bool:
    return exc.errno in DISK_FULL


# --- reading and checking ---------------------------------------------------------------------------


def read(config: Config) -> Tuple[Optional[Dict[str, Any]], List[str]]:
    """(valid part or None, problems as ``path: message``); a missing file is (None, [])."""
    data, problems = pool_view.document(config)
    if data is None:
        return None, problems
    data["running"] = _valid_items(data.get("running", []), "running", _running_problems, problems)
    held = _valid_items(data.get("held", []), "held", _payload_problems, problems)
    # keys of the source's own rode inside payloads before version 1 had held_users: not payload keys
    data["held"] = [{k: v for k, v in p.items() if not str(k).startswith("_")} for p in held]
    for payload in data["held"] + [entry["payload"] for entry in data["running"]]:
        apply_defaults(schemas.get("payload"), payload)
    data["counts"] = _valid_counts(data.get("counts", {}), problems)
    return data, problems


def _valid_items(items: Any, key: str, check: Any, problems: List[str]) -> List[Any]:
    if not isinstance(items, list):
        problems.append(f"{key}: a {type(items).__name__}, not a list")
        return []
    kept = []
    for i, item in enumerate(items):
        found = check(item)
        problems.extend(
            f"{key}[{i}]{'.' if path else ''}{path}: {message}" for path, message in found
        )
        if not found:
            kept.append(item)
    return kept


def _running_problems(entry: Any) -> List[Tuple[str, str]]:
    import jsonschema  # here, not at import: the monitor imports this module for ``load``

    validator = jsonschema.Draft7Validator(RUNNING_SCHEMA)
    found = [(".".join(map(str, e.absolute_path)), e.message) for e in validator.iter_errors(entry)]
    if found:
        return found
    found = [("payload." + path, message) for path, message in _payload_problems(entry["payload"])]
    if not found and entry["payload"]["id"] != entry["id"]:
        found.append(
            ("payload.id", f"{entry['payload']['id']!r} is not the entry's id {entry['id']!r}")
        )
    return found


def _payload_problems(payload: Any) -> List[Tuple[str, str]]:
    if not isinstance(payload, dict):
        return [("", f"a {type(payload).__name__}, not an object")]
    public = {k: v for k, v in payload.items() if not str(k).startswith("_")}  # see read
    return list(schemas.problems("payload", public))


def _valid_counts(counts: Any, problems: List[str]) -> Dict[str, int]:
    if not isinstance(counts, dict):
        problems.append(f"counts: a {type(counts).__name__}, not an object")
        return {}
    kept = {}
    for key, value in counts.items():
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            kept[key] = value
        else:
            problems.append(f"counts.{key}: {value!r} is not a count")
    return kept


def set_aside(config: Config, now: float) -> Optional[str]:
    """Rename the state file to ``state.json.bad-<UTC time>`` for the operator; None if that failed."""
    source = layout.pool_state(config)
    target = f"{source}.bad-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}"
    try:
        os.replace(source, target)
    except OSError:
        return None
    return target


# --- writing --------------------------------------------------------------------------------------


def save(config: Config, state: Dict[str, Any]) -> None:
    state["version"] = VERSION
    write_atomic(layout.pool_state(config), json.dumps(state, sort_keys=True, default=str), 0o644)


def append_result(config: Config, result: Dict[str, Any]) -> None:
    path = layout.pool_results(config)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    line = json.dumps(result, sort_keys=True) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        start = fh.tell()
        try:
            fh.write(line)
            fh.flush()
        except OSError:
            fh.truncate(start)  # no half line for the next append to glue onto
            raise


def recorded_ids(config: Config) -> Set[str]:
    """The ids of every result in ``results.jsonl`` (unreadable lines skipped)."""
    found = set()
    try:
        with open(layout.pool_results(config), encoding="utf-8") as fh:
            for line in fh:
                try:
                    found.add(str(json.loads(line)["id"]))
                except (ValueError, KeyError, TypeError):
                    continue
    except FileNotFoundError:
        pass
    return found


def write_pidfile(config: Config, entry: Dict[str, Any]) -> None:
    """Record a started payload (pid, pgid, start time, CPUs, cores, memory, payload) for recovery."""
    write_atomic(
        os.path.join(layout.pool_payloads(config), f"{entry['id']}.json"),
        json.dumps(entry, default=str),
        0o644,
    )


def read_pidfile(config: Config, payload_id: str) -> Optional[Dict[str, Any]]:
    """A payload's pid file if it exists and is a valid running entry, else None."""
    try:
        with open(
            os.path.join(layout.pool_payloads(config), f"{payload_id}.json"), encoding="utf-8"
        ) as fh:
            entry = json.load(fh)
    except (OSError, ValueError):
        return None
    if _running_problems(entry):
        return None
    apply_defaults(schemas.get("payload"), entry["payload"])
    return entry


def remove_pidfile(config: Config, payload_id: str) -> None:
    try:
        os.unlink(os.path.join(layout.pool_payloads(config), f"{payload_id}.json"))
    except FileNotFoundError:
        pass


# --- one slot manager per state directory -------------------------------------------------------


def lock(config: Config) -> int:
    """Take ``<state_dir>/pool/lock`` for this process's life (its pid inside); raise if another holds it."""
    path = layout.pool_lock(config)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise VmagentError(
            f"another slot manager (pid {holder}) already runs on {os.path.dirname(path)}",
            code="slots-locked",
            hint="stop it first (or drain it); two slot managers would run payloads "
            "on the same cores and record their results twice",
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except OSError:
        pass  # a full disk: the lock holds all the same, only the holder's pid is not shown
    return fd


def wait_ready(
    config: Config, since: float, timeout: float, clock: Clock, proc: Any = None
) -> Optional[Dict[str, Any]]:
    """The state written by a slot manager started after ``since``; None after ``timeout`` s or its exit."""
    deadline = clock.monotonic() + timeout
    while clock.monotonic() < deadline and (proc is None or proc.poll() is None):
        found = pool_view.load(config)
        if found and float(found.get("updated", 0)) >= since:
            return found
        clock.sleep(0.1)
    return None
