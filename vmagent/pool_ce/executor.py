"""Start one payload: its own session, work directory, CPUs, memory limit, user, environment, features.

The payload runs under ``/bin/sh -c '"$@"; echo $? > exit_code'`` with its argv passed as positional
parameters (never interpreted by the shell), so that its exit code survives a restart of the slot
manager: a re-adopted payload is not our child, but its exit code still lands in its directory.
"""

from __future__ import annotations

import os
import pwd
import resource
import subprocess
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import psutil

from ..config import Config
from ..errors import CommandFailed, ConfigError
from . import cgroups

WRAPPER = '"$@"; rc=$?; echo $rc > .vmagent-exit-code.tmp && mv .vmagent-exit-code.tmp .vmagent-exit-code; exit $rc'
EXIT_FILE = ".vmagent-exit-code"
LOOPBACK = "http://127.0.0.1:"  # features served by the slot manager (jobfeatures.Publisher)
RSS_SLACK = 8 * 2**20  # what the slot manager may grow between measuring itself and forking
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


@dataclass(frozen=True)
class Launched:
    pid: int
    workdir: str
    popen: Optional[subprocess.Popen]
    spawn_rss: Optional[int] = None  # the slot manager's resident size when it forked the payload


def payload_env(
    base: Mapping[str, str],
    payload: Mapping[str, Any],
    cpus: Sequence[int],
    jobfeatures: str,
    machinefeatures: str,
    workdir: str,
) -> Dict[str, str]:
    """The payload's environment; ``jobfeatures``/``machinefeatures``: the http URLs or directories
    of its features (``jobfeatures.Publisher``), set after the payload's own ``env``."""
    env = dict(base)
    env.update(payload.get("env", {}))
    cores = str(len(cpus))
    env.update({name: cores for name in THREAD_VARS})
    env.update(
        VMAGENT_PAYLOAD_ID=payload["id"],
        VMAGENT_CPUS=",".join(map(str, cpus)),
        HOME=workdir,
        JOBFEATURES=jobfeatures,
        MACHINEFEATURES=machinefeatures,
        TMPDIR=workdir,
    )
    if jobfeatures.startswith(LOOPBACK) or machinefeatures.startswith(LOOPBACK):
        for name in ("no_proxy", "NO_PROXY"):  # urlopen must not ask a site proxy for loopback
            listed = [h for h in env.get(name, "").split(",") if h.strip()]
            env[name] = ",".join(listed + ["127.0.0.1"] * ("127.0.0.1" not in listed))
    return env


def start(
    payload: Mapping[str, Any],
    cpus: Sequence[int],
    workdir: str,
    env: Mapping[str, str],
    memory_limit_mb: Optional[int],
    *,
    cgroup: Optional[str] = None,
    user: Optional[str] = None,
) -> Launched:
    """Start ``payload`` pinned to ``cpus`` in a new session; stdout and stderr go to files.

    ``cgroup``: a group (with its memory limit) the payload enters before exec; ``memory_limit_mb``:
    otherwise an ``RLIMIT_AS`` of that size plus 25 % (address space exceeds resident memory).
    ``user``: run as this account (the slot manager must be root); its work directory is its own.
    """
    os.makedirs(workdir, exist_ok=True)
    real_cpus = set(cpus)
    limit = int(memory_limit_mb * 1.25 * 2**20) if memory_limit_mb and not cgroup else None
    account = pwd.getpwnam(user) if user else None
    outputs = [os.path.join(workdir, name) for name in ("stdout", "stderr")]
    if account:
        for path in outputs:
            open(path, "ab").close()
        for path in [workdir, *outputs]:
            os.chown(path, account.pw_uid, account.pw_gid)

    def confine() -> None:  # runs in the child between fork and exec
        os.sched_setaffinity(0, real_cpus)
        if cgroup:
            cgroups.enter(cgroup)
        if limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        if account:
            os.initgroups(account.pw_name, account.pw_gid)
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)

    if account:
        env = dict(env, USER=account.pw_name, LOGNAME=account.pw_name)
    spawn_rss = own_rss()
    with open(outputs[0], "ab") as out, open(outputs[1], "ab") as err:
        try:
            popen = subprocess.Popen(
                ["/bin/sh", "-c", WRAPPER, "vmagent-payload", *payload["command"]],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=workdir,
                env=dict(env),
                start_new_session=True,
                close_fds=True,
                preexec_fn=confine,
            )  # noqa: PLW1509 - confine() logs nothing and imports nothing: the one other thread
            # (the MJF server) holds no lock the child needs between fork and exec
        except (OSError, subprocess.SubprocessError) as exc:
            raise CommandFailed(f"payload {payload['id']} could not start: {exc}") from None
    return Launched(popen.pid, workdir, popen, spawn_rss)


def own_rss() -> Optional[int]:
    """This process's resident size now, in bytes (what a child forked now starts with); None if unknown."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def payload_max_rss(ru_maxrss_bytes: Optional[int], spawn_rss: Optional[int]) -> Optional[int]:
    """A payload's peak resident size from its rusage, or None where the rusage cannot tell.

    Linux counts in a child's ``ru_maxrss`` the memory it shared with its parent between fork and exec,
    so a payload that stays smaller than the slot manager reports the slot manager's size, not its own.
    """
    if ru_maxrss_bytes is None or spawn_rss is None:
        return ru_maxrss_bytes
    return ru_maxrss_bytes if ru_maxrss_bytes > spawn_rss + RSS_SLACK else None


def exit_code_file(workdir: str) -> Optional[int]:
    """The exit code the wrapper recorded, if the payload finished."""
    try:
        with open(os.path.join(workdir, EXIT_FILE), encoding="ascii") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def process_in(workdir: str, pids: Optional[Iterable[int]] = None) -> Optional[Dict[str, Any]]:
    """The live process of the payload that runs in ``workdir`` (pid, pgid, create_time), or None.

    ``pids``: where to look (the members of the payload's cgroup); otherwise every process whose
    working directory is ``workdir``. The session leader (the wrapper) is preferred: it writes the
    exit code and its process group is the payload's.
    """
    found = _live(pids) if pids is not None else _working_in(os.path.realpath(workdir))
    if not found:
        return None
    leader = next((proc for proc in found if _leads_session(proc.pid)), found[0])
    try:
        return {
            "pid": leader.pid,
            "pgid": os.getpgid(leader.pid),
            "create_time": leader.create_time(),
        }
    except (OSError, psutil.Error):
        return None


def _live(pids: Iterable[int]) -> List[psutil.Process]:
    found = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _working_in(workdir: str) -> List[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.cwd() == workdir and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _leads_session(pid: int) -> bool:
    try:
        return os.getsid(pid) == pid
    except OSError:
        return False


def check_accounts(config: Config) -> None:
    """Refuse configured accounts for payloads and pilots that do not exist, or a non-root slot manager."""
    from ..config_check import accounts

    settings = config.section("slots")
    keys = [("slots.payload_user", settings["payload_user"])] if settings["payload_user"] else []
    keys += [(f"slots.pilot.users.{i}", name) for i, name in enumerate(settings["pilot"]["users"])]
    problems = accounts(config.data)
    if keys and os.geteuid() != 0:
        problems.append(
            (keys[0][0], "running payloads as another user needs the slot manager to run as root")
        )
    if problems:
        raise ConfigError(config.source, problems)
