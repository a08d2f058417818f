"""Hostile configuration files: each gives 'file: where: message' lines and exit 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vmagent import config
from vmagent.errors import ConfigError


def check_config(path, *extra):
    return subprocess.run(
        [sys.executable, "-m", "vmagent", "check-config", *extra, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )


def refused(path, *extra):
    """The stderr of a check-config run that must end with exit 2 and no traceback."""
    done = check_config(path, *extra)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr


def test_non_utf8_bytes_are_named_with_their_offset(tmp_path):
    """A file with a byte that is not UTF-8 is refused with that byte, its offset and its line."""
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"monitor:\n  period_seconds: 5 # caf\xe9\n")
    err = refused(bad)
    assert f"{bad}: line 2: not UTF-8 text (byte 0xe9 at offset 34)" in err, err


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 5000 + "]" * 5000 + "\n",
        "a: " + "{x: " * 5000 + "1" + "}" * 5000 + "\n",
        "".join(f"{' ' * i}k{i}:\n" for i in range(300)),
    ],
)
def test_deep_nesting_is_refused(tmp_path, text):
    """Flow sequences, flow mappings and block mappings nested deeper than the limit give a clear error."""
    deep = tmp_path / "deep.yaml"
    deep.write_text(text)
    err = refused(deep)
    assert f"{deep}: " in err and f"nested deeper than {config.MAX_DEPTH} levels" in err, err


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", ".NaN", "+.Inf"])
def test_non_finite_numbers_are_refused(tmp_path, value):
    """NaN and Infinity are refused where a number is expected, naming the key."""
    bad = tmp_path / "nan.yaml"
    bad.write_text(f"monitor:\n  period_seconds: {value}\n")
    err = refused(bad)
    assert f"{bad}: monitor.period_seconds: must be a finite number" in err, err


def test_non_finite_numbers_are_refused_in_command_options_and_lists():
    """A NaN inside a pilot command's options or in a list is reported at its full path."""
    text = "pilot:\n  commands:\n    - name: exec\n      timeout: .inf\n      options: {argv: [ls, .nan]}\n"
    with pytest.raises(ConfigError) as caught:
        config.parse(text, "c.yaml")
    assert ("pilot.commands.0.timeout", "must be a finite number") in caught.value.problems
    assert ("pilot.commands.0.options.argv.1", "must be a finite number") in caught.value.problems


def test_duplicate_keys_are_refused(tmp_path):
    """A key given twice in one mapping is refused with its line and the mapping's path."""
    bad = tmp_path / "dup.yaml"
    bad.write_text("monitor:\n  period_seconds: 5\n  check_seconds: 2\n  period_seconds: 60\n")
    err = refused(bad)
    assert f"{bad}: line 4: duplicate key 'period_seconds' in mapping at monitor" in err, err


def test_duplicate_top_level_key_and_merge_keys():
    """A repeated section is a duplicate at the top; a merge key ('<<') overridden by its own mapping is not."""
    with pytest.raises(ConfigError) as caught:
        config.parse("slots: {cores: 1}\nslots: {cores: 2}\n", "c.yaml")
    assert caught.value.problems == [("line 2", "duplicate key 'slots' in mapping at (top)")]
    doc = config.yaml_document(
        "base: &b {cores: 1, poll_seconds: 3}\nslots: {<<: *b, cores: 2}\n", "c.yaml"
    )
    assert doc["slots"] == {"cores": 2, "poll_seconds": 3}


def test_alias_bombs_and_recursive_aliases_are_refused():
    """Aliases that expand to too many nodes, or contain themselves, are refused before anything walks them."""
    bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 9):
        bomb += f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n"
    with pytest.raises(ConfigError) as caught:
        config.parse(bomb, "bomb.yaml")
    assert "expands to more than" in caught.value.message
    with pytest.raises(ConfigError) as caught:
        config.parse("a: &loop [1, *loop]\n", "loop.yaml")
    assert "refers to itself" in caught.value.message


def test_every_config_reader_gives_exit_2_on_a_bad_file(tmp_path):
    """config show and check-config report a duplicate key as 'file: where: message', exit 2."""
    bad = tmp_path / "dup.yaml"
    bad.write_text("slots: {}\nslots: {}\n")
    assert f"{bad}: line 2: duplicate key 'slots'" in refused(bad)
    done = subprocess.run(
        [sys.executable, "-m", "vmagent", "-c", str(bad), "config", "show"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and f"{bad}: line 2: duplicate key 'slots'" in done.stderr, (
        done.stderr
    )


def test_the_monitors_read_refuses_what_check_config_refuses(tmp_path):
    """The monitor's own read (checked in a forked child) uses the same safe reading: no NaN slips through."""
    from vmagent.config_check import load_for_monitor

    bad = tmp_path / "nan.yaml"
    bad.write_text("monitor: {period_seconds: .nan}\n")
    with pytest.raises(ConfigError) as caught:
        load_for_monitor(str(bad))
    assert caught.value.problems == [("monitor.period_seconds", "must be a finite number")]


def test_site_descriptions_use_the_same_safe_reading(tmp_path):
    """A site description for 'userdata render' gets the same refusals: duplicate keys, NaN, non-UTF-8."""
    from vmagent.userdata.render import load_site

    site = tmp_path / "site.yaml"
    site.write_text("site: A\nsite: B\n")
    with pytest.raises(ConfigError) as caught:
        load_site(str(site))
    assert caught.value.problems == [("line 2", "duplicate key 'site' in mapping at (top)")]
    site.write_text("site: A\nvo: x\nimages: {i: {lifetime_seconds: .nan}}\n")
    with pytest.raises(ConfigError) as caught:
        load_site(str(site))
    assert ("images.i.lifetime_seconds", "must be a finite number") in caught.value.problems
    site.write_bytes(b"site: \xff\n")
    with pytest.raises(ConfigError) as caught:
        load_site(str(site))
    assert caught.value.problems == [("line 1", "not UTF-8 text (byte 0xff at offset 6)")]
