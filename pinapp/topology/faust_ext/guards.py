"""The commit rule, and the two guards that fetch again what faust would otherwise lose.

Design notes: docs/architecture.md, "pinapp/topology/faust_ext/guards.py".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

from faust.types import TP, Message
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from pinapp.telemetry.metrics import COMMIT_HOLES, FETCH_GAPS
from pinapp.topology.faust_ext.contract import MixinBase

__all__ = ["CommitGuards", "HoleWatch", "next_commit"]


def next_commit(acked: Sequence[int], base: int | None) -> tuple[int | None, int]:
    """Where the commit may move, and how many acked offsets that consumes.

    ``acked`` is sorted. Offsets below ``base`` (acked again after a seek back) are
    consumed without moving anything. The commit moves to ``last + 1`` of the consecutive
    run that starts exactly at ``base``; when the lowest offset at or above ``base`` is not
    ``base`` itself, there is a hole and the commit stays (``None``). An unknown base
    (``None``: the log start not learned yet) commits nothing.
    """
    if base is None:
        return None, 0
    i = 0
    while i < len(acked) and acked[i] < base:
        i += 1
    if i == len(acked) or acked[i] != base:
        return None, i
    expected = base
    while i < len(acked) and acked[i] <= expected:
        if acked[i] == expected:
            expected += 1
        i += 1
    return expected, i


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

    def overdue(self, tp: Any, base: int, *, in_flight: bool, after_s: float) -> bool:
        if in_flight:
            self.forget(tp)  # its stream will ack it
            return False
        since = self._since.get(tp)
        if since is None or since[0] != base:
            self._since[tp] = (base, self._clock())
            return False
        if self._clock() - since[1] < after_s:
            return False
        self.forget(tp)
        return True


class CommitGuards(MixinBase):
    """The commit rule and both guards, mixed into pinapp's consumer (:mod:`.app`)."""

    def _init_guards(self) -> None:
        self._holes = HoleWatch()
        #: partition -> its log start offset, the commit base of a partition never committed
        self._log_start: dict[TP, int] = {}
        self._log_start_pending: set[TP] = set()
        #: the guards' background reads and re-fetches, held until done (asyncio keeps weak references)
        self._guard_tasks: set[asyncio.Future[Any]] = set()

    def _in_background(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(work)
        self._guard_tasks.add(task)
        task.add_done_callback(self._guard_tasks.discard)

    @property
    def guards_on(self) -> bool:
        return bool(getattr(self.app, "commit_guards", True))

    def committed(self, tp: TP) -> int | None:
        """The next offset this worker committed for ``tp`` (``None``: none, or 0)."""
        return self._committed_offset.get(tp)

    def commit_base(self, tp: TP) -> int | None:
        """The offset the next commit of ``tp`` must start at (see the module docstring)."""
        committed = self._committed_offset.get(tp)
        if committed:
            return int(committed)
        # faust's view says "never committed", but aiokafka starts a partition at the group's
        # commit when one exists by the time it fetches (another worker may just have made it):
        # where this worker really started reading, since the last seek, is the base then.
        first = self._first_delivered.get(tp)
        if first is not None:
            return int(first)
        start = self._log_start.get(tp)
        if start is None:
            self._learn_log_start(tp)
        return start

    def _learn_log_start(self, tp: TP) -> None:
        if tp in self._log_start_pending:
            return
        self._log_start_pending.add(tp)

        async def learn() -> None:
            try:
                starts = await self.earliest_offsets(tp)
                if starts.get(tp) is not None:
                    self._log_start[tp] = int(starts[tp])
            except Exception as exc:  # noqa: BLE001 - whatever failed, the next commit asks again
                self.log.warning("%s: could not read the log start offset: %r", tp, exc)
            finally:
                self._log_start_pending.discard(tp)

        self._in_background(learn())

    async def learn_log_starts(self, tps: Sequence[TP]) -> None:
        """Read the log start of partitions without a commit (after a seek to committed).

        Never raises: a failed read leaves the base unknown, and the next commit asks again.
        """
        if not tps:
            return
        try:
            starts = await self.earliest_offsets(*tps)
        except Exception as exc:  # noqa: BLE001 - never raises (see above): the next commit asks again
            self.log.warning("could not read the log start offsets of %s: %r", sorted(tps), exc)
            return
        for tp, offset in starts.items():
            if offset is not None:
                self._log_start[tp] = int(offset)

    def ack_batch(self, messages: Sequence[Message], in_flight: Iterable[Message]) -> None:
        """faust's ``Consumer.ack`` of every record of a processed batch, booked per partition.

        The same bookkeeping under the same lock, without a call, a lock and an acks-enabled
        lookup per record: each record not yet acked is marked acked, and its offset booked
        unless it is below the committed offset or booked already. Then ``in_flight``, what
        was put in faust's unacked set for the batch (:mod:`.batches` puts one record per
        taken run there, as the batch is acked whole), leaves it, and a commit waiting for
        acks (``wait_empty`` at a rebalance) is woken.
        """
        by_tp: dict[TP, list[int]] = {}
        with ack_lock:
            for message in messages:
                if not message.acked:
                    message.acked = True
                    offsets = by_tp.get(message.tp)
                    if offsets is None:
                        offsets = by_tp[message.tp] = []
                    offsets.append(message.offset)
            acks_enabled_for = self.app.topics.acks_enabled_for
            booked = 0
            for tp, offsets in by_tp.items():
                if not acks_enabled_for(tp.topic):
                    continue
                committed = self._committed_offset[tp]
                index, acked = self._acked_index[tp], self._acked[tp]
                for offset in offsets:
                    if (committed is None or offset >= committed) and offset not in index:
                        index.add(offset)
                        acked.append(offset)
                        booked += 1
            self._n_acked += booked
            for message in in_flight:
                self._unacked_messages.discard(message)
            notify(self._waiting_for_ack)

    def _new_offset(self, tp: TP) -> int | None:
        """The offset ``tp`` may be committed at now, by :func:`next_commit`.

        faust's gap intervals (booked by ``_add_gap`` for offsets retention deleted) count
        as acked, as in faust. With the hole guard on, a hole that lasted two commit
        intervals with nothing in flight to fill it is fetched again from the base.
        """
        acked = self._acked[tp]
        if not acked:
            return None
        if tp not in self.assignment():
            # Acks that came in after ``tp`` was revoked (faust had cleared its bookkeeping):
            # its next owner reads and commits those offsets; a commit here, or a hole
            # measured from a base faust no longer knows, would be wrong.
            self._forget_acks(tp)
            return None
        gaps = self._gap[tp]
        if gaps:  # faust's own merge of booked gaps into the acked offsets
            max_offset = max(acked)
            candidates = sorted(gaps.overlap(0, max_offset), key=lambda x: x.begin)
            if candidates:
                booked: list[int] = []
                for entry in candidates:
                    booked.extend(range(entry.begin, entry.end))
                acked.extend(booked)
                gaps.chop(0, max(booked[-1], max_offset + 1))
        acked.sort()
        base = self.commit_base(tp)
        offset, consumed = next_commit(acked, base)
        if consumed:
            done = acked[:consumed]
            acked[:consumed] = []
            self._acked_index[tp].difference_update(done)
        if offset is not None or base is None:
            self._holes.forget(tp)
            return offset
        if acked and self.guards_on:
            self._watch_hole(tp, base, acked[0])
        return None

    def _forget_acks(self, tp: TP) -> None:
        self._acked.pop(tp, None)
        self._acked_index.pop(tp, None)
        self._holes.forget(tp)

    def _watch_hole(self, tp: TP, base: int, low: int) -> None:
        in_flight = any(m.tp == tp and base <= m.offset < low for m in list(self._unacked_messages))
        if self._holes.overdue(tp, base, in_flight=in_flight, after_s=2 * self.commit_interval):
            COMMIT_HOLES.labels(topic=tp.topic, partition=str(tp.partition)).inc()
            self.log.warning(
                "%s: offsets %d-%d were handed to a stream but never acknowledged; fetching "
                "them again (the offsets after them are processed again too: the sinks are "
                "idempotent)",
                tp,
                base,
                low - 1,
            )
            self._in_background(self._refetch_from(tp, base))

    async def _refetch_skipped(self, tp: TP, first: int, offset: int) -> bool:
        """``offset`` arrived where ``first`` was due: fetch ``first`` .. ``offset - 1`` again;
        whether this record must be dropped (it comes again after them).

        Offsets below the log start (deleted by retention) cannot come again: only those
        are booked as a gap, with an error. With the guards off, faust's own behaviour
        (the whole gap booked as acked) is kept, as the reproduction needs.
        """
        if not self.guards_on:
            return False
        log_start = (await self.earliest_offsets(tp)).get(tp, 0)
        if first < log_start:
            self.log.error(
                "%s: offsets %d-%d were deleted (retention) before they were processed", tp, first, log_start - 1
            )
            if log_start >= offset:
                return False  # faust books them as acked: nothing there is left to read
            await self._add_gap(tp, first, log_start - 1)
            first = log_start
        FETCH_GAPS.labels(topic=tp.topic, partition=str(tp.partition)).inc()
        self.log.warning(
            "%s: faust skipped offsets %d-%d (fetched during a pause or rebalance); fetching them again",
            tp,
            first,
            offset - 1,
        )
        await self._refetch_from(tp, first)
        return True

    async def _refetch_from(self, tp: TP, offset: int) -> None:
        """Deliver ``tp`` again from ``offset`` (faust's read offset and aiokafka's position)."""
        await self.refetch(tp, offset)  # pinapp.topology.faust_ext.handoff
