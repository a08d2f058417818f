"""A bad or incomplete state file: the slot manager recovers running payloads from disk, reports the rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import yaml

from vmagent import config as vmconfig
from vmagent import process
from vmagent.pool_ce import cgroups, executor, state

# waits until the file named by argv[1] exists, then records when and where it ran
WAITER = """
import json, os, sys, time
t0 = time.time()
while not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
json.dump({'cpus': sorted(os.sched_getaffinity(0)), 'start': t0, 'end': time.time()}, open('out.json', 'w'))
"""
DEADLINE = 90


def make_config(tmp_path, name):
    path = tmp_path / "vmagent.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "instance": {"id": f"i-{name}"},
                "paths": {"root": str(tmp_path / "root")},
                "slots": {
                    "cores": 2,
                    "memory_mb": 4000,
                    "poll_seconds": 0.5,
                    "exit_when_idle": True,
                },
            }
        )
    )
    return str(path)


def vmagent(cfg, *args, log=None):
    argv = [sys.executable, "-m", "vmagent", "-c", cfg, *args]
    if log is None:
        return subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
    with open(log, "ab") as out:  # the child keeps its own copy
        return subprocess.Popen(argv, stdout=out, stderr=out, start_new_session=True)


def submit(cfg, tmp_path, payloads):
    spec = tmp_path / "payloads.json"
    spec.write_text(json.dumps(payloads))
    assert vmagent(cfg, "pool", "submit", str(spec)).wait(60) == 0


def waiter(pid, go):
    return {"id": pid, "cores": 1, "command": [sys.executable, "-c", WAITER, str(go)]}


def wait_for(predicate, what):
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def paths(tmp_path):
    pool = tmp_path / "root/var/lib/vmagent/pool"
    return pool / "state.json", pool / "results.jsonl", tmp_path / "root/scratch/payloads"


def results(tmp_path):
    found = paths(tmp_path)[1]
    return (
        {r["id"]: r for r in map(json.loads, found.read_text().splitlines())}
        if found.exists()
        else {}
    )


def running_ids(tmp_path):
    try:
        return {e["id"] for e in json.loads(paths(tmp_path)[0].read_text())["running"]}
    except (OSError, ValueError, KeyError):
        return set()


def kill_first_manager(tmp_path, cfg, wanted):
    """Start a slot manager, wait until ``wanted`` run, SIGKILL it (the payloads live on)."""
    first = vmagent(cfg, "pool", "run")
    wait_for(lambda: running_ids(tmp_path) >= set(wanted), f"{wanted} running")
    first.send_signal(signal.SIGKILL)
    first.wait()
    return json.loads(paths(tmp_path)[0].read_text())


def log_text(log):
    return log.read_text(errors="replace") if log.exists() else ""


def test_truncated_state_adopts_the_running_payload_and_keeps_its_cpus(tmp_path):
    """A half-written state.json is logged, kept aside, and the still-running payload is adopted from its
    pid file: a new payload starts on the other CPU, and both results are reported."""
    cfg = make_config(tmp_path, "recover-a")
    go = tmp_path / "go"
    submit(cfg, tmp_path, [waiter("long", go)])
    state_file, _, work = paths(tmp_path)
    text = json.dumps(kill_first_manager(tmp_path, cfg, ["long"]))
    state_file.write_text(
        text[: len(text) // 2]
    )  # what a crash in the middle of a plain write leaves
    submit(
        cfg, tmp_path, [{"id": "short", "cores": 1, "command": [sys.executable, "-c", WAITER, "/"]}]
    )
    log = tmp_path / "second.log"
    second = vmagent(cfg, "pool", "run", log=log)
    wait_for(lambda: (work / "short/out.json").exists(), "the short payload")
    go.touch()
    assert second.wait(DEADLINE) == 0, log_text(log)
    long_ran = json.loads((work / "long/out.json").read_text())
    short_ran = json.loads((work / "short/out.json").read_text())
    assert not set(long_ran["cpus"]) & set(short_ran["cpus"]), (long_ran, short_ran)
    assert {k: r["outcome"] for k, r in results(tmp_path).items()} == {
        "long": "done",
        "short": "done",
    }
    assert "state.json" in log_text(log) and "ERROR" in log_text(log), log_text(log)
    assert list(state_file.parent.glob("state.json.bad-*"))


def test_payload_of_unknown_cpus_blocks_every_core_until_it_ends(tmp_path):
    """A running payload found only through its work directory (no state, no pid file) makes every core
    count as busy: nothing new starts before it ends, and its result is reported."""
    cfg = make_config(tmp_path, "recover-b")
    go = tmp_path / "go"
    submit(cfg, tmp_path, [waiter("long", go)])
    state_file, _, work = paths(tmp_path)
    kill_first_manager(tmp_path, cfg, ["long"])
    state_file.write_text("\x00" * 64)
    for pidfile in (tmp_path / "root/var/lib/vmagent/pool/payloads").glob("*.json"):
        pidfile.unlink()  # as if the slot manager died between starting it and writing its pid file
    submit(
        cfg, tmp_path, [{"id": "short", "cores": 1, "command": [sys.executable, "-c", WAITER, "/"]}]
    )
    log = tmp_path / "second.log"
    second = vmagent(cfg, "pool", "run", log=log)
    wait_for(
        lambda: (work / "short/out.json").exists() or "CPUs unknown" in log_text(log),
        "the short payload or the slot manager holding back",
    )
    go.touch()
    assert second.wait(DEADLINE) == 0, log_text(log)
    long_ran = json.loads((work / "long/out.json").read_text())
    short_ran = json.loads((work / "short/out.json").read_text())
    assert short_ran["start"] >= long_ran["end"], (long_ran, short_ran)
    assert {k: r["outcome"] for k, r in results(tmp_path).items()} == {
        "long": "done",
        "short": "done",
    }


def test_payloads_gone_while_the_state_was_lost_are_reported(tmp_path):
    """With a garbage state, a payload that died without an exit code is reported lost ("state lost"),
    one that finished meanwhile is reported from its exit code."""
    cfg = make_config(tmp_path, "recover-c")
    submit(cfg, tmp_path, [waiter("dies", tmp_path / "never"), waiter("ends", tmp_path / "go")])
    state_file, _, work = paths(tmp_path)
    previous = kill_first_manager(tmp_path, cfg, ["dies", "ends"])
    dying = next(e for e in previous["running"] if e["id"] == "dies")
    os.killpg(dying["pgid"], signal.SIGKILL)  # the wrapper dies too: no exit code is written
    (tmp_path / "go").touch()
    wait_for(lambda: (work / "ends/.vmagent-exit-code").exists(), "the exit code of 'ends'")
    state_file.write_text("garbage, not JSON")
    log = tmp_path / "second.log"
    assert vmagent(cfg, "pool", "run", log=log).wait(DEADLINE) == 0, log_text(log)
    found = results(tmp_path)
    assert found["dies"]["outcome"] == "lost" and found["dies"]["reason"] == "state lost", found
    assert found["ends"]["outcome"] == "done" and found["ends"]["exit_code"] == 0, found
    assert (tmp_path / "root/var/spool/vmagent/results/dies.json").exists()


def test_wrongly_typed_state_does_not_crash_the_unit(tmp_path):
    """A state file of the right version but wrong types is logged and kept aside; the slot manager runs."""
    cfg = make_config(tmp_path, "recover-d")
    state_file, _, _ = paths(tmp_path)
    state_file.parent.mkdir(parents=True)
    state_file.write_text(
        json.dumps({"version": 1, "running": 5, "held": "x", "counts": {"done": "many"}})
    )
    submit(cfg, tmp_path, [{"id": "after", "cores": 1, "command": ["/bin/true"]}])
    log = tmp_path / "run.log"
    assert vmagent(cfg, "pool", "run", log=log).wait(DEADLINE) == 0, log_text(log)
    assert "running" in log_text(log) and "counts.done" in log_text(log), log_text(log)
    assert results(tmp_path)["after"]["outcome"] == "done"
    assert list(state_file.parent.glob("state.json.bad-*"))


def test_state_entries_are_validated_one_by_one(tmp_path):
    """read keeps the valid running entries and drops one with a string pid, naming it."""
    cfg = make_config(tmp_path, "recover-e")
    good = {
        "id": "a",
        "payload": {"id": "a", "command": ["true"]},
        "cores": 1,
        "slots": [0],
        "cpus": [0],
        "memory_mb": 0,
        "pid": 4242,
        "pgid": 4242,
        "started_at": 1.0,
        "estimated_end": 2.0,
        "workdir": "/scratch/payloads/a",
    }
    bad = dict(good, id="b", payload={"id": "b", "command": ["true"]}, pid="4243")
    state_file = paths(tmp_path)[0]
    state_file.parent.mkdir(parents=True)
    state_file.write_text(json.dumps({"version": 1, "running": [good, bad], "counts": {"done": 3}}))
    loaded = vmconfig.load(cfg)
    valid, problems = state.read(loaded)
    assert [e["id"] for e in valid["running"]] == ["a"]
    assert valid["counts"] == {"done": 3}
    assert any("running[1].pid" in p for p in problems), problems


def test_payload_process_found_through_its_group_members(tmp_path):
    """A payload group's members name the payload's process: its session leader, with pgid and start time."""
    group = tmp_path / "base/payload-x"
    group.mkdir(parents=True)
    child = subprocess.Popen(["/bin/sh", "-c", "sleep 60 & wait"], start_new_session=True)
    try:
        (group / "cgroup.procs").write_text(f"{child.pid}\n")
        members = cgroups.PayloadGroups(str(tmp_path / "base")).members("x")
        assert members == [child.pid]
        found = executor.process_in(str(tmp_path), members)
        assert found is not None and found["pid"] == found["pgid"] == child.pid, found
        assert process.same_process(found["pid"], found["create_time"])
        assert cgroups.PayloadGroups(str(tmp_path / "base")).members("none") is None
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def test_status_names_what_is_wrong_with_the_state_file(tmp_path):
    """`vmagent pool status` on a garbage state file says what is wrong with it instead of "no state yet"."""
    cfg = make_config(tmp_path, "recover-f")
    state_file = paths(tmp_path)[0]
    state_file.parent.mkdir(parents=True)
    state_file.write_text('{"version": 1, "running": [')
    done = subprocess.run(
        [sys.executable, "-m", "vmagent", "-c", cfg, "pool", "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "state.json" in done.stderr and "not readable as JSON" in done.stderr, done.stderr


def test_payload_group_limit_is_recovered(tmp_path):
    """A payload group's memory.max gives back the limit of a payload recovered without its pid file."""
    for name, value in (("limited", "67108864\n"), ("open", "max\n")):
        (tmp_path / "base" / f"payload-{name}").mkdir(parents=True)
        (tmp_path / "base" / f"payload-{name}" / "memory.max").write_text(value)
    groups = cgroups.PayloadGroups(str(tmp_path / "base"))
    assert groups.limit_mb("limited") == 64
    assert groups.limit_mb("open") is None
    assert groups.limit_mb("missing") is None
