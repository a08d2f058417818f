"""The monitor's footprint: resident memory and CPU share of a real 'vmagent monitor run' process.

The monitor runs with its defaults (60 s heartbeat period, policy checks every 10 s) and the log
endpoint. After a settling time, CPU time is measured over a window; the baseline is an idle Python
interpreter measured the same way in the same run.

Usage: python bench/monitor_footprint.py [--window SECONDS]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import psutil
import yaml


def footprint(argv, window: float, settle: float) -> tuple:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(settle)
        ps = psutil.Process(proc.pid)
        before = ps.cpu_times()
        time.sleep(window)
        after = ps.cpu_times()
        rss = ps.memory_info().rss
        if proc.poll() is not None:
            raise SystemExit(f"{argv} exited early with {proc.returncode}")
        used = (after.user - before.user) + (after.system - before.system)
        return rss, used / window
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=float, default=120.0, help="seconds of measurement (default 120: two periods)")
    parser.add_argument("--settle", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vmagent-footprint-") as root:
        config = os.path.join(root, "vmagent.yaml")
        with open(config, "w") as fh:
            yaml.safe_dump({"instance": {"id": "bench"}, "paths": {"root": root},
                            "monitor": {"halt_action": "exit", "fizzle_seconds": None,
                                        "endpoints": [{"name": "log"}]}}, fh)
        monitor_rss, monitor_cpu = footprint([sys.executable, "-m", "vmagent", "-c", config, "monitor", "run"],
                                             args.window, args.settle)
    idle_rss, idle_cpu = footprint([sys.executable, "-c", "import time; time.sleep(1e6)"], args.window, args.settle)
    print(f"monitor   RSS {monitor_rss / 2**20:6.1f} MiB   CPU {monitor_cpu * 100:.4f} % of a core")
    print(f"idle py   RSS {idle_rss / 2**20:6.1f} MiB   CPU {idle_cpu * 100:.4f} % of a core")
    print(f"ratio     RSS {monitor_rss / idle_rss:.2f} x idle Python; targets: < 30 MB, < 0.1 % of a core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
