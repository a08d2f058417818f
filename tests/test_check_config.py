"""``vmagent check-config`` checks what a configuration configures and reports every mistake at once."""

from __future__ import annotations

import subprocess
import sys

import yaml

from vmagent.testing import write_config

VALID_MONITOR = {"endpoints": [{"name": "log"}], "halt_action": "exit"}


def configured(tmp_path, **sections):
    """A configuration that is valid but for ``sections`` (merged over a valid monitor section)."""
    monitor = {**VALID_MONITOR, **sections.pop("monitor", {})}
    return write_config(tmp_path, [], monitor=monitor, **sections)


def check(path):
    """Run the real CLI in a child: its exit code and the lines it printed on stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "vmagent", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, [line for line in done.stderr.splitlines() if line]


def refused(path):
    """The problem lines of a check that must exit 2, without the file name in front."""
    code, lines = check(path)
    assert code == 2, lines
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    return [line[len(f"{path}: ") :] for line in lines]


def test_a_valid_configuration_is_ok(tmp_path):
    """The baseline the other tests spoil is accepted: exit 0, nothing on stderr."""
    code, lines = check(configured(tmp_path))
    assert (code, lines) == (0, [])


def test_unknown_masonry_policy(tmp_path):
    """An unknown slots.policy is named with the installed policies."""
    problems = refused(configured(tmp_path, slots={"policy": "tetris"}))
    assert problems == [
        "slots.policy: no plugin 'tetris' in vmagent.masonry_policies; "
        "installed: backfill, fifo, greedy"
    ]


def test_unknown_payload_source(tmp_path):
    """An unknown slots.source is named with the installed sources."""
    problems = refused(configured(tmp_path, slots={"source": "carrier"}))
    assert len(problems) == 1
    assert problems[0].startswith("slots.source: no plugin 'carrier' in vmagent.payload_sources")


def test_unknown_endpoint(tmp_path):
    """An unknown monitor.endpoints[i].name is reported at that entry's name."""
    endpoints = [{"name": "log"}, {"name": "pigeon"}]
    problems = refused(configured(tmp_path, monitor={"endpoints": endpoints}))
    assert problems == [
        "monitor.endpoints.1.name: no plugin 'pigeon' in vmagent.endpoints; "
        "installed: http, log, vac"
    ]


def test_unknown_halt_action(tmp_path):
    """An unknown monitor.halt_action is named with the installed halt actions."""
    problems = refused(configured(tmp_path, monitor={"halt_action": "explode"}))
    assert problems == [
        "monitor.halt_action: no plugin 'explode' in vmagent.halt_actions; installed: exit, poweroff"
    ]


def test_wrong_endpoint_options(tmp_path):
    """Options an endpoint does not declare, or of the wrong type, are named by their dotted path."""
    endpoints = [{"name": "log", "options": {"sample": "yes", "colour": "red"}}]
    problems = refused(configured(tmp_path, monitor={"endpoints": endpoints}))
    assert "monitor.endpoints.0.options.colour: unknown key; allowed: path, sample" in problems
    assert "monitor.endpoints.0.options.sample: 'yes' is not of type 'boolean'" in problems


def test_pilots_mode_without_a_pilot_program(tmp_path):
    """slots.mode pilots with no slots.pilot.argv is refused before the slot manager starts."""
    problems = refused(configured(tmp_path, slots={"mode": "pilots"}))
    assert problems == [
        "slots.pilot.argv: is empty but slots.mode is pilots: set the pilot program"
    ]


def test_unknown_payload_user(tmp_path):
    """A slots.payload_user that is no account on this machine is refused; an existing one is not."""
    problems = refused(configured(tmp_path, slots={"payload_user": "no-such-vmagent-user"}))
    assert problems == ["slots.payload_user: no such user 'no-such-vmagent-user' on this machine"]
    assert check(configured(tmp_path, slots={"payload_user": "root"})) == (0, [])


def test_http_endpoint_without_manager_url(tmp_path):
    """The http endpoint without manager.url is refused, saying which endpoint needs it."""
    endpoints = [{"name": "log"}, {"name": "http"}]
    problems = refused(configured(tmp_path, monitor={"endpoints": endpoints}))
    assert problems == ["manager.url: is not set but monitor.endpoints.1 ('http') needs it"]


def test_empty_file(tmp_path):
    """An empty file (or only comments) is refused instead of passing for all defaults."""
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert refused(empty) == ["(top): is empty: no settings at all"]


def test_every_mistake_at_once(tmp_path):
    """Several mistakes in one file give one line each, schema and configured ones together, exit 2."""
    path = tmp_path / "many.yaml"
    doc = {
        "paths": {"root": str(tmp_path)},
        "pilot": {"commands": ["check-node", "teleport"]},
        "slots": {
            "mode": "pilots",
            "policy": "tetris",
            "source": "carrier",
            "payload_user": "no-such-vmagent-user",
        },
        "monitor": {
            "period_seconds": -1,
            "halt_action": "explode",
            "endpoints": [
                {"name": "http"},
                {"name": "pigeon"},
                {"name": "log", "options": {"colour": "red"}},
            ],
        },
    }
    path.write_text(yaml.safe_dump(doc))
    problems = refused(path)
    assert [line.split(":", 1)[0] for line in problems] == [
        "manager.url",
        "monitor.endpoints.1.name",
        "monitor.endpoints.2.options.colour",
        "monitor.halt_action",
        "monitor.period_seconds",
        "pilot.commands.1.name",
        "slots.payload_user",
        "slots.pilot.argv",
        "slots.policy",
        "slots.source",
    ], problems
