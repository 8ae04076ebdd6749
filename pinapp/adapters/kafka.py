"""Kafka clients for processes outside the faust worker (generator, tests, tools), and how
every client pinapp makes connects.

Design notes: docs/architecture.md, "pinapp/adapters/kafka.py".
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import suppress
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from config import KafkaSettings
from pinapp.errors import PinappError

__all__ = [
    "client_options",
    "ensure_topic_configs",
    "ensure_topics",
    "librdkafka_options",
    "make_producer",
    "partitions_of",
    "read_topic",
    "ssl_context",
    "topic_configs",
]

logger = logging.getLogger(__name__)


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of a client (``None`` for PLAINTEXT and SASL_PLAINTEXT): the CA file, else
    the system's CAs; the client certificate and key for mutual TLS; hostname checking as set."""
    if kafka.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = create_ssl_context(
        cafile=kafka.ssl_ca_file,
        certfile=kafka.ssl_cert_file,
        keyfile=kafka.ssl_key_file,
        password=kafka.ssl_key_password.get_secret_value() or None,
    )
    context.check_hostname = kafka.ssl_check_hostname
    return context


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka's connection options (bootstrap servers and security) for ``kafka``."""
    options: dict[str, Any] = {"bootstrap_servers": kafka.bootstrap, "security_protocol": kafka.security_protocol}
    context = ssl_context(kafka)
    if context is not None:
        options["ssl_context"] = context
    if kafka.security_protocol.startswith("SASL"):
        options.update(
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_plain_username=kafka.sasl_username,
            sasl_plain_password=kafka.sasl_password.get_secret_value(),
        )
    return options


def librdkafka_options(kafka: KafkaSettings) -> dict[str, str]:
    """librdkafka's properties (``pinapp singer``) for ``kafka``'s bootstrap and security."""
    options = {"bootstrap.servers": kafka.bootstrap, "security.protocol": kafka.security_protocol.lower()}
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl.endpoint.identification.algorithm"] = "https" if kafka.ssl_check_hostname else "none"
        for prop, path in (
            ("ssl.ca.location", kafka.ssl_ca_file),
            ("ssl.certificate.location", kafka.ssl_cert_file),
            ("ssl.key.location", kafka.ssl_key_file),
        ):
            if path is not None:
                options[prop] = str(path)
        if kafka.ssl_key_password.get_secret_value():
            options["ssl.key.password"] = kafka.ssl_key_password.get_secret_value()
    if kafka.security_protocol.startswith("SASL"):
        options.update(
            {
                "sasl.mechanism": kafka.sasl_mechanism,
                "sasl.username": kafka.sasl_username,
                "sasl.password": kafka.sasl_password.get_secret_value(),
            }
        )
    return options


def topic_configs(kafka: KafkaSettings) -> dict[str, str]:
    """The configuration every topic of pinapp's gets (besides its own, e.g. a changelog's compaction).

    ``min.insync.replicas``: with the broker's default of 1, an ``acks=all`` write is taken with one
    copy when the others lag, and lost with that broker; with ``replication_factor - 1`` a write
    needs a second copy, and stalls (retried) while fewer are in sync.
    """
    return {"min.insync.replicas": str(kafka.insync_replicas)}


async def ensure_topics(kafka: KafkaSettings, names: Iterable[str] | None = None) -> list[str]:
    """Create pinapp's topics (or ``names``) with the configured layout, and bring the existing
    ones' :func:`topic_configs` up to date; returns those created."""
    wanted = list(names or (kafka.events_topic, kafka.dlq_topic))
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(
                name,
                num_partitions=kafka.partitions,
                replication_factor=kafka.replication_factor,
                topic_configs=topic_configs(kafka),
            )
            for name in wanted
            if name not in existing
        ]
        if new:
            with suppress(TopicAlreadyExistsError):  # a worker created it meanwhile
                await admin.create_topics(new)
        await _configure(admin, kafka, [name for name in wanted if name in existing])
        return [t.name for t in new]
    finally:
        await admin.close()


async def ensure_topic_configs(kafka: KafkaSettings, names: Iterable[str]) -> list[str]:
    """Bring the :func:`topic_configs` of the existing topics ``names`` up to date (faust creates
    its changelogs and its assignor's topic itself); returns those altered."""
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        return await _configure(admin, kafka, [name for name in names if name in existing])
    finally:
        await admin.close()


_TOPIC_OVERRIDE = 1  # DescribeConfigs' config_source of a topic's own setting (DYNAMIC_TOPIC_CONFIG)


async def _configure(admin: AIOKafkaAdminClient, kafka: KafkaSettings, names: list[str]) -> list[str]:
    """Alter the topics whose configuration differs from :func:`topic_configs`.

    AlterConfigs (aiokafka has no incremental form) replaces a topic's whole set of overrides,
    so each is sent with the overrides it has (a changelog's ``cleanup.policy=compact``...).
    """
    if not names:
        return []
    wanted = topic_configs(kafka)
    described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    changes = []
    for response in described:
        for error_code, message, _, name, entries in response.resources:
            if error_code:  # a topic still being created, say: its creator gave it the configuration
                logger.warning(
                    "topic %r's configuration cannot be read (%s, error %d); left as is", name, message, error_code
                )
                continue
            # The topic's own setting, not a broker default that happens to agree today.
            overrides = {entry[0]: entry[1] for entry in entries if entry[3] == _TOPIC_OVERRIDE}
            if all(overrides.get(key) == value for key, value in wanted.items()):
                continue
            changes.append(ConfigResource(ConfigResourceType.TOPIC, name, configs={**overrides, **wanted}))
    if changes:
        for response in await admin.alter_configs(changes):
            for error_code, message, _, name in response.resources:
                if error_code:
                    raise PinappError(
                        f"cannot set {wanted} on topic {name!r}: {message} (error {error_code}); "
                        "the client needs ALTER_CONFIGS on the topic"
                    )
    return [c.name for c in changes]


def make_producer(kafka: KafkaSettings, *, linger_ms: int = 20) -> AIOKafkaProducer:
    """A durable producer: acks from all in-sync replicas, idempotent, batched."""
    return AIOKafkaProducer(
        **client_options(kafka),
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        max_batch_size=512 * 1024,
    )


async def partitions_of(kafka: KafkaSettings, topic: str) -> list[int]:
    """``topic``'s partitions, from a fresh metadata request (a consumer not subscribed to a
    topic may not have its metadata cached); empty when the topic does not exist."""
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(
        p["partition"] for t in described if t["topic"] == topic and not t["error_code"] for p in t["partitions"]
    )


async def read_topic(
    kafka: KafkaSettings,
    topic: str,
    *,
    stall_s: float = 60.0,
    log_starts: dict[int, int] | None = None,
    from_offsets: dict[int, int] | None = None,
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from its log start up to its end offsets at the start of the read.

    No consumer group: partitions are assigned, nothing is committed. Progress is judged by
    the offsets received, not by ``position()``, which aiokafka advances while prefetching.
    ``log_starts``, when given, is filled with each partition's log start before the first
    record (above 0: retention has deleted records). ``from_offsets``, when given, starts each
    partition there instead (never before its log start). Raises :class:`PinappError` when the
    topic does not exist or nothing arrives for ``stall_s``.
    """
    consumer = AIOKafkaConsumer(**client_options(kafka), enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in await partitions_of(kafka, topic)]
        if not parts:
            raise PinappError(f"topic {topic!r} does not exist on {kafka.bootstrap}")
        consumer.assign(parts)
        starts = await consumer.beginning_offsets(parts)
        ends = await consumer.end_offsets(parts)
        if log_starts is not None:
            log_starts.update({tp.partition: offset for tp, offset in starts.items()})
        if from_offsets is not None:
            starts = {tp: max(offset, from_offsets.get(tp.partition, 0)) for tp, offset in starts.items()}
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
