"""The pilot pipeline runner with real child processes."""

from __future__ import annotations

import json
import os
import sys
import time

import psutil
import pytest

from vmagent.errors import PipelineFailed
from vmagent.pilot.runner import Runner
from vmagent.testing import make_config

PY = sys.executable


def step(code: str, **extra):
    return {"name": "exec", "options": {"argv": [PY, "-c", code]}, **extra}


def status_of(root) -> dict:
    with open(os.path.join(str(root), "var/lib/vmagent/pilot-status.json")) as fh:
        return json.load(fh)


def test_abort_records_command_code_and_stderr_tail(tmp_path, clock):
    """A failing step stops the pipeline; the status names it, its error code and the tail of stderr."""
    failing = step("import sys; sys.stderr.write('disk on fire'); sys.exit(3)")
    config = make_config(tmp_path, [step("print('ok')"), failing, step("print('never')")])
    with pytest.raises(PipelineFailed) as failed:
        Runner(config, clock=clock).run()
    assert "step 2/3" in failed.value.message and "process-failed" in failed.value.message
    status = status_of(tmp_path)
    assert [s["outcome"] for s in status["steps"]] == ["ok", "failed", "not-run"]
    assert status["steps"][1]["error"]["exit_code"] == 3
    assert "disk on fire" in status["steps"][1]["error"]["stderr_tail"]
    assert status["outcome"] == "failed"


def test_continue_runs_later_steps(tmp_path, clock):
    """A step with on_failure: continue fails without stopping the steps after it."""
    config = make_config(
        tmp_path, [step("raise SystemExit(1)", on_failure="continue"), step("print('after')")]
    )
    status = Runner(config, clock=clock).run()
    assert [s.outcome for s in status.steps] == ["failed", "ok"]
    assert status.outcome == "degraded"


def test_retries_back_off_doubling(tmp_path, clock):
    """A step that fails twice then succeeds is retried with doubling backoff on the injected clock."""
    marker = tmp_path / "count"
    code = (
        f"import pathlib,sys; p=pathlib.Path({str(marker)!r}); n=int(p.read_text()) if p.exists() else 0;"
        "p.write_text(str(n+1)); sys.exit(0 if n >= 2 else 1)"
    )
    config = make_config(tmp_path, [step(code, retries=3, backoff=2)])
    status = Runner(config, clock=clock).run()
    assert status.steps[0].outcome == "ok" and status.steps[0].attempts == 3
    assert clock.sleeps == [2.0, 4.0]


def test_timeout_kills_child_and_grandchild(tmp_path, clock):
    """A step past its timeout is stopped with its whole process group: no grandchild survives."""
    pidfile = tmp_path / "grandchild.pid"
    code = (
        f"import subprocess,sys,time; p=subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)']);"
        f"open({str(pidfile)!r},'w').write(str(p.pid)); time.sleep(60)"
    )
    config = make_config(tmp_path, [step(code, timeout=1.5)])
    started = time.monotonic()
    with pytest.raises(PipelineFailed):
        Runner(config, clock=clock).run()
    assert time.monotonic() - started < 30
    assert status_of(tmp_path)["steps"][0]["error"]["code"] == "timeout"
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while (
        psutil.pid_exists(grandchild)
        and psutil.Process(grandchild).status() != psutil.STATUS_ZOMBIE
    ):
        assert time.monotonic() < deadline, "grandchild survived the timeout"
        time.sleep(0.1)


def test_once_per_instance_skips_on_second_run(tmp_path, clock):
    """A once_per_instance step runs once per instance id; a second run skips it and says so."""
    counter = tmp_path / "runs"
    code = f"open({str(counter)!r},'a').write('x')"
    config = make_config(tmp_path, [step(code, once_per_instance=True)])
    Runner(config, clock=clock).run()
    second = Runner(config, clock=clock).run()
    assert counter.read_text() == "x"
    assert (
        second.steps[0].outcome == "skipped"
        and "already done for instance i-test" in second.steps[0].reason
    )
    Runner(config, clock=clock, instance_id="i-other").run()
    assert counter.read_text() == "xx"


def test_env_and_facts_flow_to_later_steps(tmp_path, clock):
    """Configured env and JSON facts of one step reach later steps and the env file."""
    first = {
        "name": "exec",
        "env": {"SITE_FLAVOUR": "big"},
        "options": {"argv": [PY, "-c", "print('{\"answer\": 42}')"], "facts": "json"},
    }
    second = step("import os,sys; sys.exit(0 if os.environ.get('SITE_FLAVOUR') == 'big' else 5)")
    status = Runner(make_config(tmp_path, [first, second]), clock=clock).run()
    assert status.outcome == "ok" and status.steps[0].facts == {"answer": 42}
    env_file = (tmp_path / "var/lib/vmagent/pilot.env").read_text()
    assert "export SITE_FLAVOUR=big" in env_file


def test_skip_keeps_step_with_reason(tmp_path, clock):
    """A step configured with skip is recorded as skipped with that reason and not run."""
    status = Runner(
        make_config(tmp_path, [step("raise SystemExit(1)", skip="not here")]), clock=clock
    ).run()
    assert status.steps[0].outcome == "skipped" and status.steps[0].reason == "not here"


def test_crashing_command_is_a_failed_step_not_a_traceback(tmp_path, clock, monkeypatch):
    """A command raising an unexpected exception fails its step with code command-crashed."""
    import vmagent.pilot.runner as runner_mod

    class Crashing:
        name = "exec"

        def run(self, ctx):
            raise ZeroDivisionError("bug in a plugin")

    config = make_config(tmp_path, [step("print('never run')")])
    monkeypatch.setattr(runner_mod.plugins, "load", lambda group, name: Crashing)
    with pytest.raises(PipelineFailed) as failed:
        Runner(config, clock=clock).run()
    assert "command-crashed" in failed.value.message
    error = status_of(tmp_path)["steps"][0]["error"]
    assert (
        error["code"] == "command-crashed"
        and "ZeroDivisionError: bug in a plugin" in error["message"]
    )
