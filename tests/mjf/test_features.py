"""Machine/Job Features: writing, reading back, rejecting bad values, inheriting over HTTP."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmagent import mjf
from vmagent.errors import InputRejected
from vmagent.mjf.command import SetupMjf
from vmagent.mjf.features import UNITS, format_value
from vmagent.mjf.server import serve_in_thread
from vmagent.pilot.command import Actions, Context
from vmagent.testing import make_config

FLOATS = {"hs06", "hs06_job"}
numbers = st.integers(min_value=0, max_value=2**48)
values = st.fixed_dictionaries(
    {},
    optional={
        **{k: numbers for k in mjf.MACHINE_KEYS + mjf.JOB_KEYS if k not in FLOATS | {"job_id"}},
        **{k: st.floats(min_value=0, max_value=1e7, allow_nan=False) for k in FLOATS},
        "job_id": st.from_regex(r"[!-~]{1,64}", fullmatch=True),
    },
)


@settings(max_examples=60, deadline=None)
@given(values)
def test_round_trip(tmp_path_factory, written):
    """Whatever valid values are written, reading them back gives the same values."""
    directory = str(tmp_path_factory.mktemp("features"))
    mjf.write_features(directory, written)
    found = mjf.read_features(directory)
    assert found.problems == []
    for key, value in written.items():
        assert (
            found.values[key] == pytest.approx(value)
            if key in FLOATS
            else found.values[key] == value
        )


def test_names_and_units_follow_the_spec():
    """The 15 keys are the spec's names, each with a unit."""
    assert mjf.MACHINE_KEYS == ("total_cpu", "hs06", "shutdowntime", "grace_secs")
    assert (
        len(mjf.JOB_KEYS) == 11
        and "wall_limit_secs" in mjf.JOB_KEYS
        and "max_rss_bytes" in mjf.JOB_KEYS
    )
    assert all(UNITS[k] for k in mjf.MACHINE_KEYS + mjf.JOB_KEYS)


@pytest.mark.parametrize(
    "key,value", [("total_cpu", -1), ("hs06", "fast"), ("job_id", "has space"), ("BAD", 1)]
)
def test_bad_values_are_refused_before_writing(tmp_path, key, value):
    """Negative, non-numeric or badly named values are refused with a message naming the key."""
    with pytest.raises(InputRejected) as refused:
        mjf.write_features(str(tmp_path), {key: value})
    assert key in refused.value.message
    assert list(tmp_path.iterdir()) == []


def test_malformed_upstream_values_are_reported_not_propagated(tmp_path):
    """A reader reports negative, non-numeric and past shutdown values as problems and keeps none of them."""
    (tmp_path / "total_cpu").write_text("-4")
    (tmp_path / "hs06").write_text("lots")
    (tmp_path / "shutdowntime").write_text("1000")
    (tmp_path / "grace_secs").write_text("300")
    found = mjf.read_features(str(tmp_path), now=2000)
    assert found.values == {"grace_secs": 300}
    assert {k for k, _ in found.problems} == {"total_cpu", "hs06", "shutdowntime"}
    assert any("in the past" in message for _, message in found.problems)


def _setup(config, clock):
    ctx = Context(
        config=config,
        instance_id="i-test",
        options={},
        facts={},
        env={},
        clock=clock,
        deadline=float("inf"),
        actions=Actions(False),
        step="setup-mjf",
    )
    return SetupMjf().run(ctx)


def test_inherits_upstream_shutdowntime_over_http(tmp_path, clock):
    """setup-mjf takes the site's shutdowntime from a real HTTP server, and follows it when it changes."""
    import time

    upstream = tmp_path / "upstream" / "machine"
    soon = int(time.time()) + 7200
    mjf.write_features(str(upstream), {"shutdowntime": soon, "grace_secs": 300, "total_cpu": 8})
    server, url = serve_in_thread(str(tmp_path / "upstream"))
    try:
        config = make_config(
            tmp_path / "vm", [], mjf={"upstream_machinefeatures": f"{url}/machine"}
        )
        result = _setup(config, clock)
        local = mjf.read_features(result.env["MACHINEFEATURES"]).values
        assert local["shutdowntime"] == soon
        mjf.write_features(str(upstream), {"shutdowntime": soon - 3600})
        _setup(config, clock)
        assert (
            mjf.read_features(result.env["MACHINEFEATURES"]).values["shutdowntime"] == soon - 3600
        )
    finally:
        server.shutdown()
        server.server_close()


def test_update_shutdowntime_respects_grace(tmp_path, clock):
    """A new shutdown time is never announced closer than grace_secs, for the machine and each job."""
    config = make_config(tmp_path, [])
    mjf.write_features(mjf.machine_dir(config), {"grace_secs": 600})
    mjf.write_features(mjf.job_dir(config, "p1"), {"grace_secs_job": 900})
    written = mjf.update_shutdowntime(config, clock.time() + 10, clock=clock)
    assert written == int(clock.time() + 600)
    assert mjf.read_features(mjf.job_dir(config, "p1")).values["shutdowntime_job"] == int(
        clock.time() + 900
    )


def test_show_lists_all_fifteen_keys(tmp_path):
    """'vmagent mjf show' on a written tree lists every spec key with its value."""
    machine, job = tmp_path / "machine", tmp_path / "job"
    mjf.write_features(
        str(machine),
        {"total_cpu": 8, "hs06": 80.5, "shutdowntime": 4_000_000_000, "grace_secs": 600},
    )
    mjf.write_features(
        str(job),
        {
            "allocated_cpu": 2,
            "hs06_job": 20.1,
            "shutdowntime_job": 4_000_000_000,
            "grace_secs_job": 60,
            "jobstart_secs": 1_700_000_000,
            "job_id": "vm-1:p1",
            "wall_limit_secs": 3600,
            "cpu_limit_secs": 7200,
            "max_rss_bytes": 2**31,
            "max_swap_bytes": 0,
            "scratch_limit_bytes": 2**34,
        },
    )
    done = subprocess.run(
        [sys.executable, "-m", "vmagent", "mjf", "show", str(machine), "--job", str(job)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for key in mjf.MACHINE_KEYS + mjf.JOB_KEYS:
        assert any(
            line.split()[:1] == [key] and len(line.split()) >= 2
            for line in done.stdout.splitlines()
        ), key
    assert "not provided" not in done.stdout
    assert format_value("hs06", 80.5) == "80.5"


@pytest.mark.slow
def test_db12_is_measured_when_asked(tmp_path, clock):
    """With measure_db12 and the db12 package installed, setup-mjf writes a measured db12 score."""
    pytest.importorskip("db12", reason="the db12 package is not installed")
    config = make_config(tmp_path, [], mjf={"measure_db12": True})
    result = _setup(config, clock)
    score = mjf.read_features(result.env["MACHINEFEATURES"]).values["db12"]
    assert score > 0
