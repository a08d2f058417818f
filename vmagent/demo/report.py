"""What the demo tells: payloads as they finish, then a summary taken from the manager's records."""

from __future__ import annotations

import subprocess
import time
from typing import Any, Dict, List


def follow(admin: Any, monitor: subprocess.Popen, ids: set) -> None:
    """Print payloads as they finish until the monitor has halted the 'VM'; Ctrl-C asks for a halt."""
    seen: set = set()
    halting = False
    while True:
        try:
            for payload in admin.payloads(limit=1000):
                if payload["id"] in ids and payload["id"] not in seen and payload.get("outcome"):
                    seen.add(payload["id"])
                    print(
                        f"  {len(seen):3d}/{len(ids)} {payload['id']} {payload['outcome']:<6} "
                        f"{payload['cores']} core(s) on {payload.get('vm_id')}",
                        flush=True,
                    )
            if monitor.poll() is not None:
                return
            time.sleep(1)
        except KeyboardInterrupt:
            if halting:
                raise
            halting = True
            print(
                "\nCtrl-C: asking the VM to halt (payloads get SIGTERM and a grace period); "
                "Ctrl-C again to kill everything",
                flush=True,
            )
            for vm in admin.vms():
                if vm["state"] not in ("halted", "error"):
                    admin.instruct(vm["id"], "halt", reason="Ctrl-C in vmagent demo")


def summarise(admin: Any, ids: List[str], cores: int, started: float) -> Dict[str, Any]:
    """The demo's figures, all taken from the manager's own records."""
    records = [admin.payload(pid) for pid in ids]
    results = [r["results"][-1]["doc"] for r in records if r.get("results")]
    outcomes = {
        o: sum(1 for r in records if r.get("outcome") == o)
        for o in ("done", "failed", "killed", "lost")
    }
    first = min((r["started_at"] for r in results if r.get("started_at")), default=started)
    last = max((r["finished_at"] for r in results if r.get("finished_at")), default=first)
    busy = sum(r["cores"] * r["wall_seconds"] for r in results if r["outcome"] == "done")
    waits = sorted(
        res["started_at"] - rec["submitted_at"]
        for rec, res in ((rec, rec["results"][-1]["doc"]) for rec in records if rec.get("results"))
        if res["cores"] > 1 and res.get("started_at")
    )
    vm: Dict[str, Any] = next((v for v in admin.vms() if v.get("instance_id") == "demo-vm"), {})
    return {
        "payloads": len(ids),
        **outcomes,
        "cores": cores,
        "makespan_seconds": round(last - first, 2),
        "utilisation": round(busy / (cores * (last - first)), 3) if last > first else 0.0,
        "multicore_wait_p50": round(waits[len(waits) // 2], 2) if waits else None,
        "multicore_wait_max": round(waits[-1], 2) if waits else None,
        "vm_id": vm.get("id"),
        "vm_state": vm.get("state"),
        "halt_reason": vm.get("halt_message"),
        "vacuum_code": vm.get("vacuum_code"),
    }


def print_summary(s: Dict[str, Any]) -> None:
    """Print the summary ``summarise`` answered."""
    print("\nsummary (from the manager's records)")
    print(
        f"  payloads      {s['done']} done, {s['failed']} failed, {s['killed']} killed, {s['lost']} lost "
        f"of {s['payloads']}"
    )
    print(
        f"  utilisation   {s['utilisation']:.0%} of {s['cores']} cores over {s['makespan_seconds']:g} s"
    )
    if s["multicore_wait_p50"] is not None:
        print(
            f"  multicore     waited {s['multicore_wait_p50']:g} s (median), {s['multicore_wait_max']:g} s (max)"
        )
    print(
        f"  VM            {s['vm_id']} {s['vm_state']}: {s['halt_reason']} (vacuum code {s['vacuum_code']})"
    )
