"""``spool``: payloads as JSON files in a directory, claimed atomically by rename.

``incoming/<name>.json`` waits; ``claimed/`` holds what this VM took; ``results/<id>.json`` what it
did; ``rejected/`` what can never run, a ``.reason`` file beside each. Only one claimer wins a rename.

Whoever writes to incoming/ is trusted no further than the payload schema. An entry is read only if
it is a regular file (never through a symbolic link, never blocking on a FIFO) of at most
``MAX_BYTES``, holding JSON nested at most ``MAX_DEPTH`` deep: a payload with a new id that fits
this VM's cores and memory. Anything else moves to rejected/ once, its reason logged once.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import stat
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from ...config import Config
from ...core.files import write_atomic
from ...errors import CommandFailed, InputRejected
from . import Offer, validated

log = logging.getLogger("vmagent.pool")
MAX_BYTES = 2**20  # far above any payload exec() accepts: argv and environment share about 2 MiB
MAX_DEPTH = 32  # a payload is 3 deep; deeper JSON is garbage, and very deep JSON a RecursionError
MAX_DIGITS = 100  # integer literals: Python 3.9 converts long ones in quadratic time
KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFLNK: "a symbolic link",
}
Identity = Tuple[int, int, int, int]


class SpoolSource:
    """Payloads from a spool directory."""

    name = "spool"

    def __init__(self, config: Config) -> None:
        self.root = config.path("slots.spool_dir")
        for sub in ("incoming", "claimed", "results", "rejected"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        self.taken = self._claimed_ids()  # id -> its file in claimed/
        self.stuck: Dict[
            str, Identity
        ] = {}  # rejected entries that could not be moved out of incoming/

    def offer(self, capacity: Dict[str, Any]) -> List[Offer]:
        incoming = os.path.join(self.root, "incoming")
        found = []
        seen: Dict[str, str] = {}  # id -> file name, in this offer
        for name, info in self._entries(incoming):
            if self.stuck.get(name) == _identity(info):
                continue  # rejected already, and unchanged since
            try:
                payload = self._examine(os.path.join(incoming, name), info, capacity, seen)
            except FileNotFoundError:
                continue  # claimed by someone else meanwhile
            except InputRejected as exc:
                self._reject(name, info, exc.message)
                continue
            seen[payload["id"]] = name
            found.append(Offer(payload, ticket=name))
        return found

    def claim(self, offer: Offer) -> bool:
        name = offer.ticket or f"{offer.id}.json"
        target = _free_name(os.path.join(self.root, "claimed"), name)
        try:
            os.rename(os.path.join(self.root, "incoming", name), target)
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("cannot claim %s: %s", offer.id, exc)
            return False
        self.taken[offer.id] = os.path.basename(target)
        return True

    def report(self, result: Dict[str, Any]) -> None:
        """Write ``results/<id>.json``, unless a result of that id is there already: the first one stays."""
        target = os.path.join(self.root, "results", f"{result['id']}.json")
        if not _write_new(target, json.dumps(result, sort_keys=True) + "\n"):
            log.warning(
                "result of %s not written to %s: one is there already (both are in the slot "
                "manager's results.jsonl)",
                result["id"],
                target,
            )

    def close(self) -> None:
        pass

    # --- examining entries ------------------------------------------------------------------------

    def _examine(
        self, path: str, info: os.stat_result, capacity: Dict[str, Any], seen: Dict[str, str]
    ) -> Dict[str, Any]:
        """The payload in ``path``; InputRejected with the reason when it can never run here."""
        payload = validated(load(path, info), path)
        misfit = _misfit(payload, capacity)
        if misfit:
            raise InputRejected(misfit)
        first = seen.get(payload["id"]) or self._known(payload["id"])
        if first:
            raise InputRejected(f"duplicate payload id {payload['id']}, first seen in {first}")
        return payload

    def _known(self, payload_id: str) -> Optional[str]:
        """Where a payload of this id was claimed or reported before, if it was."""
        if payload_id in self.taken:
            return f"claimed/{self.taken[payload_id]}"
        reported = f"results/{payload_id}.json"
        return reported if os.path.lexists(os.path.join(self.root, reported)) else None

    def _claimed_ids(self) -> Dict[str, str]:
        claimed = os.path.join(self.root, "claimed")
        taken: Dict[str, str] = {}
        for name, info in self._entries(claimed):
            try:
                document = load(os.path.join(claimed, name), info)
            except (OSError, InputRejected):
                continue
            if isinstance(document, dict) and isinstance(document.get("id"), str):
                taken.setdefault(document["id"], name)
        return taken

    @staticmethod
    def _entries(directory: str) -> List[Tuple[str, os.stat_result]]:
        """The ``*.json`` entries of ``directory``, oldest first, with their own (not followed) status."""
        try:
            names = [
                n for n in os.listdir(directory) if n.endswith(".json")
            ]  # others: writers' temporary files
        except OSError as exc:
            raise CommandFailed(
                f"cannot read the spool directory {directory}: {exc.strerror}"
            ) from None
        found = []
        for name in names:
            try:
                found.append((name, os.lstat(os.path.join(directory, name))))
            except FileNotFoundError:
                continue  # taken meanwhile
        return sorted(found, key=lambda item: (item[1].st_mtime, item[0]))

    # --- rejecting ----------------------------------------------------------------------------------

    def _reject(self, name: str, info: os.stat_result, reason: str) -> None:
        path = os.path.join(self.root, "incoming", name)
        target = _free_name(os.path.join(self.root, "rejected"), name)
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return
        except OSError as exc:
            self.stuck[name] = _identity(info)
            log.warning(
                "rejected payload file %s: %s (left in place: cannot move it to %s: %s)",
                path,
                reason,
                target,
                exc.strerror,
            )
            return
        try:
            write_atomic(target + ".reason", reason + "\n", 0o644)
        except OSError as exc:
            log.warning("cannot write %s.reason: %s", target, exc.strerror)
        log.warning("rejected payload file %s: %s", path, reason)


def load(path: str, info: os.stat_result) -> Any:
    """The JSON document in spool entry ``path`` (``info``: its lstat); InputRejected if unfit to read."""
    kind = KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
    if not stat.S_ISREG(info.st_mode):
        raise InputRejected(f"{kind}; spool entries must be regular files")
    if info.st_size > MAX_BYTES:
        raise InputRejected(f"{info.st_size} bytes, more than the {MAX_BYTES} bytes allowed")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise
        if exc.errno == errno.ELOOP:  # swapped for a link since the lstat
            raise InputRejected("a symbolic link; spool entries must be regular files") from None
        raise InputRejected(f"cannot be opened: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise InputRejected("not a regular file any more; spool entries must be regular files")
        data = fh.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise InputRejected(f"more than the {MAX_BYTES} bytes allowed")
    return parse(data)


def parse(data: bytes) -> Any:
    """JSON from untrusted bytes: no recursion error, no NaN or Infinity, no endless integers."""
    try:
        document = json.loads(
            data.decode("utf-8"), parse_int=_integer, parse_float=_finite, parse_constant=_constant
        )
    except RecursionError:
        raise InputRejected(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # UnicodeDecodeError and json.JSONDecodeError too
        raise InputRejected(f"not valid JSON: {exc}") from None
    if _depth(document) > MAX_DEPTH:
        raise InputRejected(f"JSON nested deeper than {MAX_DEPTH} levels")
    return document


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits (at most {MAX_DIGITS})")
    return int(text)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is out of range")
    return value


def _constant(text: str) -> Any:
    raise ValueError(f"{text} is not a JSON number")


def _depth(document: Any) -> int:
    """How deeply lists and objects nest in ``document`` (without recursion), at most MAX_DEPTH + 1."""
    deepest = 0
    stack = [(document, 1)]
    while stack and deepest <= MAX_DEPTH:
        node, level = stack.pop()
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        )
        if children is not None:
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in children)
    return deepest


def _misfit(payload: Dict[str, Any], capacity: Dict[str, Any]) -> Optional[str]:
    """Why ``payload`` can never run on this VM, even empty; None when it can."""
    memory = capacity.get("total_memory_mb")
    if memory is not None and payload["memory_mb"] > memory:
        return f"asks for {payload['memory_mb']} MB of memory; this VM has {memory} MB for payloads"
    cores = capacity.get("total_cores")
    if cores is not None and not payload["whole_node"] and payload["cores"] > cores:
        return f"asks for {payload['cores']} cores; this VM has {cores}"
    return None


def _identity(info: os.stat_result) -> Identity:
    return (info.st_ino, info.st_mtime_ns, info.st_size, info.st_mode)


def _free_name(directory: str, name: str) -> str:
    """``directory/name``, or ``directory/<stem>.<n><ext>`` when that (or its .reason) is taken."""
    stem, ext = os.path.splitext(name)
    candidate = name
    number = 1
    while any(
        os.path.lexists(os.path.join(directory, c)) for c in (candidate, candidate + ".reason")
    ):
        number += 1
        candidate = f"{stem}.{number}{ext}"
    return os.path.join(directory, candidate)


def _write_new(target: str, content: str) -> bool:
    """Write ``target`` whole if it does not exist yet (a hard link: never overwrites); False if it did."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links
            if os.path.lexists(target):
                return False
            os.replace(tmp, target)
        return True
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
