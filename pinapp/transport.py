"""A faust App whose Kafka consumer hands messages to streams without per-message tasks.

faust-streaming 0.15.3 hands every fetched message to its stream with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: four futures and
an ``asyncio.wait`` per message, so that a hand-off blocked on a full stream buffer can be
abandoned when a rebalance suspends flow. That wrapper costs more per message than all of
pinapp's stages.

Here the hand-off coroutine is first stepped synchronously. Almost always the stream
buffer has room and it completes at once: no task, no wait. Only when it blocks (a full
buffer, or flow control suspended) is it finished in a task under the original
``wait_first``, which still abandons it when flow is suspended: faust's promise is kept.

:meth:`FastHandoffConsumer._drain_messages` is faust's own loop with that one change;
re-check it when upgrading faust-streaming (pinned in pyproject.toml).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any, cast

import faust
from aiokafka import TopicPartition
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, TransportT
from mode import Service

__all__ = ["FastHandoffConsumer", "HoleWatch", "PinApp", "unacked_hole"]


async def _resume(coro: Coroutine[Any, Any, Any], blocked_on: Any) -> Any:
    """Drive ``coro``, which has yielded ``blocked_on`` to its runner, to completion.

    This is what an asyncio Task does for a coroutine: wait for the future it yielded,
    then resume it (it reads the future's result or exception itself).
    """
    try:
        while True:
            try:
                if blocked_on is None:  # a bare yield, as asyncio.sleep(0) makes
                    await asyncio.sleep(0)
                else:
                    await asyncio.wait([blocked_on])
            except asyncio.CancelledError:
                try:  # let the hand-off clean up (a queue put withdraws its waiter)
                    coro.throw(asyncio.CancelledError())
                except (asyncio.CancelledError, StopIteration):
                    pass
                raise
            try:
                blocked_on = coro.send(None)
            except StopIteration as done:
                return done.value
    finally:
        coro.close()


def unacked_hole(acked: list[int], committed: int | None, *, has_gap: bool) -> int | None:
    """The lowest acknowledged offset when offsets between ``committed`` (the next offset to
    commit) and it were never acknowledged; ``None`` when there is no such hole (or faust's
    gap bookkeeping, for compacted or transactional topics, decides instead)."""
    if not acked or committed is None or has_gap:
        return None
    low = min(acked)
    return low if low > committed else None


class HoleWatch:
    """How long each partition's commit has been held up by the same hole.

    A hole is overdue when it stayed, with no in-flight message to fill it, for ``after_s``:
    then it is reported once and forgotten (a refetch starts the clock again).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since: dict[Any, tuple[int, float]] = {}

    def forget(self, tp: Any) -> None:
        self._since.pop(tp, None)

    def overdue(self, tp: Any, committed: int, *, in_flight: bool, after_s: float) -> bool:
        if in_flight:
            self.forget(tp)  # its stream will ack it
            return False
        since = self._since.get(tp)
        if since is None or since[0] != committed:
            self._since[tp] = (committed, self._clock())
            return False
        if self._clock() - since[1] < after_s:
            return False
        self.forget(tp)
        return True


class FastHandoffConsumer(aiokafka_driver.Consumer):
    """faust's aiokafka consumer, with a task-free hand-off when the stream has room, and a
    pause that loses nothing (:meth:`pause_fetching`)."""

    #: Wall-clock time of this worker's last successful offset commit (``/health``).
    last_commit_at: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # partition -> (first skipped offset sought back to, in which fetched batch)
        self._refetching: dict[TP, tuple[int, int]] = {}
        self._batches = 0
        # partition -> last offset handed to a stream since faust last sought it
        self._delivered: dict[TP, int] = {}
        self._holes = HoleWatch()

    async def perform_seek(self) -> None:
        self._delivered.clear()
        await super().perform_seek()

    async def seek(self, partition: TP, offset: int) -> None:
        self._delivered.pop(partition, None)
        await super().seek(partition, offset)

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        committed = await super()._commit(offsets)
        if committed:
            self.last_commit_at = time.time()
        return bool(committed)

    def _new_offset(self, tp: TP) -> int | None:
        """faust's next commit offset, but never past an offset no stream acknowledged.

        faust commits the run of acknowledged offsets that starts next to the committed one,
        but it lets one missing offset through (its check is ``min(acked) - committed > 1``)
        and, when more are missing, stops committing for good: the records were handed to a
        stream that dropped them (a rebalance clears stream buffers), and nobody will ack them.
        Seen here as a partition whose commit stayed put while its worker processed on, and
        whose unprocessed records were processed only after the next rebalance. So a hole
        that no in-flight message explains is fetched again (:meth:`_refetch_unacked`).
        """
        committed = self._committed_offset[tp]
        low = unacked_hole(self._acked[tp], committed, has_gap=bool(self._gap[tp]))
        if low is None or committed is None:
            self._holes.forget(tp)
            return cast(int | None, super()._new_offset(tp))
        in_flight = any(m.tp == tp and m.offset < low for m in list(self._unacked_messages))
        if self._holes.overdue(tp, committed, in_flight=in_flight, after_s=2 * self.commit_interval):
            self.log.warning("%s: offsets %d-%d were handed to a stream but never acknowledged; fetching "
                             "them again (the offsets after them are processed again too: the sinks are "
                             "idempotent)", tp, committed, low - 1)
            asyncio.ensure_future(self._refetch_unacked(tp, committed))
        return None

    async def _refetch_unacked(self, tp: TP, offset: int) -> None:
        """Deliver ``tp`` again from ``offset``: faust's read offset and aiokafka's position."""
        self._read_offset[tp] = offset
        self._delivered.pop(tp, None)
        await self._in_consumer_thread_seek(tp, offset)

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

    async def _in_consumer_thread(self, method: str, tps: Iterable[TP]) -> None:
        # aiokafka runs in faust's consumer thread; its pause state must be changed there.
        thread = self._thread
        consumer = thread._ensure_consumer()
        wanted = {TopicPartition(tp.topic, tp.partition) for tp in tps}

        async def call() -> None:
            getattr(consumer, method)(*(wanted & consumer.assignment()))

        await thread.call_thread(call)

    async def _refetch_skipped(self, tp: TP, first: int, offset: int) -> bool:
        """``offset`` arrived where ``first`` was due: fetch ``first`` .. ``offset - 1`` again;
        whether this record must be dropped (it comes again after them).

        faust books a gap in an acked topic as acked ("compacted or transactional"), but
        pinapp's inputs are neither: a gap there means faust dropped records it had fetched
        (a batch cut short by a pause or a rebalance) while aiokafka's position moved on.
        Acking them committed events no one processed: a worker that took over a killed
        worker's partitions lost a few hundred of them this way. So the partition is sought
        back to the first skipped offset, and records after the gap are dropped until it
        arrives. Offsets below the log start (deleted by retention) cannot come again: only
        those are booked as a gap, with an error.
        """
        pending = self._refetching.get(tp)
        if pending is not None and pending[1] == self._batches:
            return True  # sought back already; the rest of this batch comes again too
        log_start = (await self.earliest_offsets(tp)).get(tp, 0)
        if first < log_start:
            self.log.error("%s: offsets %d-%d were deleted (retention) before they were processed",
                           tp, first, log_start - 1)
            if log_start >= offset:
                return False  # faust books them as acked: nothing there is left to read
            await self._add_gap(tp, first, log_start - 1)
            first = log_start
        self.log.warning("%s: faust skipped offsets %d-%d (fetched during a pause or rebalance); "
                         "fetching them again", tp, first, offset - 1)
        self._refetching[tp] = (first, self._batches)
        await self._in_consumer_thread_seek(tp, first)
        return True

    async def _in_consumer_thread_seek(self, tp: TP, offset: int) -> None:
        thread = self._thread
        consumer = thread._ensure_consumer()

        async def call() -> None:
            consumer.seek(TopicPartition(tp.topic, tp.partition), offset)

        await thread.call_thread(call)

    async def _hand_off(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            blocked_on = coro.send(None)
        except StopIteration:
            return  # delivered without blocking
        await self.wait_first(_resume(coro, blocked_on), self.suspend_flow.wait())

    async def _drain_messages(self, fetcher: Service) -> None:  # pragma: no cover - faust's loop
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        hand_off = self._hand_off
        delivered = self._delivered
        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = getmany(timeout=1.0)
                self._batches += 1
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            if r_offset is not None:
                                # pinapp: fetch skipped records again instead of acking them.
                                # faust's read offset is the last offset handed over or, after
                                # a seek, the next one to read; only the former was delivered.
                                # (None, nothing committed when faust sought, is not checked: a
                                # check against the log start sought back to 0 when faust had
                                # merely not seen the previous owner's commit.)
                                expected = r_offset + 1 if delivered.get(tp) == r_offset else r_offset
                                if (offset > expected and acks_enabled_for(message.topic)
                                        and await self._refetch_skipped(tp, expected, offset)):
                                    continue
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset:
                                if acks_enabled_for(message.topic):
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            await hand_off(callback(message))
                            set_read_offset(tp, offset)
                            delivered[tp] = offset
                    unset_flag(flag_consumer_fetching)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)


class _Transport(aiokafka_driver.Transport):
    Consumer = FastHandoffConsumer


class PinApp(faust.App):
    """``faust.App`` using :class:`FastHandoffConsumer` for ``kafka://`` brokers.

    It also lets agents that hold messages unacked on purpose (the archiver buffers records
    until they are in S3) flush before faust waits for every delivered message to be acked,
    on revocation and on shutdown: :attr:`before_wait_empty`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.before_wait_empty: list[Callable[[], Awaitable[None]]] = []

    async def _consumer_wait_empty(self, consumer: Any, logger: Any) -> None:
        for hook in self.before_wait_empty:
            await hook()
        await super()._consumer_wait_empty(consumer, logger)

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)
