"""The consumer's fetch loop: a task-free hand-off, and no record of a batch fetched before a seek.

**Hand-off.** faust-streaming 0.15.3 hands every fetched message to its stream with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: four futures and an
``asyncio.wait`` per message, so that a hand-off blocked on a full stream buffer can be
abandoned when a rebalance suspends flow. Here the hand-off coroutine is first stepped
synchronously. Almost always the stream buffer has room and it completes at once: no task,
no wait. Only when it blocks is it finished under the original ``wait_first``, which still
abandons it when flow is suspended: faust's promise is kept.

**Seek epochs** (the consumer half of the recovery-race fix; the other half is
:mod:`pinapp.topology.faust_ext.recovery`). faust's ``getmany`` keeps yielding the batch it fetched
until flow stops or the generation changes, but not when a partition is *sought*. A seek
sets faust's read offset back to the committed offset; a record of the old batch handed
over after it sets the read offset past the records the seek is about to fetch again, and
those are then dropped as already read ("DROPPED MESSAGE ROFF"): a hole in the acked
offsets, never filled. So every seek counts itself, at its start and at its end, for all
partitions (``perform_seek``) or for one (``seek``, and pinapp's own refetches), and each
fetch notes the counts when it is sent to the consumer thread. A record of a partition
sought since its fetch was sent is *stale*: the fetch may have read before or after the
seek took effect, so which records come next is unknown.

The protocol, in order, for each fetched record of partition P:

1. stale (P sought since the fetch was sent): drop it and the rest of P's records in this
   batch, and fetch P again from the lower of this offset and the read offset the seek
   left (at most one such refetch per partition and batch). Nothing is lost whichever
   side of the seek the fetch read, and nothing of the old batch moves the read offset;
2. the gap guard (:mod:`pinapp.topology.faust_ext.guards`) when it follows a gap;
3. hand it over; then, unless P was sought meanwhile, record its offset as read (a record
   whose hand-off straddled a seek is delivered, and may be processed twice: the sinks
   are idempotent).

**Runs** (topics read with :class:`pinapp.topology.faust_ext.batches.FetchedBatches`). A record of
such a topic is not handed over alone: after steps 1 and 2 it joins its partition's *run*
(its records of this fetch) and is booked as read at once, so step 2 sees the run as
delivered. A run is handed to the topic's inbox whole, when the fetch has been gone through
or when it reaches the agent's batch size, and before P is fetched again for a gap. At that
point step 1 applies to the whole run: if P was sought since the fetch, the run is dropped
and P fetched again from its first record (the seek, not the run, owns the read offset).

:meth:`HandoffConsumer._drain_messages` is faust's ``Consumer._drain_messages`` with these
changes (fingerprinted, :mod:`pinapp.topology.faust_ext.fingerprints`). Private faust names used:
``_read_offset``, ``_commit_every``, ``_n_acked``, ``_stopped``, ``_add_gap``, ``diag``
flags; none has a public equivalent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Coroutine
from typing import Any, cast

from aiokafka.errors import IllegalStateError
from faust.transport.consumer import CONSUMER_FETCHING
from faust.types import TP
from mode import Service, ServiceT

from pinapp.topology.faust_ext.batches import BatchInbox, FetchedRun

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


class HandoffConsumer:
    """The fetch loop, mixed into pinapp's consumer (:mod:`.app`) with the guards."""

    # Set by faust's consumer and the guards (.guards), with which this is mixed into PinConsumer.
    _read_offset: Any
    _committed_offset: Any
    _n_acked: int
    _commit_every: int | None
    _log_start: dict[TP, int]
    app: Any
    log: Any
    diag: Any
    transport: Any
    callback: Any
    getmany: Any
    suspend_flow: asyncio.Event
    should_stop: Any
    consumer_stopped_errors: tuple[type[BaseException], ...]
    assignment: Any
    sleep: Any
    wait_first: Any
    commit: Any
    learn_log_starts: Any
    _in_consumer_thread_seek: Any
    _refetch_skipped: Any
    _add_gap: Any

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
        callback = self.callback
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
