"""Machine/Job Features read the way DIRAC reads them, through what a payload really gets.

DIRAC (GPL; its code is read, never copied) reads features two ways: its pilot and its job-parameter
and CPU-normalisation helpers call ``urlopen(os.path.join($JOBFEATURES, key)).read()`` and then
``int()`` (``float()`` for ``hs06_job``/``hs06``); DIRAC 8's MJF helper opens ``location + "/" + key``
as a file when it starts with ``/``, with ``urlopen`` when it starts with http(s), gives up
otherwise, and parses with ``int()``. The readers below do the same with code of our own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional
from urllib.request import build_opener

import psutil
import pytest
import yaml

from vmagent import mjf
from vmagent.config import from_dict
from vmagent.mjf.command import SetupMjf, inherit
from vmagent.mjf.features import format_value
from vmagent.pool_ce import cgroups, jobfeatures
from vmagent.testing import make_config, run_command

PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY")
FRACTIONAL = {"hs06_job", "db12"}  # where a fraction is allowed: DIRAC reads these with float()
TEXT = {"job_id"}
# the payload writes its environment, then waits (at most 60 s) for the test to let it go
PAYLOAD = (
    "import json, os, sys, time; json.dump(dict(os.environ), open('env.tmp', 'w'));"
    "os.rename('env.tmp', 'env.json'); end = time.time() + 60\n"
    "while not os.path.exists(sys.argv[1]) and time.time() < end: time.sleep(0.05)"
)


def urlopen(url: str) -> Any:
    """``urllib.request.urlopen`` as a fresh DIRAC process makes it: proxies from the environment now."""
    return build_opener().open(url, timeout=10)


def pilot_reader(location: str, key: str) -> bytes:
    """DIRAC's pilot and job-parameter way: urlopen on os.path.join(location, key); raises if unreadable."""
    with urlopen(os.path.join(location, key)) as answer:
        return answer.read()


def mjf_helper_reader(location: str, key: str) -> Optional[bytes]:
    """DIRAC 8's MJF helper way: a plain path is opened, http(s) is fetched, anything else is None."""
    url = location + "/" + key
    if url.startswith("/"):
        try:
            with open(url, "rb") as fh:
                return fh.read().strip()
        except OSError:
            return None
    if not url.startswith(("http://", "https://")):
        return None
    try:
        with urlopen(url) as answer:
            return answer.read().strip() if answer.getcode() // 100 == 2 else None
    except OSError:
        return None


def dirac_parse(key: str, raw: bytes) -> object:
    """How DIRAC turns a key's bytes into a value: int() for counts, times, limits; float() for HS06."""
    if key in TEXT:
        return raw.decode().strip()
    return float(raw) if key in FRACTIONAL else int(raw)


def wait_for(path: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_dirac_reads_every_key_a_payload_gets(tmp_path, monkeypatch):
    """A payload of the real slot manager (on a site with an HTTP proxy) gets locations where both DIRAC
    readers, with the payload's proxy settings, read every key vmagent wrote, each parsing as DIRAC
    parses it, with the values written on disk."""
    cfg = tmp_path / "vmagent.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "instance": {"id": "i-dirac"},
                "paths": {"root": str(tmp_path / "root")},
                "slots": {
                    "cores": 4,
                    "memory_mb": 4000,
                    "poll_seconds": 0.2,
                    "exit_when_idle": True,
                },
                "mjf": {"hs06": 160, "db12": 12.5, "lifetime_seconds": 86400},
            }
        )
    )
    vmagent = [sys.executable, "-m", "vmagent", "-c", str(cfg)]
    subprocess.run(vmagent + ["mjf", "write"], check=True, capture_output=True, timeout=60)
    release = tmp_path / "release"
    spec = tmp_path / "payloads.json"
    payload = {
        "id": "job.1:a",
        "cores": 3,
        "memory_mb": 1000,
        "wall_limit_seconds": 3600,
        "command": [sys.executable, "-c", PAYLOAD, str(release)],
    }
    spec.write_text(json.dumps([payload]))
    subprocess.run(
        vmagent + ["pool", "submit", str(spec)], check=True, capture_output=True, timeout=60
    )
    site_proxy = dict(os.environ, http_proxy="http://127.0.0.1:9", no_proxy="cvmfs.example.org")
    pool = subprocess.Popen(
        vmagent + ["pool", "run"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=site_proxy
    )
    try:
        env_file = tmp_path / "root/scratch/payloads/job.1:a/env.json"
        wait_for(env_file)
        env = json.loads(env_file.read_text())
        for (
            name
        ) in PROXY_VARIABLES:  # urlopen takes its proxies from the environment, as the payload's
            monkeypatch.delenv(name, raising=False)
            if name in env:
                monkeypatch.setenv(name, env[name])
        config = from_dict(yaml.safe_load(cfg.read_text()), source=str(cfg))
        on_disk = {
            "MACHINEFEATURES": Path(mjf.machine_dir(config)),
            "JOBFEATURES": Path(mjf.job_dir(config, "job.1:a")),
        }
        seen = {}
        for variable, directory in on_disk.items():
            location = env[variable]
            for key in sorted(os.listdir(directory)):
                written = (directory / key).read_bytes()
                via_pilot = pilot_reader(location, key)
                via_helper = mjf_helper_reader(location, key)
                assert via_pilot == written and via_helper == written.strip(), (variable, key)
                seen[key] = dirac_parse(key, via_pilot)
        assert set(seen) >= set(mjf.MACHINE_KEYS)
        assert set(seen) >= {
            "allocated_cpu",
            "hs06_job",
            "shutdowntime_job",
            "grace_secs_job",
            "jobstart_secs",
            "job_id",
            "wall_limit_secs",
            "cpu_limit_secs",
            "max_rss_bytes",
        }
        assert seen["total_cpu"] == 4 and seen["hs06"] == 160 and seen["allocated_cpu"] == 3
        assert seen["log_cores"] == seen["phys_cores"] == seen["jobslots"] == 4
        assert seen["hs06_job"] == 120 and seen["db12"] == 12.5
        assert seen["cpu_limit_secs"] == 3 * 3600 and seen["max_rss_bytes"] == 1000 * 2**20
        assert seen["shutdowntime_job"] == seen["shutdowntime"]
        if psutil.swap_memory().total == 0:  # no swap on this VM: payloads get none
            assert seen["max_swap_bytes"] == 0
    finally:
        release.touch()
        _, err = pool.communicate(timeout=60)
    assert pool.returncode == 0, err


def test_whole_scores_are_written_as_integers(tmp_path):
    """A whole HS06 is written as '160' (DIRAC's int() rejects '160.0'); a fraction only for scores."""
    assert format_value("hs06", 160.0) == "160" and int(format_value("hs06", 160.0)) == 160
    assert format_value("hs06_job", 53.25) == "53.25" and format_value("db12", 12.0) == "12"
    mjf.write_features(str(tmp_path), {"hs06": 160.0, "hs06_job": 60.0})
    assert int((tmp_path / "hs06").read_text()) == 160
    assert int((tmp_path / "hs06_job").read_text()) == 60


def test_setup_mjf_inherits_every_machine_key(tmp_path, clock):
    """The site's hs06 (scaled to this VM's cores), shutdowntime, the smaller grace and db12 are
    inherited; total_cpu and the legacy keys are the VM's own count, never the site's or the host's."""
    upstream = tmp_path / "site"
    soon = int(clock.time()) + 7200
    mjf.write_features(
        str(upstream),
        {
            "total_cpu": 4,
            "hs06": 80,
            "shutdowntime": soon,
            "grace_secs": 300,
            "db12": 11.5,
            "phys_cores": 64,
            "log_cores": 128,
            "jobslots": 4,
        },
    )
    config = make_config(
        tmp_path / "vm", [], slots={"cores": 8}, mjf={"upstream_machinefeatures": str(upstream)}
    )
    result, _ = run_command(SetupMjf(), config, clock=clock)
    found = mjf.read_features(result.env["MACHINEFEATURES"]).values
    assert found == {
        "total_cpu": 8,
        "hs06": 160,
        "shutdowntime": soon,
        "grace_secs": 300,
        "db12": 11.5,
        "phys_cores": 8,
        "log_cores": 8,
        "jobslots": 8,
    }


def test_inherit_keeps_hs06_when_the_vm_is_the_machine():
    """hs06 is kept as given when the site's total_cpu is the VM's count or not given at all."""
    assert inherit({"total_cpu": 8, "hs06": 97.5}, 8, 600)["hs06"] == 97.5
    assert inherit({"hs06": 97.5}, 2, 600)["hs06"] == 97.5
    assert inherit({"total_cpu": 8, "hs06": 100}, 2, 600)["hs06"] == 25
    assert inherit({"grace_secs": 1800}, 2, 600)["grace_secs"] == 600


def test_job_keys_cpu_limit_and_swap(tmp_path):
    """cpu_limit_secs is the wall limit times the cores; max_swap_bytes is 0 when the payloads'
    cgroups forbid swap."""
    config = make_config(tmp_path, [])
    base = tmp_path / "cgroup"
    base.mkdir()
    (base / "memory.swap.max").write_text("max\n")  # where cgroups.create writes 0 per payload
    payload = {"id": "p1", "wall_limit_seconds": 1800, "memory_mb": 512}
    start = 1_800_000_000
    directory = jobfeatures.write(
        config, payload, 2, 4, 60, start, cgroups.PayloadGroups(str(base))
    )
    found = mjf.read_features(directory).values
    assert found["cpu_limit_secs"] == 3600 and found["wall_limit_secs"] == 1800
    assert found["max_swap_bytes"] == 0 and found["jobstart_secs"] == start


def test_server_serves_payload_ids_and_refuses_escapes(tmp_path):
    """The loopback server answers keys below payload ids with dots and colons, and 404 outside the tree."""
    mjf.write_features(str(tmp_path / "tree/jobs/a.b:1"), {"allocated_cpu": 2})
    (tmp_path / "secret").write_text("no")
    server, url = mjf.serve_tree(str(tmp_path / "tree"), port_file=str(tmp_path / "port"))
    try:
        assert pilot_reader(f"{url}/jobs/a.b:1", "allocated_cpu") == b"2"
        for bad in ("/../secret", "/jobs/..%2F..%2Fsecret", "/jobs", "/"):
            with pytest.raises(OSError):
                urlopen(url + bad)
        assert int((tmp_path / "port").read_text()) == server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
    again, url_again = mjf.serve_tree(str(tmp_path / "tree"), port_file=str(tmp_path / "port"))
    try:
        assert url_again == url  # a restarted slot manager keeps its payloads' URLs
    finally:
        again.shutdown()
        again.server_close()
