"""Backfill: archived records produced back into Kafka.

Design notes: docs/architecture.md, "pinapp/archive/replay.py".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pinapp.archive.layout import ObjectKey
from pinapp.archive.records import decode
from pinapp.domain.dead_letters import REPLAY_HEADER, REPLAY_TIMESTAMP_HEADER

__all__ = ["ReplayReport", "replay"]


@dataclass
class ReplayReport:
    objects: int = 0
    records: int = 0


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
