"""The masonry benchmark runs and its figures hold together (a short run: two VMs per workload)."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "masonry.py"


def test_masonry_benchmark_figures():
    """Every workload runs under every policy with sane figures; the clairvoyant one kills nothing."""
    done = subprocess.run(
        [sys.executable, str(BENCH), "--vms", "2", "--bounds", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    results = json.loads(done.stdout)
    assert set(results) == {
        "mostly-single",
        "1c+8c-on-32",
        "whole-node-on-16",
        "poor-estimates-48h",
        "noisy-estimates-48h",
    }
    for name, by_policy in results.items():
        # true runtimes: nothing started too late
        assert by_policy["clairvoyant"]["killed"] == 0, name
        for policy, figures in by_policy.items():
            assert 0.5 < figures["good_utilisation"] <= 1.0, (name, policy)
            assert 0.0 <= figures["multicore_share"] <= 1.0, (name, policy)
        bounded = "estimates" in name
        assert ("both" in by_policy) == bounded, name
        if bounded:
            # told which payloads will not finish, it stops them instead of running them to the halt
            assert (
                by_policy["told-kills"]["killed"] == 0 and by_policy["told-kills"]["stopped"] > 0
            ), name
            assert by_policy["backfill"]["stopped"] == 0 and by_policy["backfill"]["killed"] > 0, (
                name
            )


def test_masonry_benchmark_across_seeds():
    """--seeds runs the acceptance checks per seed; a range that is not one is refused with exit code 2."""
    done = subprocess.run(
        [sys.executable, str(BENCH), "--seeds", "3-4", "--vms", "1", "--jobs", "1", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    per = json.loads(done.stdout)
    assert set(per["poor-estimates-48h"]) == {"3", "4"}
    for name, by_seed in per.items():
        for seed, found in by_seed.items():
            assert len(found["checks"]) == 3 and found["killed_greedy"] > 0, (name, seed)
            assert (
                -100.0 < found["vs_ref_points"] <= 100.0 and 0.0 < found["multicore_share_ratio"]
            ), (name, seed)
            assert found["checks"][0] == (found["vs_ref_points"] >= -2.0), (name, seed)
    bad = subprocess.run(
        [sys.executable, str(BENCH), "--seeds", "twelve"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "'twelve' is not a seed or a range" in bad.stderr
