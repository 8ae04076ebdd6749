"""The archiver agent: every record of ``archive.topics`` into S3, offsets acked only after.

Runs in ``pinapp archiver`` (:data:`pinapp.app.archive_app`, its own consumer group). The
stream is ``noack()``: faust's batch helpers (``take_events``) ack even when the agent
fails, so records are acked one by one, by :class:`~pinapp.archive.archiver.Archiver`,
after the cut holding them is in S3. Background loops flush buffers by age, report progress, write
``_SUCCESS`` markers and delete intents of committed cuts; a hook flushes everything before
faust waits for acks on revocation and shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from contextlib import AsyncExitStack

from faust.types import TP, StreamT

from pinapp import health
from pinapp.app import archive_app, settings
from pinapp.archive.archiver import Archiver, CutAbandoned
from pinapp.archive.buffer import Delivery
from pinapp.archive.records import ArchivedRecord
from pinapp.archive.writer import ArchiveWriter
from pinapp.metrics import ARCHIVE_BUFFERED
from pinapp.s3 import s3_client
from pinapp.topics import archive_source

__all__ = ["archive_records"]

logger = logging.getLogger(__name__)

TOPICS = frozenset(settings.archive_topics)


class FaustPartitions:
    """:class:`~pinapp.archive.archiver.PartitionControl` over the archiver app's consumer."""

    async def pause(self, topic: str, partition: int) -> None:
        await archive_app.consumer.pause_fetching([TP(topic, partition)])

    async def resume(self, topic: str, partition: int) -> None:
        await archive_app.consumer.resume_fetching([TP(topic, partition)])

    def highwater(self, topic: str, partition: int) -> int | None:
        try:
            return archive_app.consumer.highwater(TP(topic, partition))
        except Exception:  # not fetched yet, or no longer assigned
            return None

    def committed(self, topic: str, partition: int) -> int | None:
        return archive_app.consumer.committed(TP(topic, partition))

    def assigned(self) -> Iterable[tuple[str, int]]:
        return [(tp.topic, tp.partition) for tp in archive_app.consumer.assignment() if tp.topic in TOPICS]

    def partition_count(self, topic: str) -> int | None:
        return archive_app.consumer.topic_partitions(topic)

    def release(self, deliveries: Iterable[Delivery]) -> None:
        # faust waits (on revocation and shutdown) until its set of unacked messages is empty;
        # a record given up must leave that set without an ack, so it is never committed.
        archive_app.consumer.release(delivery.message for delivery in deliveries)  # type: ignore[attr-defined]


_exit_stack = AsyncExitStack()
_archiver: Archiver | None = None


async def _get_archiver() -> Archiver:
    """The archiver and its S3 client, created on first use inside the worker's event loop."""
    global _archiver
    if _archiver is None:
        s3 = await _exit_stack.enter_async_context(s3_client(settings.s3, max_attempts=1))
        writer = ArchiveWriter(s3, settings.s3.bucket, settings.archive.prefix)
        _archiver = Archiver(writer, settings.archive, FaustPartitions())
        ARCHIVE_BUFFERED.set_function(lambda: _archiver.buffered if _archiver else 0)
    return _archiver


@archive_app.agent(archive_source)
async def archive_records(stream: StreamT[bytes]) -> None:
    """Hand each record, with its ack, to the archiver; it acks once the record is in S3."""
    health.sink("s3")  # listed in /health from the start
    archiver = await _get_archiver()
    async for event in stream.noack().events():
        message = event.message
        headers = message.headers or ()
        record = ArchivedRecord(message.topic, message.partition, message.offset,
                                round(message.timestamp * 1000), message.key, message.value,
                                tuple(headers.items() if isinstance(headers, dict) else headers))
        try:
            await archiver.add(record, event)
        except CutAbandoned as exc:
            # The partition was revoked while S3 failed: its records stay unacked for the next owner.
            logger.warning("archive: %s", exc)


# Loops rather than faust timers: an upload may wait out an S3 outage, and a timer would then
# warn about overlapping runs every interval.


@archive_app.task
async def flush_aged() -> None:
    """Upload buffers that reached ``archive.max_age_s``."""
    archiver = await _get_archiver()
    while not archive_app.should_stop:
        await asyncio.sleep(settings.archive.check_interval_s)
        try:
            await archiver.flush_due()
        except CutAbandoned as exc:
            logger.warning("archive: %s", exc)


@archive_app.task
async def finalize_hours() -> None:
    """Report progress, put ``_SUCCESS`` into complete hour folders, forget committed intents."""
    archiver = await _get_archiver()
    while not archive_app.should_stop:
        await asyncio.sleep(settings.archive.finalize_interval_s)
        try:
            for folder in await archiver.report_and_finalize(settings.archive_topics):
                logger.info("archive: %s complete (_SUCCESS written)", folder)
            await archiver.collect_intents()
        except Exception as exc:  # S3 trouble: the next round tries again; archiving is unaffected
            logger.warning("archive: finalizer skipped this round: %r", exc)


async def _flush_before_handover() -> None:
    if _archiver is not None:
        await _archiver.flush_all()


archive_app.before_wait_empty.append(_flush_before_handover)
