"""The live repin feed behind ``/globe``: every repin of the cluster, on every worker.

Design notes: docs/architecture.md, "pinapp/web/live_feed.py".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from mode import Service

from config import KafkaSettings
from pinapp.adapters.kafka import client_options, partitions_of
from pinapp.domain.repin_points import decode_points
from pinapp.telemetry import metrics

__all__ = ["LiveFeed"]

logger = logging.getLogger(__name__)


class LiveFeed(Service):
    """Reads every partition of the live topic from its end; fans out to subscribers.

    Each subscriber has a bounded queue: a slow browser loses its oldest points rather
    than growing the worker's memory.
    """

    def __init__(self, kafka: KafkaSettings, topic: str, *, queue_size: int = 512, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kafka = kafka
        self.topic = topic
        self.queue_size = queue_size
        self._subscribers: set[asyncio.Queue[list[dict[str, Any]]]] = set()
        self.ready = asyncio.Event()

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[list[dict[str, Any]]]]:
        """A queue receiving every batch of points from now on, until the block exits."""
        queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue(maxsize=self.queue_size)
        self._subscribers.add(queue)
        metrics.LIVE_SUBSCRIBERS.set(len(self._subscribers))
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)
            metrics.LIVE_SUBSCRIBERS.set(len(self._subscribers))

    def publish(self, points: list[dict[str, Any]]) -> None:
        """Hand ``points`` to every subscriber (dropping a slow one's oldest batch)."""
        for queue in self._subscribers:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                metrics.LIVE_DROPPED.inc()
            queue.put_nowait(points)

    @Service.task
    async def _consume(self) -> None:
        while not self.should_stop:
            try:
                await self._consume_once()
            except KafkaError as exc:  # broker restarts: the feed comes back by itself
                logger.warning("live feed: %s; reconnecting in 2 s", exc)
                self.ready.clear()
                await self.sleep(2.0)

    async def _consume_once(self) -> None:
        consumer = AIOKafkaConsumer(
            **client_options(self.kafka),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )
        await consumer.start()
        try:
            partitions = await self._partitions()
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            self.ready.set()
            while not self.should_stop:
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                for records in batches.values():
                    for record in records:
                        points = decode_points(record.value)
                        if points:
                            self.publish(points)
        finally:
            await consumer.stop()

    async def _partitions(self) -> list[TopicPartition]:
        """The topic's partitions, waiting while it does not exist yet (the worker creates it)."""
        while not (found := await partitions_of(self.kafka, self.topic)):
            await self.sleep(1.0)
        return [TopicPartition(self.topic, p) for p in found]
