"""Backfill: archived records produced back into Kafka.

Design notes: docs/architecture.md, "pinapp/archive/replay.py".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from pinapp.archive.layout import ObjectKey
from pinapp.archive.records import decode
from pinapp.domain.dead_letters import REPLAY_HEADER, REPLAY_TIMESTAMP_HEADER

__all__ = ["ReplayReport", "replay", "retention_conflict"]


@dataclass
class ReplayReport:
    objects: int = 0
    records: int = 0


def retention_conflict(first: date, raw_retention_days: int, now: datetime) -> str | None:
    """Why replaying archived days from ``first`` would count rollups twice, or ``None``.

    Retention deletes raw rows older than ``raw_retention_days`` and keeps their counts in the
    rollups. A replayed event whose raw row is gone is written as new and counted again: only a
    database that lost those days' rollups too wants that. Days are the archive's (Kafka time),
    rows' ages their event time; the two differ by the events' lateness.
    """
    if not raw_retention_days:
        return None
    horizon = now - timedelta(days=raw_retention_days)
    if datetime(first.year, first.month, first.day) >= horizon:
        return None
    return (
        f"--from {first} is older than rollups.raw_retention_days ({raw_retention_days}): raw rows before "
        f"{horizon:%Y-%m-%d %H:%M} UTC were deleted and their counts kept, so a replay would count them twice; "
        f"replay from {horizon.date() + timedelta(days=1)} on, or pass --rollups-lost if those days' rollups "
        "are gone too (a database restored from before them)"
    )


async def replay(
    s3: Any,
    producer: Any,
    bucket: str,
    keys: Iterable[ObjectKey],
    to_topic: str,
    progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Produce every record of ``keys`` to ``to_topic``; ``progress(records)`` after each object."""
    report = ReplayReport()
    for key in keys:
        body = await (await s3.get_object(Bucket=bucket, Key=str(key)))["Body"].read()
        futures = []
        for record in decode(body, key.fmt):
            source = f"{record.topic}:{record.partition}:{record.offset}".encode()
            headers = [
                *record.headers,
                (REPLAY_HEADER, source),
                (REPLAY_TIMESTAMP_HEADER, str(record.timestamp_ms).encode()),
            ]
            futures.append(await producer.send(to_topic, record.value, key=record.key, headers=headers))
        await asyncio.gather(*futures)
        report.objects += 1
        report.records += len(futures)
        if progress is not None:
            progress(len(futures))
    return report
