"""Singer's status: per stream, files, bytes not yet shipped and counters; the last heartbeat's file."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from config import Settings
from pinapp.singer.reader import StreamReader

__all__ = ["StreamStats", "heartbeat_doc", "last_heartbeat", "status_path", "stream_status"]


def status_path(settings: Settings) -> Path:
    return settings.singer.data_dir / "status.json"


@dataclass
class StreamStats:
    lines_shipped: int = 0
    bytes_shipped: int = 0
    dead_lettered: int = 0
    errors: int = 0
    last_shipped_at: float | None = None


def stream_status(reader: StreamReader, stats: StreamStats) -> dict[str, Any]:
    """One stream's status now: its files and bytes behind (read from disk), and ``stats``."""
    files = reader.files()
    return {
        "name": reader.spec.name,
        "files": len(files),
        "bytes_behind": reader.bytes_behind(files),
        "lines_shipped": stats.lines_shipped,
        "bytes_shipped": stats.bytes_shipped,
        "dead_lettered": stats.dead_lettered,
        "errors": stats.errors,
        "resets": reader.resets,
        "last_shipped_at": stats.last_shipped_at,
    }


def heartbeat_doc(host: str, topic: str, streams: list[dict[str, Any]]) -> dict[str, Any]:
    return {"host": host, "pid": os.getpid(), "at": time.time(), "topic": topic, "streams": streams}


def last_heartbeat(settings: Settings) -> dict[str, Any] | None:
    """The status the last Singer to run here wrote (``status.json``), if any."""
    path = status_path(settings)
    if not path.exists():
        return None
    doc: dict[str, Any] = orjson.loads(path.read_bytes())
    return doc
