"""The spool source against hostile entries in incoming/: each is rejected with a reason, the rest runs."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmagent import config as vmconfig
from vmagent.errors import CommandFailed
from vmagent.pool_ce.sources.spool import MAX_BYTES, MAX_DEPTH, SpoolSource

DEADLINE = 60  # seconds: generous for a loaded 2-core machine; only ever a limit, never a measure
CAPACITY = {
    "free_cores": 4,
    "free_memory_mb": 4000,
    "remaining_seconds": 10**6,
    "total_cores": 4,
    "total_memory_mb": 4000,
}


def write_config(tmp_path: Path, **slots) -> str:
    path = tmp_path / "vmagent.yaml"
    settings_ = {
        "cores": 4,
        "memory_mb": 4000,
        "poll_seconds": 0.3,
        "memory_limit": "none",
        **slots,
    }
    path.write_text(
        yaml.safe_dump(
            {
                "instance": {"id": "i-spool"},
                "paths": {"root": str(tmp_path / "root")},
                "slots": settings_,
            }
        )
    )
    return str(path)


def spool(tmp_path: Path) -> Path:
    return tmp_path / "root/var/spool/vmagent"


def good(pid: str = "good") -> dict:
    return {"id": pid, "command": ["/bin/true"]}


def put(path: Path, doc: object, when: float) -> None:
    place(path, json.dumps(doc), when)


def place(path: Path, text: str, when: float) -> None:
    """Write ``path`` as a careful writer does: under a name the spool ignores, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{path.name}"
    tmp.write_text(text)
    os.utime(tmp, (when, when))
    os.replace(tmp, path)


def touch(path: Path, when: float) -> None:
    os.utime(path, (when, when), follow_symlinks=False)


# --- hostile entries: each makes incoming/<name> below the spool ``root``, returns what its reason names ---


def directory(root: Path, name: str, when: float) -> str:
    made = root / f"made-{name}"
    made.mkdir()
    (made / "inner.json").write_text(json.dumps(good("inner")))
    touch(made, when)
    os.rename(made, root / "incoming" / name)
    return "a directory"


def fifo(root: Path, name: str, when: float) -> str:
    os.mkfifo(root / "incoming" / name)
    touch(root / "incoming" / name, when)
    return "a FIFO"


def deep_json(root: Path, name: str, when: float) -> str:
    place(root / "incoming" / name, "[" * 100_000 + "]" * 100_000, when)
    return f"nested deeper than {MAX_DEPTH}"


def oversized(root: Path, name: str, when: float) -> str:
    # valid by the payload schema, and would run today: only its size is wrong
    put(
        root / "incoming" / name,
        {"id": f"huge-{name}", "command": ["/bin/true"] + ["x" * 60000] * 40},
        when,
    )
    return f"more than the {MAX_BYTES} bytes allowed"


def symlink_out(root: Path, name: str, when: float) -> str:
    outside = root.parents[3] / f"outside-{name}"
    put(outside, good(f"outside-{name}"), when)
    os.symlink(outside, root / "incoming" / name)
    touch(root / "incoming" / name, when)
    return "a symbolic link; spool entries must be regular files"


def symlink_in(root: Path, name: str, when: float) -> str:
    put(root / "elsewhere" / name, good(f"inside-{name}"), when)
    os.symlink(f"../elsewhere/{name}", root / "incoming" / name)
    touch(root / "incoming" / name, when)
    return "a symbolic link; spool entries must be regular files"


def dangling(root: Path, name: str, when: float) -> str:
    os.symlink("/nonexistent/payload.json", root / "incoming" / name)
    touch(root / "incoming" / name, when)
    return "a symbolic link; spool entries must be regular files"


def too_much_memory(root: Path, name: str, when: float) -> str:
    put(
        root / "incoming" / name,
        {"id": f"fat-{name}", "memory_mb": 5000, "command": ["/bin/true"]},
        when,
    )
    return "asks for 5000 MB of memory; this VM has 4000 MB"


def too_many_cores(root: Path, name: str, when: float) -> str:
    put(
        root / "incoming" / name, {"id": f"wide-{name}", "cores": 8, "command": ["/bin/true"]}, when
    )
    return "asks for 8 cores; this VM has 4"


def duplicate_in_one_offer(root: Path, name: str, when: float) -> str:
    put(root / "incoming" / f"first-{name}", good(f"twin-{name}"), when - 1)
    put(root / "incoming" / name, good(f"twin-{name}"), when)
    return f"duplicate payload id twin-{name}, first seen in"


def duplicate_of_finished(root: Path, name: str, when: float) -> str:
    put(root / "results" / f"old-{name}.json", {"id": f"old-{name}", "outcome": "done"}, when)
    put(root / "incoming" / name, good(f"old-{name}"), when)
    return f"duplicate payload id old-{name}, first seen in results/old-{name}.json"


CASES = [
    directory,
    fifo,
    deep_json,
    oversized,
    symlink_out,
    symlink_in,
    dangling,
    too_much_memory,
    too_many_cores,
    duplicate_in_one_offer,
    duplicate_of_finished,
]


def reason_of(root: Path, name: str = "bad.json") -> str:
    path = root / "rejected" / f"{name}.reason"
    return path.read_text() if path.exists() else ""


def run_until_idle(cfg: str) -> subprocess.CompletedProcess:
    child = subprocess.Popen(
        [sys.executable, "-m", "vmagent", "-c", cfg, "pool", "run", "--exit-when-idle"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = child.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        out, err = child.communicate()
        pytest.fail(f"the slot manager did not finish within {DEADLINE} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


@pytest.mark.parametrize("make", CASES, ids=[c.__name__ for c in CASES])
def test_bad_entry_rejected_and_the_next_payload_runs(tmp_path, make):
    """A hostile spool entry lands in rejected/ with a reason naming its fault; a payload after it still runs."""
    cfg = write_config(tmp_path, exit_when_idle=True)
    root = spool(tmp_path)
    for sub in ("incoming", "results"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    now = time.time()
    expected = make(root, "bad.json", now - 100)
    put(root / "incoming/zz-good.json", good(), now - 50)
    done = run_until_idle(cfg)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((root / "results/good.json").read_text())["outcome"] == "done"
    assert expected in reason_of(root), (reason_of(root), done.stderr[-3000:])
    assert os.path.lexists(root / "rejected/bad.json")
    assert os.listdir(root / "incoming") == []
    assert done.stderr.count("rejected payload file") == 1, done.stderr[-3000:]


def wait_for(check, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"not seen within {DEADLINE} s: {what}")


def test_running_slot_manager_survives_a_mix_and_stops_on_sigterm(tmp_path):
    """A live slot manager rejects every bad entry once, runs each good payload, and still stops on SIGTERM."""
    cfg = write_config(tmp_path)
    root = spool(tmp_path)
    for sub in ("incoming", "results"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    now = time.time()
    log = open(tmp_path / "stderr", "w")
    child = subprocess.Popen(
        [sys.executable, "-m", "vmagent", "-c", cfg, "pool", "run"],
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,
    )
    reasons = {}
    try:
        # the bad entries arrive while it runs, each followed by a good payload
        for i, make in enumerate(CASES):
            name = f"{i:02d}-{make.__name__}.json"
            reasons[name] = make(root, name, now - 100 + 2 * i)
            put(root / f"incoming/{i:02d}-good.json", good(f"good{i}"), now - 99 + 2 * i)
        for i in range(len(CASES)):
            wait_for(lambda i=i: (root / f"results/good{i}.json").exists(), f"result of good{i}")
        for name in reasons:
            wait_for(lambda name=name: reason_of(root, name), f"rejected/{name}.reason")
        assert child.poll() is None, "the slot manager died"
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=DEADLINE) == 0
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        log.close()
    text = (tmp_path / "stderr").read_text()
    for name, expected in reasons.items():
        assert expected in reason_of(root, name), (name, reason_of(root, name))
        assert text.count(f"incoming/{name}:") == 1, text[-3000:]
    assert os.listdir(root / "incoming") == []


# --- the source on its own ---------------------------------------------------------------------------------


def source(tmp_path: Path) -> SpoolSource:
    return SpoolSource(vmconfig.load(write_config(tmp_path)))


def test_report_never_overwrites_a_result(tmp_path):
    """A second result for an id already reported leaves the first one in results/."""
    spooled = source(tmp_path)
    spooled.report({"id": "once", "outcome": "done"})
    spooled.report({"id": "once", "outcome": "lost"})
    assert json.loads((spool(tmp_path) / "results/once.json").read_text())["outcome"] == "done"


def test_rejected_entries_of_one_name_are_all_kept(tmp_path):
    """Two rejected files of the same name are both kept in rejected/, each with its own reason."""
    spooled = source(tmp_path)
    root = spool(tmp_path)
    for text in ("not json", '{"id": "x"}'):
        place(root / "incoming/same.json", text, time.time())
        assert spooled.offer(CAPACITY) == []
    kept = sorted(os.listdir(root / "rejected"))
    assert len([n for n in kept if not n.endswith(".reason")]) == 2, kept
    reasons = "".join((root / "rejected" / n).read_text() for n in kept if n.endswith(".reason"))
    assert "Expecting value" in reasons and "command" in reasons, reasons


def test_unmovable_entry_logged_once_and_left_alone(tmp_path, caplog):
    """An entry that cannot be moved to rejected/ is logged once and not examined again while unchanged."""
    spooled = source(tmp_path)
    root = spool(tmp_path)
    (root / "rejected").rmdir()
    (root / "rejected").write_text("in the way\n")  # renames into it fail with ENOTDIR
    place(root / "incoming/bad.json", "[1, 2", time.time())
    put(root / "incoming/ok.json", good("ok"), time.time())
    with caplog.at_level(logging.WARNING, logger="vmagent.pool"):
        for _ in range(3):
            assert [o.id for o in spooled.offer(CAPACITY)] == ["ok"]
    assert sum("bad.json" in r.getMessage() for r in caplog.records) == 1, caplog.text


def test_claim_keeps_an_earlier_claimed_file_of_the_same_name(tmp_path):
    """Claiming a file whose name is already in claimed/ keeps both files."""
    root = spool(tmp_path)
    put(root / "claimed/job.json", good("earlier"), time.time() - 10)
    put(root / "results/earlier.json", {"id": "earlier"}, time.time() - 10)
    spooled = source(tmp_path)
    put(root / "incoming/job.json", good("later"), time.time())
    [offered] = spooled.offer(CAPACITY)
    assert spooled.claim(offered)
    ids = sorted(
        json.loads((root / "claimed" / n).read_text())["id"] for n in os.listdir(root / "claimed")
    )
    assert ids == ["earlier", "later"]


def test_duplicate_of_a_claimed_payload_is_rejected(tmp_path):
    """A payload whose id a previous slot manager claimed (and has not finished) is rejected, naming that file."""
    root = spool(tmp_path)
    put(root / "claimed/taken-by-name.json", good("busy"), time.time() - 10)
    spooled = source(tmp_path)
    put(root / "incoming/again.json", good("busy"), time.time())
    assert spooled.offer(CAPACITY) == []
    assert "duplicate payload id busy, first seen in claimed/taken-by-name.json" in reason_of(
        root, "again.json"
    )


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        ["id", "command", "cores", "memory_mb", "env", "whole_node", "x"]
                    ),
                    inner,
                    max_size=4,
                )
            ),
            max_leaves=12,
        ).map(lambda doc: json.dumps(doc).encode()),
    )
)
def test_garbage_is_offered_or_rejected_never_raised(tmp_path, data):
    """Whatever bytes a spool file holds, offer answers: the file is offered as valid or moved to rejected/."""
    root = spool(tmp_path)
    spooled = source(tmp_path)
    for sub in ("incoming", "rejected"):
        for name in os.listdir(root / sub):
            os.unlink(root / sub / name)
    (root / "incoming/fuzz.json").write_bytes(data)
    offered = spooled.offer(CAPACITY)
    if offered:
        assert os.path.exists(root / "incoming/fuzz.json")
    else:
        assert reason_of(root, "fuzz.json")


def test_huge_integers_and_non_finite_numbers_are_rejected(tmp_path):
    """Numbers JSON cannot hold (NaN, Infinity) or too long to convert cheaply are reasons to reject."""
    spooled = source(tmp_path)
    root = spool(tmp_path)
    texts = {
        "nan.json": '{"id": "n", "command": ["x"], "wall_limit_seconds": NaN}',
        "inf.json": '{"id": "i", "command": ["x"], "wall_limit_seconds": Infinity}',
        "long.json": '{"id": "l", "command": ["x"], "cores": ' + "9" * 100_000 + "}",
    }
    for name, text in texts.items():
        place(root / "incoming" / name, text, time.time())
    assert spooled.offer(CAPACITY) == []
    for name in texts:
        assert reason_of(root, name), name


def test_unlistable_incoming_is_a_source_error(tmp_path):
    """An incoming/ that cannot be listed is a source error naming it (logged by the slot manager), not a crash."""
    spooled = source(tmp_path)
    incoming = spool(tmp_path) / "incoming"
    incoming.rmdir()
    incoming.write_text("not a directory\n")
    with pytest.raises(CommandFailed, match="cannot read the spool directory .*incoming"):
        spooled.offer(CAPACITY)
