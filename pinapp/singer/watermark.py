"""A stream's progress: per file (device + inode, plus a fingerprint), the byte offset shipped.

Design notes: docs/architecture.md, "pinapp/singer/watermark.py".
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from pinapp.adapters.files import write_atomically

__all__ = ["FP_BYTES", "FileKey", "FileMark", "Watermark", "fingerprint"]

#: How much of a file's head its fingerprint covers (less while the file is shorter).
FP_BYTES = 256

FileKey = tuple[int, int]  # (st_dev, st_ino)


def fingerprint(head: bytes) -> str:
    return hashlib.blake2b(head, digest_size=12).hexdigest()


@dataclass
class FileMark:
    offset: int  # bytes shipped (always at a line boundary)
    fp: str  # fingerprint of the first fp_len bytes
    fp_len: int
    path: str  # where it was last seen (for humans)


@dataclass
class Watermark:
    """The progress of one stream, by file."""

    path: Path
    files: dict[FileKey, FileMark] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Watermark:
        if not path.exists():
            return cls(path)
        doc = orjson.loads(path.read_bytes())
        files = {}
        for key, mark in doc.get("files", {}).items():
            dev, _, ino = key.partition(":")
            files[(int(dev), int(ino))] = FileMark(mark["offset"], mark["fp"], mark["fp_len"], mark["path"])
        return cls(path, files)

    def encode(self) -> bytes:
        doc = {"version": 1, "files": {f"{dev}:{ino}": vars(mark) for (dev, ino), mark in self.files.items()}}
        return orjson.dumps(doc)

    def save(self) -> None:
        write_atomically(self.path, self.encode(), durable=True)

    async def save_in_thread(self) -> None:
        """:meth:`save`, its fsyncs in a thread: the caller's event loop goes on meanwhile.

        Encoded here, in the caller's thread, so the marks are not read while they change.
        Saves must not overlap (they share the temp file): await one before the next.
        """
        await asyncio.to_thread(write_atomically, self.path, self.encode(), durable=True)
