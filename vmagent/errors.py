"""vmagent's exceptions: one base class with a stable kebab-case code, one subclass per handling.

Only ``vmagent.cli`` prints these and turns them into exit codes; everything else raises.
The ``code`` travels in status files and heartbeats, so never rename one.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple


class VmagentError(Exception):
    """Base of every error vmagent raises on purpose."""

    code = "vmagent-error"
    exit_code = 1

    def __init__(self, message: str, *, hint: Optional[str] = None, code: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def as_dict(self) -> dict:
        out = {"code": self.code, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        return out


class UsageError(VmagentError):
    """The command line asks for something that cannot be done."""

    code = "usage"
    exit_code = 2


class ConfigError(VmagentError):
    """A configuration file (or any other operator-written input) is invalid.

    ``problems`` holds ``(dotted.path, message)`` pairs; ``source`` names the file.
    """

    code = "bad-config"
    exit_code = 2

    def __init__(
        self,
        source: str,
        problems: Sequence[Tuple[str, str]],
        *,
        hint: Optional[str] = None,
    ):
        self.source = source
        self.problems = list(problems)
        lines = [f"{source}: {path or '(top)'}: {msg}" for path, msg in self.problems]
        super().__init__("\n".join(lines), hint=hint)


class PluginError(VmagentError):
    """A configured plugin name is unknown, ambiguous or broken."""

    code = "plugin-error"
    exit_code = 2


class CommandFailed(VmagentError):
    """A pilot command could not do its work; the pipeline stops or continues as configured."""

    code = "command-failed"


class ProcessFailed(CommandFailed):
    """A child process exited non-zero."""

    code = "process-failed"

    def __init__(
        self, argv: Sequence[str], returncode: int, stderr_tail: str, *, hint: Optional[str] = None
    ):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        tail = f": {stderr_tail.strip().splitlines()[-1]}" if stderr_tail.strip() else ""
        super().__init__(f"{argv[0]} exited with {returncode}{tail}", hint=hint)

    def as_dict(self) -> dict:
        out = super().as_dict()
        out.update(argv=self.argv, exit_code=self.returncode, stderr_tail=self.stderr_tail)
        return out


class ProcessTimeout(CommandFailed):
    """A child process outlived its timeout and was killed with its whole process group."""

    code = "timeout"

    def __init__(self, argv: Sequence[str], timeout: float, stderr_tail: str = ""):
        self.argv = list(argv)
        self.timeout = timeout
        self.stderr_tail = stderr_tail
        super().__init__(
            f"{argv[0]} did not finish within {timeout:g} s and was killed",
            hint="raise the command's timeout or check what it waits for",
        )

    def as_dict(self) -> dict:
        out = super().as_dict()
        out.update(argv=self.argv, timeout=self.timeout, stderr_tail=self.stderr_tail)
        return out


class CommandTimeout(CommandFailed):
    """A pilot command as a whole ran past its timeout."""

    code = "timeout"


class PipelineFailed(CommandFailed):
    """The pilot pipeline stopped at a command whose ``on_failure`` is ``abort``."""

    code = "pipeline-failed"


class NodeUnfit(CommandFailed):
    """The node fails a check; carries a vacuum outcome code (HSF-TN-2016-04), 500 by default."""

    code = "node-unfit"

    def __init__(self, message: str, *, hint: Optional[str] = None, vacuum_code: int = 500):
        super().__init__(message, hint=hint)
        self.vacuum_code = vacuum_code

    def as_dict(self) -> dict:
        out = super().as_dict()
        out["vacuum_code"] = self.vacuum_code
        return out


class AllocationError(VmagentError):
    """An allocation that would over-book the VM, or a release of something never held."""

    code = "allocation-error"


class CgroupUnavailable(VmagentError):
    """cgroup v2 memory limits cannot be used here; the message says why."""

    code = "cgroup-unavailable"


class InputRejected(VmagentError):
    """Untrusted input (heartbeat answer, payload description, upstream MJF value) is invalid."""

    code = "input-rejected"
    exit_code = 2


class ManagerUnavailable(VmagentError):
    """The central manager could not be reached or answered 5xx: transient, retry with backoff."""

    code = "manager-unavailable"


class ManagerRefused(VmagentError):
    """The central manager answered 4xx: the request itself is wrong or not allowed; do not retry as is."""

    code = "manager-refused"

    def __init__(self, status: int, detail: str, *, hint: Optional[str] = None):
        self.status = status
        self.detail = detail
        super().__init__(f"manager refused the request ({status}): {detail}", hint=hint)
