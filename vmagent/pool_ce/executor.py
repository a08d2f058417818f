"""Start one payload: its own session, work directory, CPUs, memory limit, environment and features.

The payload runs under ``/bin/sh -c '"$@"; echo $? > exit_code'`` with its argv passed as positional
parameters (never interpreted by the shell), so that its exit code survives a restart of the slot
manager: a re-adopted payload is not our child, but its exit code still lands in its directory.
"""

from __future__ import annotations

import os
import resource
import subprocess
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence

from ..errors import CommandFailed

WRAPPER = '"$@"; rc=$?; echo $rc > .vmagent-exit-code.tmp && mv .vmagent-exit-code.tmp .vmagent-exit-code; exit $rc'
EXIT_FILE = ".vmagent-exit-code"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "GOTO_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


@dataclass(frozen=True)
class Launched:
    pid: int
    workdir: str
    popen: Optional[subprocess.Popen]


def payload_env(base: Mapping[str, str], payload: Mapping[str, Any], cpus: Sequence[int],
                jobfeatures: str, machinefeatures: str, workdir: str) -> Dict[str, str]:
    env = dict(base)
    env.update(payload.get("env", {}))
    cores = str(len(cpus))
    env.update({name: cores for name in THREAD_VARS})
    env.update(VMAGENT_PAYLOAD_ID=payload["id"], VMAGENT_CPUS=",".join(map(str, cpus)), HOME=workdir,
               JOBFEATURES=jobfeatures, MACHINEFEATURES=machinefeatures, TMPDIR=workdir)
    return env


def start(payload: Mapping[str, Any], cpus: Sequence[int], workdir: str, env: Mapping[str, str],
          memory_limit_mb: Optional[int]) -> Launched:
    """Start ``payload`` pinned to ``cpus`` in a new session; stdout and stderr go to files."""
    os.makedirs(workdir, exist_ok=True)
    real_cpus = set(cpus)
    limit = int(memory_limit_mb * 1.25 * 2**20) if memory_limit_mb else None

    def confine() -> None:  # runs in the child between fork and exec
        os.sched_setaffinity(0, real_cpus)
        if limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    with open(os.path.join(workdir, "stdout"), "ab") as out, open(os.path.join(workdir, "stderr"), "ab") as err:
        try:
            popen = subprocess.Popen(
                ["/bin/sh", "-c", WRAPPER, "vmagent-payload", *payload["command"]],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=workdir, env=dict(env),
                start_new_session=True, close_fds=True, preexec_fn=confine)  # noqa: PLW1509 - single-threaded
        except OSError as exc:
            raise CommandFailed(f"payload {payload['id']} could not start: {exc}") from None
    return Launched(popen.pid, workdir, popen)


def exit_code_file(workdir: str) -> Optional[int]:
    """The exit code the wrapper recorded, if the payload finished."""
    try:
        with open(os.path.join(workdir, EXIT_FILE), encoding="ascii") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None
