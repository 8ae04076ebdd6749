"""Where an archived record goes: its hour folder, and the deterministic object names.

Design notes: docs/architecture.md, "pinapp/archive/layout.py".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

__all__ = ["ObjectKey", "event_time_ms", "hour_folder"]

# Event times outside [2000-01-01, 2100-01-01) are not trusted (the classic "dt=1970" bug).
_MIN_MS: Final = 946_684_800_000
_MAX_MS: Final = 4_102_444_800_000


def _epoch_to_ms(value: float) -> float | None:
    """Epoch seconds, ms, µs or ns -> ms, by magnitude; ``None`` when no unit fits 2000..2100."""
    for scale in (1000.0, 1.0, 0.001, 0.000001):  # s, ms, µs, ns
        ms = value * scale
        if _MIN_MS <= ms < _MAX_MS:
            return ms
    return None


def event_time_ms(ts: object, fallback_ms: int) -> int:
    """The event time in epoch ms from a raw ``ts`` field, else ``fallback_ms``.

    Accepts epoch seconds, milliseconds, microseconds or nanoseconds (numbers or numeric
    strings) and ISO 8601 strings with a zone (naive ones are taken as UTC). Anything else,
    or a time outside 2000..2100, falls back to ``fallback_ms`` (the Kafka record timestamp).
    """
    ms: float | None = None
    if isinstance(ts, bool) or ts is None:
        ms = None
    elif isinstance(ts, int | float):
        ms = _epoch_to_ms(float(ts))
    elif isinstance(ts, str):
        text = ts.strip()
        try:
            ms = _epoch_to_ms(float(text))
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                parsed = None
            if parsed is not None:
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=UTC)
                ms = parsed.timestamp() * 1000
                if not _MIN_MS <= ms < _MAX_MS:
                    ms = None
    return int(ms) if ms is not None else fallback_ms


def hour_folder(ms: int) -> str:
    """``dt=YYYY-MM-DD/hr=HH`` of an epoch-ms time, in UTC."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return f"dt={moment:%Y-%m-%d}/hr={moment:%H}"


_KEY = re.compile(
    r"^(?:(?P<prefix>.*)/)?(?P<topic>[^/]+)/dt=(?P<dt>\d{4}-\d{2}-\d{2})/hr=(?P<hr>\d{2})/"
    r"(?P=topic)-p(?P<partition>\d{4})-(?P<first>\d{20})-(?P<last>\d{20})\.(?P<fmt>jsonl\.gz|parquet)$"
)


@dataclass(frozen=True, order=True)
class ObjectKey:
    """The name of one archive object, and what it holds."""

    topic: str
    partition: int
    first: int  # first offset of the cut (inclusive)
    last: int  # last offset of the cut (inclusive)
    folder: str  # dt=YYYY-MM-DD/hr=HH
    fmt: str = "jsonl.gz"
    prefix: str = ""

    def __str__(self) -> str:
        head = f"{self.prefix.strip('/')}/" if self.prefix.strip("/") else ""
        return (
            f"{head}{self.topic}/{self.folder}/"
            f"{self.topic}-p{self.partition:04d}-{self.first:020d}-{self.last:020d}.{self.fmt}"
        )

    @classmethod
    def parse(cls, key: str) -> ObjectKey | None:
        """The :class:`ObjectKey` named by ``key``, or ``None`` for other objects (e.g. _SUCCESS)."""
        match = _KEY.match(key)
        if match is None:
            return None
        return cls(
            topic=match["topic"],
            partition=int(match["partition"]),
            first=int(match["first"]),
            last=int(match["last"]),
            folder=f"dt={match['dt']}/hr={match['hr']}",
            fmt=match["fmt"],
            prefix=match["prefix"] or "",
        )
