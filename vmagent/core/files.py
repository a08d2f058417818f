"""Writing files so that readers never see half of one."""

from __future__ import annotations

import os
import tempfile
from typing import Union


def write_atomic(
    target: str, content: Union[str, bytes], mode: int = 0o644, *, durable: bool = False
) -> None:
    """Write ``content`` to ``target`` through a temporary file beside it and a rename.

    The temporary file is created 0600 and gets ``mode`` before the rename, so a secret is never
    readable by others, not even for a moment. ``durable`` also flushes the data to disk before
    the rename (for files that must survive a power cut, such as rendered user data).
    """
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(target)}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content.encode("utf-8") if isinstance(content, str) else content)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
