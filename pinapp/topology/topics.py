"""Every Kafka topic pinapp reads or writes, declared once.

Topics are ``internal=True`` so faust creates them (partitions and replication factor
from settings) before subscribing; producers outside the worker use
:func:`pinapp.adapters.kafka.ensure_topics` with the same figures.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import faust

from pinapp.adapters.kafka import topic_configs
from pinapp.domain.dead_letters import DeadLetters
from pinapp.telemetry import metrics
from pinapp.topology.app import app, archive_app, settings

__all__ = ["archive_source", "dead_letter_topic", "dead_letters", "events_topic", "live_topic", "publish_live"]


def _raw_topic(owner: faust.App, *names: str, **options: Any) -> faust.TopicT:
    """A topic of raw bytes (key and value passed through untouched), laid out as configured."""
    return owner.topic(
        *names,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.kafka.partitions,
        replicas=settings.kafka.replication_factor,
        internal=True,
        config=topic_configs(settings.kafka),
        **options,
    )


#: Raw engagement events as JSON bytes, keyed by pin_id (else user_id).
events_topic = _raw_topic(app, settings.kafka.events_topic)

#: Repins as written, one record per batch (:mod:`pinapp.web.live_feed`), read by every worker's
#: ``/globe`` feed from its end; an hour of retention is plenty for a live view.
live_topic = _raw_topic(app, settings.kafka.live_topic, retention=timedelta(hours=1))


async def publish_live(value: bytes) -> None:
    """Send one record of repin points to :data:`live_topic`, at most once: the globe's view, not
    a delivery path, so nothing waits for Kafka's answer. A record Kafka refuses (a broker down)
    is counted in ``pinapp_live_send_failed``; faust logs it once, and nobody is left holding an
    unread error for the garbage collector to print as a traceback."""
    sent = asyncio.ensure_future(await live_topic.send(value=value))  # faust's FutureMessage, as it is
    sent.add_done_callback(_count_failed_live_send)


def _count_failed_live_send(sent: asyncio.Future[Any]) -> None:
    if not sent.cancelled() and sent.exception() is not None:
        metrics.LIVE_SEND_FAILED.inc()


#: Inputs pinapp could not process: original key and bytes, reason and source in headers.
dead_letter_topic = _raw_topic(app, settings.kafka.dlq_topic)

#: The topology's way to dead-letter an input: to ``dead_letter_topic``, counted in
#: ``pinapp_dead_lettered``, logged as the first few per kind and then a summary.
dead_letters = DeadLetters(
    dead_letter_topic.send,
    topic=dead_letter_topic.get_topic_name(),
    logger=logging.getLogger("pinapp.dead_letters"),
    counted=lambda kind: metrics.DEAD_LETTERED.labels(kind=kind).inc(),
)

#: What the archiver copies to S3 (``archive.topics``; default: the events topic and the DLQ).
#: Declared on the archiver's app, so its consumer group and commits are its own.
archive_source = _raw_topic(archive_app, *settings.archive_topics)
