"""Checking the archive: every offset of a topic in exactly one object.

Reads every object of the topic (all hour folders), counts each (partition, offset), and
reports, per partition, the offsets in ``[start, committed)`` that are missing and any
offset found more than once (anywhere, committed or not).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from config import Settings
from pinapp.adapters.kafka import client_options, partitions_of
from pinapp.adapters.s3 import s3_client
from pinapp.archive.layout import ObjectKey
from pinapp.archive.listing import archived_keys
from pinapp.archive.records import ArchivedRecord, decode
from pinapp.errors import PinappError

__all__ = ["VerifyReport", "archived_objects", "archiver_group", "committed_offsets", "verify_archive", "verify_topic"]


def _ranges(offsets: list[int]) -> list[tuple[int, int]]:
    """Sorted offsets -> inclusive runs, for readable reports."""
    runs: list[tuple[int, int]] = []
    for o in offsets:
        if runs and o == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], o)
        else:
            runs.append((o, o))
    return runs


@dataclass
class VerifyReport:
    topic: str
    objects: int = 0
    records: int = 0
    gaps: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    duplicates: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.gaps and not self.duplicates


async def archived_objects(
    s3: Any, bucket: str, prefix: str, topic: str
) -> AsyncIterator[tuple[ObjectKey, list[ArchivedRecord]]]:
    """Every archive object of ``topic`` (all hour folders), with its records."""
    async for key in archived_keys(s3, bucket, prefix, topic):
        body = await (await s3.get_object(Bucket=bucket, Key=str(key)))["Body"].read()
        yield key, list(decode(body, key.fmt))


async def verify_topic(
    s3: Any,
    bucket: str,
    prefix: str,
    topic: str,
    start: Mapping[int, int],
    committed: Mapping[int, int],
    each_record: Callable[[ArchivedRecord], None] | None = None,
) -> VerifyReport:
    """Verify ``topic``'s archive against its log start and committed offsets per partition.

    ``each_record`` sees every archived record on the way (the audit reads their events), so
    the archive is downloaded once.
    """
    report = VerifyReport(topic)
    seen: dict[int, Counter[int]] = {p: Counter() for p in committed}
    async for _key, records in archived_objects(s3, bucket, prefix, topic):
        report.objects += 1
        for record in records:
            seen.setdefault(record.partition, Counter())[record.offset] += 1
            report.records += 1
            if each_record is not None:
                each_record(record)
    for partition, counts in sorted(seen.items()):
        lo, hi = start.get(partition, 0), committed.get(partition, 0)
        missing = [o for o in range(lo, hi) if o not in counts]
        doubled = sorted(o for o, n in counts.items() if n > 1)
        if missing:
            report.gaps[partition] = _ranges(missing)
        if doubled:
            report.duplicates[partition] = _ranges(doubled)
    return report


def archiver_group(settings: Settings) -> str:
    """The archiver's consumer group: its faust app id."""
    return f"{settings.worker.app_id}-archiver"


async def committed_offsets(settings: Settings, topic: str, group: str) -> tuple[dict[int, int], dict[int, int]]:
    """``(log start, committed)`` per partition of ``topic`` for consumer group ``group``."""
    consumer = AIOKafkaConsumer(**client_options(settings.kafka), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await partitions_of(settings.kafka, topic)
        if not partitions:
            raise PinappError(f"topic {topic!r} does not exist on {settings.kafka.bootstrap}")
        tps = [TopicPartition(topic, p) for p in partitions]
        starts = await consumer.beginning_offsets(tps) if tps else {}
        committed = {tp.partition: (await consumer.committed(tp)) or 0 for tp in tps}
        return {tp.partition: off for tp, off in starts.items()}, committed
    finally:
        await consumer.stop()


async def verify_archive(settings: Settings, topic: str) -> tuple[VerifyReport, list[tuple[int, int, int, str, str]]]:
    """Verify ``topic``'s archive against the archiver group's committed offsets.

    Returns the report and one row per partition for printing.
    """
    start, committed = await committed_offsets(settings, topic, archiver_group(settings))
    async with s3_client(settings.s3) as s3:
        report = await verify_topic(s3, settings.s3.bucket, settings.archive.prefix, topic, start, committed)

    def runs(found: list[tuple[int, int]]) -> str:
        return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in found) or "-"

    table = [
        (p, start.get(p, 0), committed[p], runs(report.gaps.get(p, [])), runs(report.duplicates.get(p, [])))
        for p in sorted(committed)
    ]
    return report, table
