"""The consumer's fetch loop: a task-free hand-off, and no record of a batch fetched before a seek.

Design notes: docs/architecture.md, "pinapp/topology/faust_ext/handoff.py".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, cast

from aiokafka.errors import IllegalStateError
from faust.transport.consumer import CONSUMER_FETCHING
from faust.types import TP, Message
from mode import Service, ServiceT

from pinapp.topology.faust_ext.batches import BatchInbox, FetchedRun
from pinapp.topology.faust_ext.contract import MixinBase

__all__ = ["HandoffConsumer"]


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
                with contextlib.suppress(asyncio.CancelledError, StopIteration):
                    coro.throw(asyncio.CancelledError())  # let the hand-off clean up (a queue put withdraws its waiter)
                raise
            try:
                blocked_on = coro.send(None)
            except StopIteration as done:
                return done.value
    finally:
        coro.close()


class HandoffConsumer(MixinBase):
    """The fetch loop, mixed into pinapp's consumer (:mod:`.app`) with the guards."""

    _n_acked: int  # the contract's; declared again because this class assigns it (mypy cannot infer it then)

    def _init_handoff(self) -> None:
        #: seeks of every partition, each counted at its start and at its end
        self.seek_epoch = 0
        self._no_seek_of_all = asyncio.Event()  # clear while perform_seek runs
        self._no_seek_of_all.set()
        #: the same for seeks of one partition
        self.tp_seek_epochs: Counter[TP] = Counter()
        #: partition -> last offset handed to a stream since it was last sought
        self._delivered: dict[TP, int] = {}
        #: partition -> first offset handed to a stream since the last seek of every partition
        self._first_delivered: dict[TP, int] = {}
        #: the seek counts when the last fetch was sent to the consumer thread
        self._fetched_at: tuple[int, Counter[TP]] = (0, Counter())
        #: records dropped because a seek overtook their fetch (for tests and logs)
        self.stale_dropped = 0
        #: topic -> the inbox of the agent that reads it in runs (:mod:`.batches`)
        self.batch_inboxes: dict[str, BatchInbox] = {}

    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:  # noqa: ASYNC109 - faust's signature
        self._fetched_at = (self.seek_epoch, self.tp_seek_epochs.copy())
        return await super()._getmany(active_partitions, timeout)  # type: ignore[misc]  # faust's, after this mixin in PinConsumer

    def _sought_since_fetch(self, tp: TP) -> bool:
        epoch, tp_epochs = self._fetched_at
        return self.seek_epoch != epoch or self.tp_seek_epochs[tp] != tp_epochs[tp]

    async def perform_seek(self) -> None:
        """faust's seek of every partition to its committed offset, counted (see above)."""
        self.seek_epoch += 1
        self._no_seek_of_all.clear()
        try:
            await super().perform_seek()  # type: ignore[misc]  # faust's, after this mixin in PinConsumer
        finally:
            self.seek_epoch += 1
            self._delivered.clear()
            self._first_delivered.clear()
            self._no_seek_of_all.set()
        # Partitions never committed: their commit base is the log start (guards.py).
        await self.learn_log_starts(
            [
                tp
                for tp in self.assignment()
                if not self._committed_offset.get(tp) and self.app.topics.acks_enabled_for(tp.topic)
            ]
        )

    async def seek(self, partition: TP, offset: int) -> None:
        self.tp_seek_epochs[partition] += 1
        try:
            await super().seek(partition, offset)  # type: ignore[misc]  # faust's, after this mixin in PinConsumer
        finally:
            self.tp_seek_epochs[partition] += 1
            self._delivered.pop(partition, None)

    async def refetch(self, tp: TP, offset: int) -> None:
        """Deliver ``tp`` again from ``offset``: aiokafka's position and faust's read offset.

        Never concurrently with a seek of every partition: whichever of the two reached the
        consumer thread last would decide the position, and faust's read offset the other.
        """
        await self._no_seek_of_all.wait()
        self.tp_seek_epochs[tp] += 1
        try:
            try:
                await self._in_consumer_thread_seek(tp, offset)
            except IllegalStateError:  # revoked meanwhile: its next owner reads it
                self.log.info("%s: not fetched again from %d: no longer assigned", tp, offset)
                return
            self._read_offset[tp] = offset
        finally:
            self.tp_seek_epochs[tp] += 1
            self._delivered.pop(tp, None)

    async def _refetch_stale(self, tp: TP, offset: int) -> None:
        """``offset`` of ``tp`` was fetched before a seek of ``tp`` ended: fetch again from it,
        or from the read offset the seek left if that is lower."""
        await self._no_seek_of_all.wait()
        read = self._read_offset.get(tp)
        if read is None:  # sought to a partition without a commit: its log start
            read = self._log_start.get(tp, 0)
        self.log.info("%s: records fetched before a seek dropped; fetching again from %d", tp, min(offset, read))
        await self.refetch(tp, min(offset, read))

    async def _hand_off(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            blocked_on = coro.send(None)
        except StopIteration:
            return  # delivered without blocking
        await self.wait_first(_resume(coro, blocked_on), self.suspend_flow.wait())

    async def _hand_off_run(self, run: FetchedRun, inbox: BatchInbox) -> None:
        """Hand ``run`` to its inbox; abandoned (not queued) when flow is suspended meanwhile."""
        if not inbox.full():
            inbox.put_nowait(run)
            return
        await self.wait_first(inbox.put(run), self.suspend_flow.wait())

    async def _flush_run(self, runs: dict[TP, FetchedRun], tp: TP) -> None:
        """Hand over ``tp``'s pending run, or, if ``tp`` was sought since its fetch, drop it and
        fetch ``tp`` again from its first record (rule 1 for a whole run)."""
        run = runs.pop(tp)
        if self._sought_since_fetch(tp):
            self.stale_dropped += len(run.messages)
            await self._refetch_stale(tp, run.messages[0].offset)
            return
        await self._hand_off_run(run, self.batch_inboxes[tp.topic])

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover - faust's loop
        # faust's on_message is a coroutine function: its calls are handed over step by step (_resume)
        callback = cast(Callable[[Message], Coroutine[Any, Any, Any]], self.callback)
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        hand_off = self._hand_off
        flush_run = self._flush_run
        inboxes = self.batch_inboxes
        delivered = self._delivered
        first_delivered = self._first_delivered
        sought_since_fetch = self._sought_since_fetch
        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                refetched: set[TP] = set()
                #: partition -> records of this fetch not handed over yet (batch-read topics)
                runs: dict[TP, FetchedRun] = {}
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        if tp in refetched or sought_since_fetch(tp):  # 1. stale
                            self.stale_dropped += 1
                            if tp not in refetched:
                                refetched.add(tp)
                                run = runs.pop(tp, None)  # of the same fetch: stale too
                                if run is not None:
                                    self.stale_dropped += len(run.messages)
                                    offset = run.messages[0].offset
                                await self._refetch_stale(tp, offset)
                            continue
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            if r_offset is not None:
                                # 2. faust's read offset is the last offset handed over or, after
                                # a seek, the next one to read; only the former was delivered.
                                expected = r_offset + 1 if delivered.get(tp) == r_offset else r_offset
                                if offset > expected and acks_enabled_for(message.topic):
                                    if tp in runs:  # what came before the gap is good
                                        await flush_run(runs, tp)
                                        if sought_since_fetch(tp):  # 1. stale after all
                                            self.stale_dropped += 1
                                            refetched.add(tp)
                                            await self._refetch_stale(tp, offset)
                                            continue
                                    if await self._refetch_skipped(tp, expected, offset):
                                        refetched.add(tp)
                                        continue
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset:  # noqa: SIM102 - kept as faust's own code has it, to diff against upstream
                                if acks_enabled_for(message.topic):
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            inbox = inboxes.get(tp.topic) if inboxes else None
                            if inbox is not None:
                                # 3, for a run: booked as read now, handed over at the end of the
                                # fetch (or when full), where a seek meanwhile makes it stale.
                                run = runs.get(tp)
                                if run is None:
                                    run = runs[tp] = FetchedRun(tp, [], message.generation_id)
                                run.messages.append(message)
                                set_read_offset(tp, offset)
                                delivered[tp] = offset
                                first_delivered.setdefault(tp, offset)
                                if len(run.messages) >= inbox.run_events:
                                    await flush_run(runs, tp)
                                continue
                            await hand_off(callback(message))
                            if not sought_since_fetch(tp):  # 3. a seek meanwhile owns the read offset
                                set_read_offset(tp, offset)
                                delivered[tp] = offset
                                first_delivered.setdefault(tp, offset)
                    for tp in list(runs):
                        await flush_run(runs, tp)
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
