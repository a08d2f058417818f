"""What a configuration configures, checked before anything runs, every problem at once.

The schema sees shapes; this sees what the shapes name: every plugin (monitor endpoints and their
options, the halt action, the payload source, the masonry policy, the pilot commands), pilots mode's
program, the local accounts payloads and pilots run as, and the settings a plugin needs (the
``http`` endpoint and the ``manager`` source need ``manager.url``). ``vmagent check-config`` and the
monitor's start-up (``load_for_monitor``) use the same ``problems``.
"""

from __future__ import annotations

import copy
import json
import os
import pwd
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from . import config, plugins
from .config_validation import Problem
from .errors import ConfigError

HINT = f"pass --config FILE or set {config.ENV_VAR}"
# what a vacuum platform (Vac, Vcycle) substitutes in user data, then blanks when it has no value
VACUUM_PATTERN = re.compile(r"##user_data_[a-z0-9_]*##")


def check_file(path: str) -> config.Config:
    """The configuration at ``path``, or a ``ConfigError`` listing every problem in it."""
    doc = config.document(config.read_text(path, hint=HINT), path)
    commands, found = review(doc)
    if found:
        raise ConfigError(path, found)
    return config.Config(path, config.freeze(doc), commands, checked=True)


def problems(doc: Mapping[str, Any]) -> List[Problem]:
    """Every problem of a parsed configuration: the schema's and those no schema can see."""
    return review(copy.deepcopy(dict(doc)))[1]  # a copy: ``review`` fills in defaults


def review(doc: Dict[str, Any]) -> Tuple[Tuple[config.CommandSpec, ...], List[Problem]]:
    """The pipeline of ``doc`` (defaults filled in, in place) and every problem found in it."""
    commands, found = config.checked(doc)
    found += _plugins(doc)
    found += _pilots(doc)
    found += accounts(doc)
    found += vacuum_leftovers(doc)
    return commands, sorted(set(found))


def _plugins(doc: Mapping[str, Any]) -> List[Problem]:
    monitor, slots = _section(doc, "monitor"), _section(doc, "slots")
    wanted: List[Tuple[str, Any, Any, str]] = []
    for i, entry in enumerate(_list(monitor.get("endpoints"))):
        if isinstance(entry, Mapping):
            wanted.append(
                ("endpoints", entry.get("name"), entry.get("options"), f"monitor.endpoints.{i}")
            )
    wanted += [
        ("halt_actions", monitor.get("halt_action"), None, "monitor.halt_action"),
        ("payload_sources", slots.get("source"), None, "slots.source"),
        ("masonry_policies", slots.get("policy"), None, "slots.policy"),
    ]
    found: List[Problem] = []
    for group, name, options, where in wanted:
        if not isinstance(name, str) or not (options is None or isinstance(options, Mapping)):
            continue  # a wrong shape is the schema's to report
        named = f"{where}.name" if group == "endpoints" else where
        plugin, problems_ = plugins.examine(
            plugins.GROUPS[group], name, options, at=named, options_at=f"{where}.options"
        )
        found += problems_
        if plugin is not None:
            found += _needs(doc, plugin, where)
    return found


def _needs(doc: Mapping[str, Any], plugin: plugins.Configured, where: str) -> List[Problem]:
    """The settings ``plugin`` declares it needs (``requires_settings``) that are not set."""
    needed = tuple(getattr(plugin.factory, "requires_settings", ()))
    found = []
    for key in dict.fromkeys(needed):
        section, _, name = key.partition(".")
        if _section(doc, section).get(name) in (None, "", [], {}):
            found.append((key, f"is not set but {where} ({plugin.plugin.name!r}) needs it"))
    return found


def _pilots(doc: Mapping[str, Any]) -> List[Problem]:
    slots = _section(doc, "slots")
    pilot = _section(slots, "pilot")
    if slots.get("mode") == "pilots" and not pilot.get("argv"):
        return [("slots.pilot.argv", "is empty but slots.mode is pilots: set the pilot program")]
    return []


def accounts(doc: Mapping[str, Any]) -> List[Problem]:
    """Accounts payloads and pilots run as, looked up on this machine as the slot manager will.

    ``doc`` may be a parsed document or a ``Config``'s frozen ``data``.
    """
    slots = _section(doc, "slots")
    pilot = _section(slots, "pilot")
    keys = [("slots.payload_user", slots.get("payload_user"))]
    keys += [(f"slots.pilot.users.{i}", name) for i, name in enumerate(_list(pilot.get("users")))]
    found = []
    for key, name in keys:
        if not isinstance(name, str) or not name:
            continue
        try:
            pwd.getpwnam(name)
        except KeyError:
            found.append((key, f"no such user {name!r} on this machine"))
    return found


def vacuum_leftovers(doc: Mapping[str, Any]) -> List[Problem]:
    """Values a vacuum platform left unfilled: ``##user_data_...##`` patterns and blanked URLs.

    Also reads ``manager.token_file`` when it exists: the machinetype's enrolment credential. A
    blanked ``instance.hostname`` is no problem: the VM then reports the system's hostname.
    """
    found = [
        (path, f"holds {pattern}, which the vacuum platform did not fill in: {VACUUM_UNFILLED}")
        for path, pattern in _patterns(doc, "")
    ]
    mjf = _section(doc, "mjf")
    blanked = [
        (f"mjf.{key}", mjf.get(key)) for key in ("upstream_machinefeatures", "upstream_jobfeatures")
    ]
    for i, entry in enumerate(_list(_section(doc, "monitor").get("endpoints"))):
        if isinstance(entry, Mapping) and entry.get("name") == "vac":
            options = entry.get("options")
            if isinstance(options, Mapping):
                blanked.append(
                    (f"monitor.endpoints.{i}.options.joboutputs", options.get("joboutputs"))
                )
    found += [
        (
            path,
            "is empty: the vacuum platform blanked its URL (it has none for this VM); "
            "set a path or URL, or null for the default",
        )
        for path, value in blanked
        if value == ""
    ]
    return found + _token_leftover(doc)


VACUUM_UNFILLED = (
    "its user data reached it base64-encoded or gzipped, or the machinetype lacks the option "
    "(render with 'vmagent userdata render --vacuum')"
)


def _patterns(value: Any, path: str) -> List[Tuple[str, str]]:
    if isinstance(value, Mapping):
        return [f for k, v in value.items() for f in _patterns(v, f"{path}.{k}".lstrip("."))]
    if isinstance(value, (list, tuple)):
        return [f for i, v in enumerate(value) for f in _patterns(v, f"{path}.{i}".lstrip("."))]
    if isinstance(value, str):
        return [(path, found) for found in VACUUM_PATTERN.findall(value)]
    return []


def _token_leftover(doc: Mapping[str, Any]) -> List[Problem]:
    """The enrolment token file still holding the platform's pattern, or blanked by it."""
    token_file = _section(doc, "manager").get("token_file")
    root = _section(doc, "paths").get("root") or "/"
    if not isinstance(token_file, str) or not token_file or not isinstance(root, str):
        return []
    try:
        with open(config.host_path(root, token_file), encoding="utf-8", errors="replace") as fh:
            text = fh.read(4096).strip()
    except OSError:
        return []  # not there yet, or not ours to read: the registration reports it
    leftover = VACUUM_PATTERN.search(text)
    if leftover:
        return [
            (
                "manager.token_file",
                f"{token_file} holds {leftover.group(0)}, which the "
                f"vacuum platform did not fill in: {VACUUM_UNFILLED}",
            )
        ]
    if not text:
        return [
            (
                "manager.token_file",
                f"{token_file} is empty (a vacuum platform blanks "
                "##user_data_option_enrolment_token## when the machinetype has no such option)",
            )
        ]
    return []


def _section(doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = doc.get(name)
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> List[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def load_for_monitor(path: str) -> config.Config:
    """The configuration at ``path`` for the long-lived monitor: checked whole, in a forked child.

    The child (a copy of this process: the same parsed document, no new interpreter) loads the JSON
    Schema library and every plugin, runs ``problems`` and sends back only what it found; this
    process then fills in defaults without validating again and so never holds ``jsonschema``
    (3.5 MiB resident for the VM's whole life, not returned to the system once imported).
    """
    doc = config.document(config.read_text(path, hint=HINT), path)
    found = _problems_in_child(doc)
    if found:
        raise ConfigError(path, found)
    return config.trusted(doc, path)


def _problems_in_child(doc: Dict[str, Any]) -> List[Problem]:
    readable, writable = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        os.close(readable)
        _report(writable, doc)
    os.close(writable)
    with os.fdopen(readable, "rb") as fh:
        answer = fh.read()
    _, status = os.waitpid(pid, 0)
    code: Optional[int] = os.waitstatus_to_exitcode(status)
    if code != 0 or not answer:
        return [("", f"the configuration check ended with exit code {code} and no answer")]
    return [(str(path), str(message)) for path, message in json.loads(answer)]


def _report(writable: int, doc: Dict[str, Any]) -> None:  # pragma: no cover - in the child
    try:
        found = problems(doc)
    except BaseException as exc:  # noqa: BLE001 - anything the check hits is reported, not raised
        found = [("", f"the configuration check failed: {type(exc).__name__}: {exc}")]
    try:
        with os.fdopen(writable, "wb") as fh:
            fh.write(json.dumps(found).encode())
    finally:
        os._exit(0)
