"""Writing small files so that a reader, or a crash, never sees half of one."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Replace ``path`` with ``data`` in one step (a temp file beside it, renamed over it).

    With ``durable``, the data and the rename are also fsynced (file, then directory), so after
    a power cut the file is the old one or the new one, never empty or torn.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as out:
        out.write(data)
        if durable:
            out.flush()
            os.fsync(out.fileno())
    os.replace(tmp, path)
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
