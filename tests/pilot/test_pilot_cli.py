"""The vmagent command line, run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml


def vmagent(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "vmagent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_help_lists_subsystems():
    """--help teaches the main commands."""
    done = vmagent("--help")
    assert done.returncode == 0
    for word in ("check-config", "pilot", "pool", "monitor", "mjf", "manager", "demo"):
        assert word in done.stdout


def test_pilot_commands_lists_builtins():
    """'pilot commands' lists every built-in with its distribution and no broken plugin."""
    done = vmagent("pilot", "commands")
    assert done.returncode == 0 and "BROKEN" not in done.stdout
    for name in ("check-node", "install-cvmfs", "setup-disks", "setup-mjf", "launch", "exec"):
        assert name in done.stdout


def test_bad_config_gives_path_lines_exit_2_and_touches_nothing(tmp_path):
    """Wrong type, unknown key, unknown command and a bad option each give 'file: path: message'; exit 2."""
    root = tmp_path / "root"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "paths": {"root": str(root)},
                "bogus": 1,
                "instance": {"id": 5},
                "pilot": {
                    "commands": [
                        {"name": "no-such-command"},
                        {"name": "exec", "options": {"argv": "ls"}},
                    ]
                },
            }
        )
    )
    done = vmagent("check-config", str(bad))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert (
        f"{bad}: bogus: unknown key; allowed: instance, manager, mjf, monitor, paths, pilot, slots"
        in lines
    )
    assert any(line.startswith(f"{bad}: instance.id: ") for line in lines)
    assert any(
        line.startswith(f"{bad}: pilot.commands.0.name: no plugin 'no-such-command'")
        and "exec" in line
        for line in lines
    )
    assert any(line.startswith(f"{bad}: pilot.commands.1.options.argv: ") for line in lines)
    assert not root.exists()
    run = vmagent("-c", str(bad), "pilot", "run")
    assert run.returncode == 2 and not root.exists()


def test_dry_run_lists_commands_and_writes_nothing(tmp_path):
    """'pilot run --dry-run' prints each external command in order and leaves no files behind."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text(
        'ID="almalinux"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n'
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "paths": {"root": str(root)},
                "instance": {"id": "i-1"},
                "pilot": {
                    "commands": [
                        {"name": "exec", "options": {"argv": ["touch", str(tmp_path / "made")]}},
                        {"name": "install-cvmfs", "options": {"repositories": ["lhcb.cern.ch"]}},
                    ]
                },
            }
        )
    )
    done = vmagent("-c", str(cfg), "pilot", "run", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert f"$ touch {tmp_path / 'made'}" in done.stdout
    assert "write /etc/cvmfs/default.local" in done.stdout and "$ cvmfs_config setup" in done.stdout
    assert "$ dnf install -y cvmfs" in done.stdout
    assert not (tmp_path / "made").exists()
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == ["etc", "etc/os-release"]


def test_config_env_var_and_show(tmp_path):
    """VMAGENT_CONFIG selects the file; 'config show' prints it with defaults filled in."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("instance: {id: i-env}\n")
    done = vmagent("config", "show", env={"VMAGENT_CONFIG": str(cfg)})
    shown = yaml.safe_load(done.stdout)
    assert shown["instance"]["id"] == "i-env" and shown["slots"]["policy"] == "backfill"
    assert vmagent("config", "schema").stdout.lstrip().startswith("{")


def test_plan_shows_resolved_steps_and_changes_nothing(tmp_path):
    """'pilot plan' lists each step with its timeout, retries, flags and options, and writes nothing."""
    root = tmp_path / "root"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "paths": {"root": str(root)},
                "instance": {"id": "i-plan"},
                "pilot": {
                    "commands": [
                        {
                            "name": "exec",
                            "options": {"argv": ["true"]},
                            "retries": 2,
                            "backoff": 3,
                            "once_per_instance": True,
                            "env": {"SITE": "x"},
                        },
                        {
                            "name": "install-cvmfs",
                            "options": {"repositories": ["lhcb.cern.ch"]},
                            "skip": "baked image",
                        },
                    ]
                },
            }
        )
    )
    done = vmagent("-c", str(cfg), "pilot", "plan")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"# pilot plan from {cfg} for instance i-plan"
    assert (
        lines[1]
        == " 1. exec  (timeout 600s, retries 2, backoff 3s, on failure abort, once per instance)"
    )
    assert '"argv": ["true"]' in lines[2] and lines[3].strip() == "exports: SITE"
    assert lines[4] == " 2. install-cvmfs  (skipped: baked image)"
    assert not root.exists()
