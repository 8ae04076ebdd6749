"""The batch hand-off: an agent takes fetched records a partition's run at a time.

Design notes: docs/architecture.md, "pinapp/topology/faust_ext/batches.py".
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from faust.types import TP, Message, StreamT

__all__ = ["BatchInbox", "FetchedBatch", "FetchedBatches", "FetchedRun"]


@dataclass(slots=True)
class FetchedRun:
    """Consecutive records of one partition from one fetch, handed over together."""

    tp: TP
    messages: list[Message]
    generation_id: int | None  # the group generation it was fetched in (faust: None before a join)


class FetchedBatch(list[Message]):
    """A batch of records as the agent takes it; ``in_flight``: what faust tracks for it."""

    __slots__ = ("in_flight",)

    def __init__(self) -> None:
        super().__init__()
        self.in_flight: list[Message] = []


class BatchInbox:
    """The runs fetched for one topic and not yet taken by its agent, bounded in records.

    ``put`` waits while ``max_events`` or more records wait (one run may go over the bound:
    a run is never split on the way in). ``clear`` is what faust's flow control calls on its
    stream buffers at a rebalance.
    """

    def __init__(self, topic: str, *, app: Any, consumer: Any, max_events: int, run_events: int) -> None:
        if max_events < 1 or run_events < 1:
            raise ValueError("max_events and run_events must be at least 1")
        self.topic = topic
        self.app = app
        self.consumer = consumer
        self.max_events = max_events
        #: the longest run the fetch loop hands over (the agent's batch size)
        self.run_events = run_events
        self.events = 0
        self._runs: deque[FetchedRun] = deque()
        self._has_runs = asyncio.Event()
        self._has_room = asyncio.Event()
        self._has_room.set()

    def __len__(self) -> int:
        return len(self._runs)

    def full(self) -> bool:
        return self.events >= self.max_events

    def put_nowait(self, run: FetchedRun) -> None:
        self._runs.append(run)
        self.events += len(run.messages)
        self._has_runs.set()
        if self.full():
            self._has_room.clear()

    async def put(self, run: FetchedRun) -> None:
        """Queue ``run`` once there is room (cancelled: not queued)."""
        while self.full():
            await self._has_room.wait()
        self.put_nowait(run)

    def clear(self) -> None:
        self._runs.clear()
        self._changed(0)

    def _changed(self, events: int) -> None:
        self.events = events
        if not self._runs:
            self._has_runs.clear()
        if not self.full():
            self._has_room.set()

    async def take(self, max_events: int, within: float, *, per_record: bool = False) -> FetchedBatch:
        """Up to ``max_events`` records of whole or split runs; waits for the first, then at
        most ``within`` seconds for more. Each run taken is tracked as in flight by its last
        record, or (``per_record``) by each of its records."""
        loop = asyncio.get_running_loop()
        app = self.app
        unacked = self.consumer.unacked
        flow_control = app.flow_control
        batch = FetchedBatch()
        deadline = 0.0
        while len(batch) < max_events:
            if not self._runs:
                if not batch:
                    await self._has_runs.wait()
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self._has_runs.wait(), remaining)
                except TimeoutError:
                    break
                continue
            run = self._runs[0]
            if run.generation_id != app.consumer_generation_id or not flow_control.is_active():
                self._runs.popleft()  # 1. fetched before a rebalance: the seek fetches it again
                self._changed(self.events - len(run.messages))
                continue
            room = max_events - len(batch)
            if len(run.messages) <= room:
                self._runs.popleft()
                taken = run.messages
            else:
                taken, run.messages = run.messages[:room], run.messages[room:]
            if per_record:  # 2. in flight, as a stream tracks what it takes
                for message in taken:
                    message.tracked = True
                unacked.update(taken)
            else:
                unacked.add(taken[-1])
                batch.in_flight.append(taken[-1])
            if not batch:
                deadline = loop.time() + within
            batch.extend(taken)
            self._changed(self.events - len(taken))
        return batch


class _BatchReading(Protocol):
    """What the batch reader needs of pinapp's consumer (``PinConsumer``, in :mod:`.app`, which imports this)."""

    batch_inboxes: dict[str, BatchInbox]

    def ack_batch(self, batch: Sequence[Message], in_flight: Iterable[Message]) -> None: ...


class FetchedBatches:
    """The records of ``stream``'s topic, in batches of up to ``max_events``, for its agent.

    ``async for batch in batches`` subscribes to the topic as iterating the stream would,
    and has the fetch loop hand its records over in runs (see the module docstring);
    ``buffer_events`` bounds the records fetched ahead of the agent. Each batch must be
    acknowledged whole with :meth:`ack` once it is processed, in any order and from any task
    (so an agent may take the next batch while it still writes this one); with
    ``ack_per_record`` the agent acknowledges each record itself (``Consumer.ack``) instead.
    The agent must be the topic's only reader in its app.
    """

    def __init__(
        self, stream: StreamT, *, max_events: int, within: float, buffer_events: int, ack_per_record: bool = False
    ) -> None:
        self.stream = stream
        self.max_events = max_events
        self.within = within
        self.buffer_events = buffer_events
        self.ack_per_record = ack_per_record

    async def __aiter__(self) -> AsyncIterator[Sequence[Message]]:
        app = self.stream.app
        channel = self.stream.channel.__aiter__()  # registers the topic with the conductor, as a stream does
        topics = channel.topics  # type: ignore[attr-defined]  # a topic's channel, as the agent's stream reads one
        readers = [c for c in app.topics if set(c.topics) & set(topics)]
        if len(readers) > 1:
            raise RuntimeError(
                f"{', '.join(topics)}: read in batches by one agent, but {len(readers)} channels "
                "subscribe to it in this app"
            )
        consumer = cast(_BatchReading, app.consumer)
        inbox = BatchInbox(
            topics[0], app=app, consumer=consumer, max_events=self.buffer_events, run_events=self.max_events
        )
        # cleared with the stream buffers at a rebalance (flow control calls only its clear())
        app.flow_control.manage_queue(inbox)  # type: ignore[arg-type]  # duck-typed: only clear() is called
        for topic in topics:
            consumer.batch_inboxes[topic] = inbox
        try:
            while not app.should_stop:
                yield await inbox.take(self.max_events, self.within, per_record=self.ack_per_record)
        finally:
            for topic in topics:
                consumer.batch_inboxes.pop(topic, None)

    def ack(self, batch: Sequence[Message]) -> None:
        """``batch``, as taken, is processed: its offsets may be committed (3. in the module
        docstring)."""
        if self.ack_per_record:
            raise RuntimeError("ack_per_record: the agent acknowledges each record itself")
        in_flight = batch.in_flight if isinstance(batch, FetchedBatch) else batch
        cast(_BatchReading, self.stream.app.consumer).ack_batch(batch, in_flight)
