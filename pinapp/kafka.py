"""Kafka clients for processes outside the faust worker (generator, tests, tools)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from contextlib import suppress

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from config import KafkaSettings
from pinapp.errors import PinappError

__all__ = ["ensure_topics", "make_producer", "partitions_of", "read_topic"]


async def ensure_topics(kafka: KafkaSettings, names: Iterable[str] | None = None) -> list[str]:
    """Create pinapp's topics (or ``names``) with the configured layout; returns those created."""
    wanted = list(names or (kafka.events_topic, kafka.dlq_topic))
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(name, num_partitions=kafka.partitions, replication_factor=kafka.replication_factor)
            for name in wanted
            if name not in existing
        ]
        if new:
            with suppress(TopicAlreadyExistsError):  # a worker created it meanwhile
                await admin.create_topics(new)
        return [t.name for t in new]
    finally:
        await admin.close()


def make_producer(kafka: KafkaSettings, *, linger_ms: int = 20) -> AIOKafkaProducer:
    """A durable producer: acks from all in-sync replicas, idempotent, batched."""
    return AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        max_batch_size=512 * 1024,
    )


async def partitions_of(bootstrap: str, topic: str) -> list[int]:
    """``topic``'s partitions, from a fresh metadata request (a consumer not subscribed to a
    topic may not have its metadata cached); empty when the topic does not exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for t in described if t["topic"] == topic and not t["error_code"]
                  for p in t["partitions"])


async def read_topic(kafka: KafkaSettings, topic: str, *, stall_s: float = 60.0,
                     log_starts: dict[int, int] | None = None) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from its log start up to its end offsets at the start of the read.

    No consumer group: partitions are assigned, nothing is committed. Progress is judged by
    the offsets received, not by ``position()``, which aiokafka advances while prefetching.
    ``log_starts``, when given, is filled with each partition's log start before the first
    record (above 0: retention has deleted records). Raises :class:`PinappError` when the
    topic does not exist or nothing arrives for ``stall_s``.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in await partitions_of(kafka.bootstrap, topic)]
        if not parts:
            raise PinappError(f"topic {topic!r} does not exist on {kafka.bootstrap}")
        consumer.assign(parts)
        starts = await consumer.beginning_offsets(parts)
        ends = await consumer.end_offsets(parts)
        if log_starts is not None:
            log_starts.update({tp.partition: offset for tp, offset in starts.items()})
        for tp in parts:
            consumer.seek(tp, starts[tp])
        next_offset = {tp: starts[tp] for tp in parts}
        last_progress = time.monotonic()
        while any(next_offset[tp] < ends[tp] for tp in parts):
            if time.monotonic() - last_progress > stall_s:
                raise PinappError(f"reading {topic}: no records for {stall_s:.0f} s at {next_offset} of {ends}")
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, records in batch.items():
                for rec in records:
                    if next_offset[tp] <= rec.offset < ends[tp]:
                        next_offset[tp] = rec.offset + 1
                        last_progress = time.monotonic()
                        yield rec
    finally:
        await consumer.stop()
