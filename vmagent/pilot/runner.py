"""Run the configured pilot commands in order: timeouts, retries, once-per-instance, status file.

Each command gets a fresh, immutable ``Context`` holding the facts and environment of the commands
before it. The runner writes the status file after every step, so even a crash leaves a record.
A command runs in a worker thread that the runner waits for until its deadline (``worker``); no
signal handler interrupts it. A command still running at its deadline is not tried again.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from types import MappingProxyType
from typing import Any, Dict, List, Optional, Tuple

from .. import plugins
from ..clock import Clock, SystemClock
from ..config import CommandSpec, Config, thaw
from ..core.files import write_atomic
from ..core.instance import instance_id as detect_instance_id
from ..errors import CommandFailed, CommandTimeout, NodeUnfit, PipelineFailed, VmagentError
from . import status as status_mod
from .command import Actions, Context, Result
from .worker import Worker

log = logging.getLogger("vmagent.pilot")

__all__ = ["PipelineFailed", "Runner", "load_commands"]  # PipelineFailed lives in vmagent.errors


def load_commands(config: Config) -> List[Tuple[CommandSpec, Any]]:
    """Instantiate every configured command (all names were resolved when the config loaded)."""
    group = plugins.GROUPS["pilot_commands"]
    return [(spec, plugins.load(group, spec.name)()) for spec in config.commands]


class Runner:
    """Runs one pipeline; ``run()`` returns the final ``RunStatus`` or raises ``PipelineFailed``."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Optional[Clock] = None,
        dry_run: bool = False,
        instance_id: Optional[str] = None,
        status_file: Optional[str] = None,
    ):
        self.config = config
        self.clock = clock or SystemClock()
        self.actions = Actions(dry_run)
        self.instance_id = instance_id or detect_instance_id(config)
        self.status_file = status_file or config.path("pilot.status_file")
        self.status = status_mod.RunStatus(
            self.instance_id, config.source, self.clock.time(), dry_run
        )
        self.facts: Dict[str, Any] = {"instance_id": self.instance_id}
        self.env: Dict[str, str] = {"VMAGENT_INSTANCE_ID": self.instance_id}
        self.abandoned: List[Worker] = []  # commands still running past their deadline

    def run(self) -> status_mod.RunStatus:
        commands = load_commands(self.config)
        self.status.steps = [status_mod.StepStatus(spec.name) for spec, _ in commands]
        self._save()
        failures = []
        for number, (spec, command) in enumerate(commands, 1):
            step = self.status.steps[number - 1]
            self.actions.index = number
            label = f"[{number}/{len(commands)}] {spec.name}"
            error = self._step(spec, command, step, label)
            if error is None:
                continue
            failures.append((spec, error))
            if spec.on_failure == "abort":
                for later in self.status.steps[number:]:
                    later.outcome, later.reason = "not-run", f"pipeline stopped at {spec.name}"
                self._finish("failed", self._failure_line(number, len(commands), spec, error))
                raise PipelineFailed(self.status.summary, hint=error.hint)
        outcome = "degraded" if failures else "ok"
        done = f"pilot pipeline {outcome}: {len(commands)} commands for instance {self.instance_id}"
        if failures:
            done += "; failed but continued: " + ", ".join(
                f"{s.name} [{e.code}]" for s, e in failures
            )
        self._finish(outcome, done)
        return self.status

    def _step(
        self, spec: CommandSpec, command: Any, step: status_mod.StepStatus, label: str
    ) -> Optional[VmagentError]:
        if spec.skip:
            step.outcome, step.reason = "skipped", spec.skip
            log.info("%s: skipped (%s)", label, spec.skip)
            self._save()
            return None
        marker = self._marker(spec)
        if spec.once_per_instance and os.path.exists(marker):
            done = _read_json(marker)
            self._fold(step, Result(done.get("facts", {}), done.get("env", {})), spec)
            step.outcome = "skipped"
            step.reason = f"once per instance: already done for instance {self.instance_id}"
            log.info("%s: skipped, already done for instance %s", label, self.instance_id)
            self._save()
            return None
        step.outcome, step.started = "running", self.clock.time()
        self._save()
        started = self.clock.monotonic()
        error: Optional[VmagentError] = None
        result: Optional[Result] = None
        for attempt in range(spec.retries + 1):
            step.attempts = attempt + 1
            if attempt:
                delay = spec.backoff * 2 ** (attempt - 1)
                log.warning(
                    "%s: attempt %d failed (%s); retrying in %g s", label, attempt, error, delay
                )
                self.clock.sleep(delay)
            still_running = len(self.abandoned)
            result, error = self._attempt(spec, command)
            if error is None or self.actions.dry_run or isinstance(error, NodeUnfit):
                break  # a dry run or an unfit node does not get better by trying again
            if len(self.abandoned) > still_running:
                break  # never two attempts of one command at once
        step.duration = round(self.clock.monotonic() - started, 3)
        if error is not None:
            step.outcome, step.error = "failed", error.as_dict()
            log.error(
                "%s: failed after %d attempt(s): [%s] %s",
                label,
                step.attempts,
                error.code,
                error.message,
            )
            self._save()
            return error
        assert result is not None
        self._fold(step, result, spec)
        step.outcome = "skipped" if result.skipped else "ok"
        step.reason = result.skipped
        if spec.once_per_instance and not self.actions.dry_run and not result.skipped:
            write_atomic(
                marker,
                json.dumps(
                    {
                        "finished": self.clock.time(),
                        "facts": thaw(result.facts),
                        "env": dict(result.env),
                    },
                    default=str,
                ),
                0o644,
            )
        log.info(
            "%s: %s%s in %.2f s",
            label,
            step.outcome,
            f" ({result.skipped})" if result.skipped else "",
            step.duration,
        )
        self._save()
        return None

    def _attempt(
        self, spec: CommandSpec, command: Any
    ) -> Tuple[Optional[Result], Optional[VmagentError]]:
        ctx = Context(
            config=self.config,
            instance_id=self.instance_id,
            options=spec.options,
            facts=MappingProxyType(dict(self.facts)),
            env=MappingProxyType(dict(self.env)),
            clock=self.clock,
            deadline=self.clock.monotonic() + spec.timeout,
            actions=self.actions,
            step=spec.name,
        )
        worker = Worker(spec.name, lambda: command.run(ctx))
        if not worker.finished(ctx.deadline - self.clock.monotonic(), ctx.children):
            self.abandoned.append(worker)
            log.warning("%s: still running past its deadline; left to end on its own", spec.name)
            return None, CommandTimeout(
                f"{spec.name} did not finish within {spec.timeout:g} s",
                hint="raise its timeout in the config or check what it waits for",
            )
        try:
            returned = worker.outcome()
        except VmagentError as exc:
            return None, exc
        except Exception as exc:  # noqa: BLE001 - a crashing plugin is a failed step, not a dead runner
            log.debug("%s crashed:\n%s", spec.name, traceback.format_exc())
            return None, CommandFailed(
                f"{type(exc).__name__}: {exc}",
                code="command-crashed",
                hint=f"a bug in the {spec.name} command; run with -v for the traceback",
            )
        if isinstance(returned, Result):
            return returned, None
        return Result(facts=dict(returned or {})), None

    def _fold(self, step: status_mod.StepStatus, result: Result, spec: CommandSpec) -> None:
        """Make a step's facts and environment (its own and its configured ``env``) visible to later steps."""
        step.facts = thaw(result.facts)
        self.facts.update(result.facts)
        self.env.update(result.env)
        self.env.update(spec.env)

    def _marker(self, spec: CommandSpec) -> str:
        state = self.config.path("paths.state_dir")
        return os.path.join(state, "instances", self.instance_id, "done", f"{spec.name}.json")

    def _failure_line(self, number: int, total: int, spec: CommandSpec, error: VmagentError) -> str:
        line = (
            f"pilot failed at step {number}/{total} {spec.name!r} [{error.code}]: {error.message}"
        )
        if not self.actions.dry_run:
            line += f"; full status in {self.status_file}"
        return line

    def _finish(self, outcome: str, summary: str) -> None:
        self.status.outcome, self.status.summary, self.status.finished = (
            outcome,
            summary,
            self.clock.time(),
        )
        if not self.actions.dry_run:
            write_atomic(self.config.path("pilot.env_file"), status_mod.env_script(self.env), 0o644)
        self._save()

    def _save(self) -> None:
        if not self.actions.dry_run:
            self.status.save(self.status_file)


def _read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}
