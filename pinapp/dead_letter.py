"""Sending an input that cannot be processed to the dead-letter topic.

The record keeps the original key and bytes unchanged; why and where it came from go in
headers (the Kafka Connect convention), so the DLQ can be replayed as it is once fixed.
faust flushes the producer before it commits offsets, so a dead-lettered input is in the
DLQ before its source offset is committed.
"""

from __future__ import annotations

import logging

from faust.types import Message

from pinapp import metrics
from pinapp.dlq import HEADER_PREFIX, DeadLetterLog, dlq_headers
from pinapp.topics import dead_letter_topic

__all__ = ["HEADER_PREFIX", "DEAD_LETTER_LOG", "dead_letter"]

logger = logging.getLogger(__name__)

#: The worker's log of dead letters: the first few per kind and interval, then a summary.
DEAD_LETTER_LOG = DeadLetterLog(logger, topic=dead_letter_topic.get_topic_name())


async def dead_letter(msg: Message, reason: str, *, kind: str, stage: str) -> None:
    """Route the record ``msg`` to the dead-letter topic with ``reason``; count it, and log it or its burst."""
    DEAD_LETTER_LOG.record(kind, f"{msg.topic}[{msg.partition}]@{msg.offset}", stage, reason)
    headers = dlq_headers(reason, kind=kind, stage=stage, topic=msg.topic, partition=msg.partition,
                          offset=msg.offset, timestamp=int(msg.timestamp * 1000))
    await dead_letter_topic.send(key=msg.key, value=msg.value, headers=headers)
    metrics.DEAD_LETTERED.labels(kind=kind).inc()
