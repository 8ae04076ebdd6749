"""Partition control for agents that hold records unacked on purpose (the S3 archiver).

:class:`PartitionControl` is the consumer's side of
:class:`pinapp.archive.archiver.PartitionControl`: pause and resume fetching without losing
anything, the committed offset, and giving records up without acking them.

Design notes: docs/architecture.md, "pinapp/topology/faust_ext/partitions.py".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from aiokafka import TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

from pinapp.topology.faust_ext.contract import MixinBase

__all__ = ["PartitionControl"]


class PartitionControl(MixinBase):
    """Mixed into pinapp's consumer (:mod:`.app`)."""

    async def pause_fetching(self, tps: Iterable[TP]) -> None:
        """Stop fetching ``tps`` until :meth:`resume_fetching`, without dropping anything.

        faust's ``pause_partitions`` is not that: it skips the paused partitions' records in the
        batch being handed over, and once newer records arrive it books the skipped offsets as
        a "gap", i.e. as acked, so they are committed unprocessed. This pauses aiokafka's
        fetcher instead: records it has not returned yet are fetched again on resume, and what
        it already returned is handed over as usual. Unassigned partitions are ignored.
        """
        await self._in_consumer_thread("pause", tps)

    async def resume_fetching(self, tps: Iterable[TP]) -> None:
        await self._in_consumer_thread("resume", tps)

    def release(self, messages: Iterable[Any]) -> None:
        """Forget delivered ``messages`` without acking them: they are never committed, and
        faust no longer waits for their acks (a revoked partition's next owner reads them)."""
        for message in messages:
            self._unacked_messages.discard(message)

    async def _in_consumer_thread(self, method: str, tps: Iterable[TP]) -> None:
        thread = cast(AIOKafkaConsumerThread, self._thread)  # the aiokafka driver's
        consumer = thread._ensure_consumer()
        wanted = {TopicPartition(tp.topic, tp.partition) for tp in tps}

        async def call() -> None:
            getattr(consumer, method)(*(wanted & consumer.assignment()))

        await thread.call_thread(call)

    async def _in_consumer_thread_seek(self, tp: TP, offset: int) -> None:
        thread = cast(AIOKafkaConsumerThread, self._thread)  # the aiokafka driver's
        consumer = thread._ensure_consumer()

        async def call() -> None:
            consumer.seek(TopicPartition(tp.topic, tp.partition), offset)

        await thread.call_thread(call)
