"""How the operators' listings look: the columns of each table and the plain-text layout."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Sequence, Tuple

Columns = Sequence[Tuple[str, str]]  # (key in the API's rows, title)

VMS: Columns = (
    ("id", "VM"),
    ("state", "STATE"),
    ("image", "IMAGE"),
    ("running_pod", "POD"),
    ("ce", "CE"),
    ("ip", "IP"),
    ("load1", "LOAD"),
    ("uptime", "UPTIME"),
    ("payloads_running", "RUN"),
    ("payloads_done", "DONE"),
)
PAYLOADS: Columns = (
    ("id", "PAYLOAD"),
    ("state", "STATE"),
    ("cores", "CORES"),
    ("vo", "VO"),
    ("running_pod", "POD"),
    ("vm_id", "VM"),
    ("attempts", "TRIES"),
    ("outcome", "OUTCOME"),
)
ACCOUNTING: Columns = (
    ("vms", "VMS"),
    ("vm_core_hours", "VM-CORE-H"),
    ("payloads", "PAYLOADS"),
    ("done", "DONE"),
    ("failed", "FAILED"),
    ("core_hours", "CORE-H"),
    ("cpu_hours", "CPU-H"),
)


def accounting(group_by: str) -> Columns:
    """The accounting table's columns, the grouping key first."""
    return ((group_by, group_by.upper()), *ACCOUNTING)


def dump(doc: Any) -> int:
    """Print ``doc`` as indented JSON; 0, the exit code of a command that ends with it."""
    print(json.dumps(doc, indent=2, sort_keys=True))
    return 0


def cell(row: Dict[str, Any], key: str) -> str:
    """One value as the tables show it: ``-`` when absent, uptimes in hours and minutes."""
    value = row.get(key)
    if value is None:
        return "-"
    if key == "uptime":
        return f"{int(value) // 3600}h{int(value) % 3600 // 60:02d}m"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def show(rows: List[Dict[str, Any]], columns: Columns) -> None:
    """Print ``rows`` as left-aligned columns under their titles, or ``(none)``."""
    cells = [[cell(r, key) for key, _ in columns] for r in rows]
    widths = [
        max([len(title)] + [len(c[i]) for c in cells]) for i, (_, title) in enumerate(columns)
    ]
    for line in [[t for _, t in columns]] + cells:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip())
    if not rows:
        print("(none)")
