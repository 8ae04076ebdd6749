"""The archiver agent: every record of ``archive.topics`` into S3, offsets acked only after.

Runs in ``pinapp archiver`` (:data:`pinapp.topology.app.archive_app`, its own consumer group). Records
come a fetched run at a time (:class:`~pinapp.topology.faust_ext.FetchedBatches`: no faust ``Event``,
stream queue or per-record sensors, which cost more than the archiver's own work per record),
and each is acked alone, by :class:`~pinapp.archive.archiver.Archiver`, after the cut holding
it is in S3; taking the next batch acks nothing. Background loops flush buffers by age, report progress, write
``_SUCCESS`` markers and delete intents of committed cuts; a hook flushes everything before
faust waits for acks on revocation and shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

from faust.types import TP, Message, StreamT

from pinapp.adapters.s3 import s3_client
from pinapp.archive.archiver import Archiver, CutAbandoned
from pinapp.archive.buffer import Delivery
from pinapp.archive.records import ArchivedRecord
from pinapp.archive.writer import ArchiveWriter
from pinapp.telemetry import health
from pinapp.telemetry.metrics import ARCHIVE_BUFFERED
from pinapp.topology import fault_hooks
from pinapp.topology.app import archive_app, settings
from pinapp.topology.broker import watch_brokers
from pinapp.topology.faust_ext import FetchedBatches, pin_consumer
from pinapp.topology.topics import archive_source

__all__ = ["archive_records"]

logger = logging.getLogger(__name__)

TOPICS = frozenset(settings.archive_topics)


class FaustPartitions:
    """:class:`~pinapp.archive.archiver.PartitionControl` over the archiver app's consumer."""

    async def pause(self, topic: str, partition: int) -> None:
        await pin_consumer(archive_app).pause_fetching([TP(topic, partition)])

    async def resume(self, topic: str, partition: int) -> None:
        await pin_consumer(archive_app).resume_fetching([TP(topic, partition)])

    def highwater(self, topic: str, partition: int) -> int | None:
        try:
            return pin_consumer(archive_app).highwater(TP(topic, partition))
        except Exception:  # noqa: BLE001 - faust raises several kinds here; not fetched yet, or no longer assigned
            return None

    def committed(self, topic: str, partition: int) -> int | None:
        return pin_consumer(archive_app).committed(TP(topic, partition))

    def assigned(self) -> Iterable[tuple[str, int]]:
        return [(tp.topic, tp.partition) for tp in pin_consumer(archive_app).assignment() if tp.topic in TOPICS]

    def partition_count(self, topic: str) -> int | None:
        return pin_consumer(archive_app).topic_partitions(topic)

    def release(self, deliveries: Iterable[Delivery]) -> None:
        # faust waits (on revocation and shutdown) until its set of unacked messages is empty;
        # a record given up must leave that set without an ack, so it is never committed.
        pin_consumer(archive_app).release(delivery.message for delivery in deliveries)  # type: ignore[attr-defined]  # MessageDelivery's

    async def refetch(self, topic: str, partition: int, offset: int) -> int:
        consumer = pin_consumer(archive_app)
        tp = TP(topic, partition)
        log_start = (await consumer.earliest_offsets(tp)).get(tp) or 0
        start = max(offset, log_start)
        await consumer.refetch(tp, start)
        return start


_exit_stack = AsyncExitStack()
_archiver: Archiver | None = None


async def _get_archiver() -> Archiver:
    """The archiver and its S3 client, created on first use inside the worker's event loop."""
    global _archiver  # noqa: PLW0603 - made once, in the worker's event loop
    if _archiver is None:
        s3 = await _exit_stack.enter_async_context(s3_client(settings.s3, max_attempts=1))
        writer = ArchiveWriter(
            s3, settings.s3.bucket, settings.archive.prefix, conditional_writes=settings.archive.conditional_writes
        )
        _archiver = Archiver(
            writer, settings.archive, FaustPartitions(), on_step=fault_hooks.archive_crash(settings.testing)
        )
        ARCHIVE_BUFFERED.set_function(lambda: _archiver.buffered if _archiver else 0)
    return _archiver


class MessageDelivery:
    """A fetched record's :class:`~pinapp.archive.buffer.Delivery`: its ack is the consumer's."""

    __slots__ = ("_ack", "message")

    def __init__(self, message: Message, ack: Callable[[Message], Any]) -> None:
        self.message = message
        self._ack = ack

    def ack(self) -> Any:
        if not self._ack(self.message):
            # Below the committed offset (a hole's refetch, a rewind): faust books no ack, and
            # would otherwise wait for this one at the next hand-over.
            pin_consumer(archive_app).release([self.message])


#: records taken per batch, and how long a batch waits to fill (the cuts decide the rest)
BATCH_EVENTS = 2000
BATCH_WITHIN_S = 0.05


def _no_rebalance_since(generation: int) -> Callable[[], bool]:
    """Whether no rebalance began since a batch was taken in consumer generation ``generation``."""
    flow_control = archive_app.flow_control
    return lambda: flow_control.is_active() and archive_app.consumer_generation_id == generation


def _records(
    batch: Sequence[Message], ack: Callable[[Message], Any]
) -> Iterator[tuple[ArchivedRecord, MessageDelivery]]:
    for message in batch:
        headers = message.headers or ()
        yield (
            ArchivedRecord(
                message.topic,
                message.partition,
                message.offset,
                round(message.timestamp * 1000),
                message.key,
                message.value,
                tuple(headers.items() if isinstance(headers, Mapping) else headers),
            ),
            MessageDelivery(message, ack),
        )


@archive_app.agent(archive_source)
async def archive_records(stream: StreamT[bytes]) -> None:
    """Hand each record, with its ack, to the archiver; it acks once the record is in S3."""
    health.sink("s3")  # listed in /health from the start
    archiver = await _get_archiver()
    batches = FetchedBatches(
        stream,
        max_events=BATCH_EVENTS,
        within=BATCH_WITHIN_S,
        buffer_events=settings.pipeline.stream_buffer_events,
        ack_per_record=True,
    )
    ack = pin_consumer(archive_app).ack
    async for batch in batches:
        await archiver.add_all(_records(batch, ack), current=_no_rebalance_since(archive_app.consumer_generation_id))


@archive_app.task
async def report_brokers() -> None:
    """``/health``'s ``brokers``: whether the archiver reaches Kafka at all."""
    await watch_brokers(archive_app)


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
        except Exception as exc:  # noqa: BLE001 - any failure; S3 trouble: the next round tries again; archiving is unaffected
            logger.warning("archive: finalizer skipped this round: %r", exc)


async def _flush_before_handover() -> None:
    if _archiver is not None:
        await _archiver.flush_all()


archive_app.before_wait_empty.append(_flush_before_handover)
