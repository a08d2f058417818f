"""Heartbeat load on the reference manager: N simulated VMs from separate processes.

Each load process owns a few keep-alive HTTP connections (one thread each); every connection
sends heartbeats for its share of the VMs back to back (closed loop) and records each latency.
Reported per backend: heartbeats/s and latency p50/p95/p99, next to a baseline measured in the
same run against the same server: GET /api/v1/health (no database, no credential), the ceiling
of the HTTP stack on this machine.

    python bench/manager_load.py                        # SQLite, PostgreSQL x1, PostgreSQL x2
    python bench/manager_load.py --backends sqlite --vms 500 --duration 20
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import ssl
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

BACKENDS = {"sqlite": ("sqlite", 1), "postgres1": ("postgres", 1), "postgres2": ("postgres", 2)}


def load_process(
    url: str,
    vms: List[Tuple[str, str, str]],
    connections: int,
    duration: float,
    health: bool,
    out: Any,
    ca_file: Optional[str] = None,
) -> None:
    """One load process: ``connections`` threads, each cycling through its VMs for ``duration`` s."""
    parts = urlsplit(url)

    def connect() -> http.client.HTTPConnection:
        if parts.scheme == "https":
            context = ssl.create_default_context(cafile=ca_file)
            return http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=30, context=context
            )
        return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)

    latencies: List[float] = []
    errors = [0]
    lock = threading.Lock()
    start_at = time.monotonic() + 0.5
    stop_at = start_at + duration

    def worker(mine: List[Tuple[str, str, str]]) -> None:
        conn = connect()
        local: List[float] = []
        bad = 0
        seq = 0
        while time.monotonic() < start_at:
            time.sleep(0.01)
        while True:
            for vm_id, token, instance_id in mine:
                now = time.monotonic()
                if now >= stop_at:
                    break
                seq += 1
                if health:
                    method, path, body = "GET", "/api/v1/health", None
                    headers = {}
                else:
                    method, path = "POST", f"/api/v1/vms/{vm_id}/heartbeat"
                    body = json.dumps(
                        {
                            "instance_id": instance_id,
                            "seq": seq,
                            "time": time.time(),
                            "status": "running",
                            "load": [1.0, 0.8, 0.5],
                            "uptime": 3600.0,
                            "cpu_percent": 85.0,
                            "slots": {"total_cores": 8, "free_cores": 2},
                            "payloads": {"running": 3, "done": 10, "failed": 0},
                        }
                    )
                    headers = {
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                    }
                try:
                    conn.request(method, path, body=body, headers=headers)
                    answer = conn.getresponse()
                    answer.read()
                    if answer.status != 200:
                        bad += 1
                except (OSError, http.client.HTTPException):
                    bad += 1
                    conn.close()
                    conn = connect()
                local.append(time.monotonic() - now)
            else:
                continue
            break
        with lock:
            latencies.extend(local)
            errors[0] += bad

    shares = [vms[i::connections] for i in range(connections)]
    threads = [threading.Thread(target=worker, args=(share,)) for share in shares if share]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put((latencies, errors[0]))


def register_vms(manager: Any, count: int) -> List[Tuple[str, str, str]]:
    admin = manager.client()
    vms = []
    for i in range(count):
        instance_id = f"bench-{i}"
        answer = admin.register(
            instance_id=instance_id,
            hostname=f"{instance_id}.bench",
            ip="10.9.0.1",
            total_cores=8,
            total_memory_mb=16000,
            ce="bench-ce",
            image="bench-image",
        )
        vms.append((answer["vm_id"], answer["token"], instance_id))
    return vms


def drive(
    url: str,
    vms: List[Tuple[str, str, str]],
    processes: int,
    connections: int,
    duration: float,
    health: bool,
    ca_file: Optional[str] = None,
) -> Dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(
            target=load_process,
            args=(url, vms[i::processes], connections, duration, health, queue, ca_file),
        )
        for i in range(processes)
    ]
    for proc in procs:
        proc.start()
    latencies: List[float] = []
    errors = 0
    for _ in procs:
        got, bad = queue.get(timeout=duration + 120)
        latencies.extend(got)
        errors += bad
    for proc in procs:
        proc.join()
    latencies.sort()

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000
            if latencies
            else 0.0
        )

    return {
        "requests": len(latencies),
        "errors": errors,
        "per_second": len(latencies) / duration,
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
    }


def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def run_backend(name: str, args: argparse.Namespace, cluster: Any) -> Dict[str, Any]:
    from vmagent.manager.testing import start_manager

    kind, workers = BACKENDS[name]
    db = cluster.create_database() if kind == "postgres" else None
    state_dir = tempfile.mkdtemp(prefix=f"vmagent-bench-{name}-")
    manager = start_manager(
        state_dir, db=db, workers=workers, tls=args.tls, extra=["--heartbeat-period", "60"]
    )
    try:
        vms = register_vms(manager, args.vms)
        load = (manager.url, vms, args.processes, args.connections)
        drive(*load, 2.0, health=False, ca_file=manager.ca_file)  # warm-up
        base = drive(*load, args.duration, health=True, ca_file=manager.ca_file)
        before = loadavg()
        beats = drive(*load, args.duration, health=False, ca_file=manager.ca_file)
        return {
            "backend": name,
            "workers": workers,
            "vms": args.vms,
            "heartbeat": beats,
            "baseline_health": base,
            "ratio_to_baseline": beats["per_second"] / base["per_second"]
            if base["per_second"]
            else None,
            "loadavg_before": before,
            "loadavg_after": loadavg(),
        }
    finally:
        manager.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--backends",
        default="sqlite,postgres1,postgres2",
        help="comma-separated: " + ", ".join(BACKENDS),
    )
    parser.add_argument("--vms", type=int, default=200, help="simulated VMs (default 200)")
    parser.add_argument("--processes", type=int, default=2, help="load processes (default 2)")
    parser.add_argument(
        "--connections", type=int, default=8, help="keep-alive connections per process (default 8)"
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per measurement (default 10)"
    )
    parser.add_argument(
        "--tls", action="store_true", help="HTTPS with the manager's own CA (default: plain HTTP)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        parser.error(f"unknown backend(s) {', '.join(unknown)}; use {', '.join(BACKENDS)}")
    cluster = None
    if any(BACKENDS[n][0] == "postgres" for n in names):
        from vmagent.manager.testing import PostgresCluster

        cluster = PostgresCluster(durable=True)
        cluster.start()
    results = []
    try:
        for name in names:
            results.append(run_backend(name, args, cluster))
            print(_line(results[-1]), file=sys.stderr, flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(
            f"{os.cpu_count()} CPUs; {args.vms} VMs, {args.processes} load processes x {args.connections} "
            f"connections, {args.duration:g} s per measurement, {'HTTPS' if args.tls else 'plain HTTP'} on 127.0.0.1"
        )
        for result in results:
            print(_line(result))
    return 0


def _line(r: Dict[str, Any]) -> str:
    hb, base = r["heartbeat"], r["baseline_health"]
    return (
        f"{r['backend']:10} heartbeats {hb['per_second']:7.0f}/s  p50 {hb['p50_ms']:6.1f} ms  "
        f"p95 {hb['p95_ms']:6.1f} ms  p99 {hb['p99_ms']:6.1f} ms  errors {hb['errors']}  | baseline GET /health "
        f"{base['per_second']:7.0f}/s p99 {base['p99_ms']:5.1f} ms  | ratio {r['ratio_to_baseline']:.2f}  "
        f"| load avg before {r['loadavg_before']} after {r['loadavg_after']}"
    )


if __name__ == "__main__":
    sys.exit(main())
