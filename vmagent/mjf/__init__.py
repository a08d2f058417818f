"""Machine/Job Features (HSF-TN-2016-02): write, read, inherit and serve them.

A features directory holds one file per key, the file name being the key and its content the value.
"""

from __future__ import annotations

from .features import (
    JOB_KEYS,
    LEGACY_KEYS,
    MACHINE_KEYS,
    UNITS,
    Features,
    job_dir,
    machine_dir,
    read_features,
    update_shutdowntime,
    write_features,
)

__all__ = [
    "JOB_KEYS",
    "LEGACY_KEYS",
    "MACHINE_KEYS",
    "UNITS",
    "Features",
    "job_dir",
    "machine_dir",
    "read_features",
    "update_shutdowntime",
    "write_features",
]
