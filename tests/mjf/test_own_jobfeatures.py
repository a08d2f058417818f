"""The VM's own job features (mjf.upstream_jobfeatures): what a vacuum platform says bounds its life."""

from __future__ import annotations

import logging

import psutil
import pytest

from vmagent import mjf
from vmagent.config_check import problems
from vmagent.mjf.command import SetupMjf, job_end
from vmagent.mjf.server import serve_in_thread
from vmagent.testing import make_config, run_command


def _machine(config, clock):
    """Run setup-mjf and read back the machine features it wrote, with its facts."""
    result, _ = run_command(SetupMjf(), config, clock=clock)
    return mjf.read_features(result.env["MACHINEFEATURES"]).values, result.facts


def test_wall_limit_from_the_vms_job_features_over_http_ends_the_machine(tmp_path, clock):
    """jobstart_secs + wall_limit_secs, read from a real HTTP server, becomes the machine's
    shutdowntime when it is earlier than the site's."""
    now = int(clock.time())
    mjf.write_features(str(tmp_path / "site" / "machine"), {"shutdowntime": now + 7200})
    job = {"jobstart_secs": now - 600, "wall_limit_secs": 3600, "cpu_limit_secs": 7200}
    mjf.write_features(str(tmp_path / "site" / "job"), job)
    server, url = serve_in_thread(str(tmp_path / "site"))
    try:
        config = make_config(
            tmp_path / "vm",
            [],
            mjf={
                "upstream_machinefeatures": f"{url}/machine",
                "upstream_jobfeatures": f"{url}/job",
            },
        )
        found, facts = _machine(config, clock)
    finally:
        server.shutdown()
        server.server_close()
    assert found["shutdowntime"] == now + 3000
    assert facts["mjf_job_end"] == now + 3000


def test_earliest_bound_wins_from_a_directory(tmp_path, clock):
    """shutdowntime_job earlier than the wall limit wins; an earlier site shutdowntime is kept."""
    now = int(clock.time())
    own = tmp_path / "own"
    mjf.write_features(
        str(own),
        {"jobstart_secs": now, "wall_limit_secs": 86400, "shutdowntime_job": now + 5000},
    )
    config = make_config(tmp_path / "vm", [], mjf={"upstream_jobfeatures": str(own)})
    assert _machine(config, clock)[0]["shutdowntime"] == now + 5000
    site = tmp_path / "site"
    mjf.write_features(str(site), {"shutdowntime": now + 4000})
    config = make_config(
        tmp_path / "vm2",
        [],
        mjf={"upstream_jobfeatures": str(own), "upstream_machinefeatures": str(site)},
    )
    assert _machine(config, clock)[0]["shutdowntime"] == now + 4000


def test_missing_jobstart_counts_from_boot_and_past_values_are_ignored(tmp_path, clock, caplog):
    """Without jobstart_secs the wall limit counts from boot; a past shutdowntime_job is warned
    about and not used."""
    now = int(clock.time())
    own = tmp_path / "own"
    own.mkdir()
    (own / "wall_limit_secs").write_text("2000000000")
    (own / "shutdowntime_job").write_text(str(now - 10))
    config = make_config(tmp_path / "vm", [], mjf={"upstream_jobfeatures": str(own)})
    with caplog.at_level(logging.WARNING):
        found, _ = _machine(config, clock)
    assert found["shutdowntime"] == int(psutil.boot_time()) + 2_000_000_000
    assert "shutdowntime_job" in caplog.text and "in the past" in caplog.text
    assert "no jobstart_secs" in caplog.text


def test_smaller_allocated_cpu_is_reported_and_the_core_count_kept(tmp_path, clock, caplog):
    """allocated_cpu below the VM's core count is logged as a warning; total_cpu stays the one count."""
    own = tmp_path / "own"
    mjf.write_features(str(own), {"allocated_cpu": 4})
    config = make_config(
        tmp_path / "vm", [], slots={"cores": 8}, mjf={"upstream_jobfeatures": str(own)}
    )
    with caplog.at_level(logging.WARNING):
        found, facts = _machine(config, clock)
    assert found["total_cpu"] == 8 and found["jobslots"] == 8
    assert "shutdowntime" not in found
    assert facts["mjf_allocated_cpu"] == 4
    assert "allocate it 4 cores but it counts 8" in caplog.text
    caplog.clear()
    mjf.write_features(str(own), {"allocated_cpu": 8})
    with caplog.at_level(logging.WARNING):
        _machine(config, clock)
    assert "allocate" not in caplog.text


@pytest.mark.parametrize(
    "own,started,end",
    [
        ({}, None, None),
        ({"wall_limit_secs": 100}, 1000, 1100),
        ({"wall_limit_secs": 100, "shutdowntime_job": 1050}, 1000, 1050),
        ({"shutdowntime_job": 5000}, None, 5000),
    ],
)
def test_job_end_is_the_earliest_bound(own, started, end):
    """job_end is the earlier of start + wall limit and shutdowntime_job, None without either."""
    assert job_end(own, started) == end


def test_blanked_jobfeatures_url_is_refused_and_null_is_fine():
    """An empty mjf.upstream_jobfeatures (a blanked ##user_data_jobfeatures_url##) is refused, naming the key."""
    found = problems({"instance": {"id": "i-test"}, "mjf": {"upstream_jobfeatures": ""}})
    assert any(
        key == "mjf.upstream_jobfeatures" and "blanked" in message for key, message in found
    ), found
    found = problems({"instance": {"id": "i-test"}, "mjf": {"upstream_jobfeatures": None}})
    assert not [key for key, _ in found if key.startswith("mjf.")], found
