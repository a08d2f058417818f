"""The monitor's footprint: resident memory and CPU share of a real ``vmagent monitor run`` process.

Three processes run side by side over the same window:

- ``monitor``: ``vmagent monitor run`` with its defaults (60 s heartbeat period, policy checks every
  10 s) and the endpoints a VM uses (http to the reference manager over TLS on 127.0.0.1, or with
  ``--stub`` to a small plain-HTTP stand-in; vac; log), on a VM whose slot manager state lists
  running payloads and pilots, so every sample has work to do;
- ``fast``: the same monitor with a 1 s period and 1 s checks, to measure the cost of one
  heartbeat plus one check and extrapolate it to the 60 s period;
- ``idle``: a bare ``python -c`` sleeping, the baseline.

The window is shortened (default 130 s: two heartbeat periods and thirteen checks) but covers
every periodic activity of the monitor. Figures are printed as ratios to the idle interpreter and
against the targets (under 30 MB resident, under 0.1 % of a core).

Resident memory is reported as RSS (all pages mapped in, shared libraries included), PSS (shared
pages divided among the processes sharing them) and USS (pages only this process holds).

Usage: python bench/monitor_footprint.py [--window SECONDS] [--settle SECONDS] [--stub]
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List

import psutil
import yaml

from vmagent.testing import send_json

TARGET_RSS_MB = 30.0
TARGET_CPU_PERCENT = 0.1


class Manager(http.server.BaseHTTPRequestHandler):
    """Answers registration and heartbeats like the manager, with no instructions; counts heartbeats."""

    beats: Dict[str, int] = {}

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"] or 0)) or b"{}")
        if self.path.endswith("/register"):
            answer: Dict[str, Any] = {
                "vm_id": body["instance_id"],
                "token": "t",
                "heartbeat_period": None,
            }
        else:
            vm = self.path.split("/")[-2]
            Manager.beats[vm] = Manager.beats.get(vm, 0) + 1
            answer = {"instructions": [], "heartbeat_period": None}
        send_json(self, 201 if self.path.endswith("/register") else 200, answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


def vm_root(base: str, name: str, manager: Dict[str, Any], period: float, check: float) -> str:
    """A VM tree with a token, a slot manager state listing 6 payloads and 2 pilots, and a config."""
    root = os.path.join(base, name)
    os.makedirs(os.path.join(root, "etc/vmagent"))
    token = os.path.join(root, "etc/vmagent/token")
    with open(token, "w") as fh:
        fh.write(manager["token"]() + "\n")
    os.chmod(token, 0o600)
    section = {"url": manager["url"], "token_file": "/etc/vmagent/token"}
    if manager.get("ca_file"):
        shutil.copy(manager["ca_file"], os.path.join(root, "etc/vmagent/ca.pem"))
        section["ca_file"] = "/etc/vmagent/ca.pem"
    me = psutil.Process()
    running: List[Dict[str, Any]] = []
    for i in range(8):
        workdir = os.path.join(root, "scratch", f"p{i}")
        os.makedirs(workdir)
        open(os.path.join(workdir, "stdout"), "w").close()
        running.append(
            {
                "id": f"p{i}",
                "pid": me.pid,
                "pgid": me.pid,
                "create_time": me.create_time(),
                "workdir": workdir,
                "started_at": time.time(),
                "cores": 1,
                "payload": {"kind": "pilot" if i < 2 else "payload"},
            }
        )
    state = {
        "version": 1,
        "pid": me.pid,
        "mode": "pool",
        "running": running,
        "total_cores": 8,
        "free_cores": 0,
        "total_memory_mb": 16000,
        "free_memory_mb": 2000,
        "counts": {"done": 40, "failed": 2},
        "last_started_at": time.time(),
        "vacuum_codes": [],
    }
    os.makedirs(os.path.join(root, "var/lib/vmagent/pool"))
    with open(os.path.join(root, "var/lib/vmagent/pool/state.json"), "w") as fh:
        json.dump(state, fh)
    config = os.path.join(root, "vmagent.yaml")
    with open(config, "w") as fh:
        yaml.safe_dump(
            {
                "instance": {"id": name},
                "paths": {"root": root},
                "manager": section,
                "monitor": {
                    "halt_action": "exit",
                    "fizzle_seconds": None,
                    "period_seconds": period,
                    "check_seconds": check,
                    "endpoints": [{"name": "http"}, {"name": "vac"}, {"name": "log"}],
                },
            },
            fh,
        )
    return config


def measure(
    argvs: Dict[str, List[str]], window: float, settle: float
) -> Dict[str, Dict[str, float]]:
    """Start every process, let them settle, then read CPU time and memory over the same window."""
    procs = {
        name: subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for name, argv in argvs.items()
    }
    try:
        time.sleep(settle)
        handles = {name: psutil.Process(p.pid) for name, p in procs.items()}
        before = {name: h.cpu_times() for name, h in handles.items()}
        started = time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - started
        found = {}
        for name, handle in handles.items():
            if procs[name].poll() is not None:
                raise SystemExit(
                    f"{name} exited early: {procs[name].stderr.read().decode()[-2000:]}"
                )
            after, memory = handle.cpu_times(), handle.memory_full_info()
            cpu = (after.user - before[name].user) + (after.system - before[name].system)
            found[name] = {
                "rss_mb": memory.rss / 2**20,
                "pss_mb": memory.pss / 2**20,
                "uss_mb": memory.uss / 2**20,
                "cpu_s": cpu,
                "cpu_percent": 100 * cpu / elapsed,
            }
        return found
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=30)


def start_manager(base: str, stub: bool) -> Dict[str, Any]:
    """The reference manager over TLS (needs vmagent[manager]) or the plain-HTTP stand-in."""
    if not stub:
        try:
            import fastapi  # noqa: F401 - only to know whether the reference manager can run here
        except ImportError:
            print(
                "reference manager not installed (vmagent[manager]): using the plain-HTTP stand-in"
            )
            stub = True
    if stub:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Manager)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return {
            "url": f"http://127.0.0.1:{server.server_address[1]}",
            "token": lambda: "enrol",
            "stop": server.shutdown,
            "kind": "plain-HTTP stand-in",
        }
    from vmagent.manager.testing import start_manager as start

    running = start(os.path.join(base, "manager"), tls=True)
    admin = running.client()
    return {
        "url": running.url,
        "ca_file": running.ca_file,
        "stop": running.stop,
        "kind": "reference manager, TLS",
        "token": lambda: admin.enrol()["enrolment_token"],
    }


def heartbeats(base: str, name: str) -> int:
    try:
        with open(os.path.join(base, name, "var/log/vmagent/heartbeats.jsonl")) as fh:
            return sum(1 for _ in fh)
    except OSError:
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--window", type=float, default=130.0, help="seconds measured (default 130)"
    )
    parser.add_argument(
        "--settle", type=float, default=5.0, help="seconds before measuring (start-up excluded)"
    )
    parser.add_argument(
        "--stub", action="store_true", help="a plain-HTTP stand-in instead of the reference manager"
    )
    args = parser.parse_args()
    me = [sys.executable, "-m", "vmagent", "-q", "-c"]
    with tempfile.TemporaryDirectory(prefix="vmagent-footprint-") as base:
        manager = start_manager(base, args.stub)
        try:
            argvs = {
                "monitor": me + [vm_root(base, "monitor", manager, 60, 10), "monitor", "run"],
                "fast": me + [vm_root(base, "fast", manager, 1, 1), "monitor", "run"],
                "idle": [sys.executable, "-c", "import time; time.sleep(1e6)"],
            }
            found = measure(argvs, args.window, args.settle)
            beats = {name: heartbeats(base, name) for name in ("monitor", "fast")}
        finally:
            manager["stop"]()
    report(found, beats, args, manager["kind"])
    return 0


def report(found: Dict[str, Dict[str, float]], beats: Dict[str, int], args: Any, kind: str) -> None:
    idle, monitor, fast = found["idle"], found["monitor"], found["fast"]
    print(
        f"endpoints http ({kind}), vac, log; window {args.window:g} s after {args.settle:g} s settling; "
        f"heartbeats sent since start: monitor {beats['monitor']}, fast {beats['fast']}"
    )
    for name in ("idle", "monitor", "fast"):
        row = found[name]
        print(
            f"{name:8s} RSS {row['rss_mb']:6.1f} MiB  PSS {row['pss_mb']:6.1f} MiB  USS {row['uss_mb']:6.1f} MiB  "
            f"CPU {row['cpu_s']:7.3f} s = {row['cpu_percent']:.4f} % of a core"
        )
    per_cycle = (
        max(0.0, fast["cpu_s"] - idle["cpu_s"]) / args.window
    )  # one heartbeat + one check per second
    extrapolated = (
        100 * per_cycle * (1 / 60 + 1 / 10)
    )  # upper bound: a full sample per check and per heartbeat
    print(
        f"ratios   RSS {monitor['rss_mb'] / idle['rss_mb']:.2f} x, USS {monitor['uss_mb'] / idle['uss_mb']:.2f} x "
        f"idle Python; CPU {monitor['cpu_s'] / max(idle['cpu_s'], 1e-3):.0f} x idle Python"
    )
    print(
        f"cost of one heartbeat+check cycle {1000 * per_cycle:.2f} ms CPU; at a 60 s period with 10 s checks "
        f"that is at most {extrapolated:.4f} % of a core"
    )
    mb = 1.048576  # MiB -> MB
    for label, value in (
        ("RSS", monitor["rss_mb"]),
        ("PSS", monitor["pss_mb"]),
        ("USS", monitor["uss_mb"]),
    ):
        print(
            f"target   {label} {value * mb:.1f} MB < {TARGET_RSS_MB:g} MB: "
            f"{'met' if value * mb < TARGET_RSS_MB else 'NOT met'}"
        )
    print(
        f"target   CPU {monitor['cpu_percent']:.4f} % < {TARGET_CPU_PERCENT:g} % of a core: "
        f"{'met' if monitor['cpu_percent'] < TARGET_CPU_PERCENT else 'NOT met'}"
    )


if __name__ == "__main__":
    sys.exit(main())
