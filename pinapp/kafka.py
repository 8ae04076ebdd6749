"""Kafka clients for processes outside the faust worker (generator, tests, tools)."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import suppress

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from config import KafkaSettings

__all__ = ["ensure_topics", "make_producer", "partitions_of"]


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


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    """``topic``'s partitions, from a fresh metadata fetch (a consumer not subscribed to a topic
    may not have its metadata cached); empty when the topic does not exist."""
    known = consumer.partitions_for_topic(topic)
    if not known:
        cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001 - aiokafka has no public call
        known = cluster.partitions_for_topic(topic)
    return sorted(known or ())
