"""Machine/Job Features (HSF-TN-2016-02): write, read, inherit and serve them.

A features directory holds one file per key, the file name being the key and its content the value.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from .features import (
    JOB_KEYS,
    LEGACY_KEYS,
    MACHINE_KEYS,
    UNITS,
    Features,
    features_root,
    job_dir,
    machine_dir,
    read_features,
    update_shutdowntime,
    write_features,
)


def serve_tree(root: str, port: int = 0, port_file: Optional[str] = None) -> Tuple[Any, str]:
    """Serve a features tree on loopback HTTP (``server.serve_tree``; http.server loaded only here)."""
    from .server import serve_tree as serve

    return serve(root, port, port_file)


__all__ = [
    "JOB_KEYS",
    "LEGACY_KEYS",
    "MACHINE_KEYS",
    "UNITS",
    "Features",
    "features_root",
    "job_dir",
    "machine_dir",
    "read_features",
    "serve_tree",
    "update_shutdowntime",
    "write_features",
]
