"""Dispatch latency: from a payload's exit to the start of the next one, with a real spool.

A 1-core slot manager runs N tiny payloads from a spool directory, one after the other; each payload
records the moment it ends. Latency = next payload's start - previous payload's end. The baseline is
the same slot manager finding finished payloads only by polling every second (how a cycle-driven
agent behaves), measured in the same run.

Usage: python bench/dispatch.py [--payloads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
from typing import List

from vmagent.pool_ce.slots import SlotManager
from vmagent.testing import make_config

END = 'python3 -c "import time; print(repr(time.time()))" > end'


def measure(payloads: int, event_driven: bool) -> List[float]:
    with tempfile.TemporaryDirectory(prefix="vmagent-dispatch-") as root:
        config = make_config(
            root,
            [],
            slots={
                "cores": 1,
                "memory_mb": 1000,
                "poll_seconds": 1.0,
                "exit_when_idle": True,
                "policy": "fifo",
            },
        )
        incoming = os.path.join(config.path("slots.spool_dir"), "incoming")
        os.makedirs(incoming)
        for i in range(payloads):
            with open(os.path.join(incoming, f"p{i:04d}.json"), "w") as fh:
                json.dump({"id": f"p{i:04d}", "command": ["sh", "-c", END]}, fh)
            os.utime(os.path.join(incoming, f"p{i:04d}.json"), (1_000_000 + i, 1_000_000 + i))
        manager = SlotManager(config, event_driven=event_driven)
        assert threading.current_thread() is threading.main_thread()
        manager.run()
        with open(config.path("paths.state_dir") + "/pool/results.jsonl") as fh:
            results = sorted((json.loads(line) for line in fh), key=lambda r: r["started_at"])
        ends = []
        for r in results:
            with open(os.path.join(r["output"], "end")) as fh:
                ends.append(float(fh.read()))
        return [nxt["started_at"] - end for end, nxt in zip(ends, results[1:])]


def summary(latencies: List[float]) -> str:
    ordered = sorted(latencies)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    p50, worst = statistics.median(ordered), ordered[-1]
    return f"p50 {p50 * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms   max {worst * 1000:7.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--payloads", type=int, default=40)
    args = parser.parse_args()
    event = measure(args.payloads, True)
    polled = measure(max(10, args.payloads // 4), False)
    print(f"event-driven (SIGCHLD)  {summary(event)}")
    print(f"1 s polling baseline    {summary(polled)}")
    print(
        f"median ratio event-driven / polling: {statistics.median(event) / statistics.median(polled):.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
