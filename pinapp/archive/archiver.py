"""The archiver: buffers each partition's records, writes cuts to S3, acks only after.

Over 400 lines on purpose: one class keeps the four promises its design notes list, and its
buffer, writer and layout are modules of their own already; what is left shares one state.

Design notes: docs/architecture.md, "pinapp/archive/archiver.py".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from config import ArchiveSettings
from pinapp.archive.buffer import Cut, CutLimits, Delivery, ForcedCut, PartitionBuffer
from pinapp.archive.layout import hour_folder
from pinapp.archive.records import ArchivedRecord
from pinapp.archive.writer import ArchiveWriter, CutConflict, PartitionProgress, Step
from pinapp.errors import PinappError
from pinapp.telemetry import health
from pinapp.telemetry.metrics import (
    ARCHIVE_BYTES,
    ARCHIVE_CUT_CONFLICTS,
    ARCHIVE_CUTS,
    ARCHIVE_EVENTS,
    ARCHIVE_FUTURE_EVENTS,
    ARCHIVE_HOLES,
    ARCHIVE_S3_ERRORS,
)

__all__ = ["Archiver", "CutAbandoned", "PartitionControl"]

logger = logging.getLogger(__name__)

_HOUR_MS = 3_600_000


class CutAbandoned(PinappError):
    """A cut was given up (partition revoked or worker stopping); its records stay unacked."""


class PartitionControl(Protocol):
    """What the archiver needs from the Kafka consumer (faust's, in the worker)."""

    async def pause(self, topic: str, partition: int) -> None:
        """Stop fetching the partition; records already fetched are still delivered, none dropped."""

    async def resume(self, topic: str, partition: int) -> None: ...
    def highwater(self, topic: str, partition: int) -> int | None: ...
    def committed(self, topic: str, partition: int) -> int | None: ...
    def assigned(self) -> Iterable[tuple[str, int]]: ...
    def partition_count(self, topic: str) -> int | None: ...
    def release(self, deliveries: Iterable[Delivery]) -> None:
        """Stop waiting for these deliveries' acks; they stay uncommitted (read again later)."""

    async def refetch(self, topic: str, partition: int, offset: int) -> int:
        """Deliver the partition again from ``offset``, or from its log start if that is later
        (returned); its commit stays where it is."""


@dataclass
class _Partition:
    buffer: PartitionBuffer
    lock: asyncio.Lock
    next_offset: int  # one past the last offset written to S3 (or the first seen)
    last_seen: int = -1
    max_event_ms: int = 0


def _no_fault(step: str, number: int) -> None:
    pass


class Archiver:
    """Cuts, writes and acks the records of the partitions this worker owns."""

    def __init__(
        self,
        writer: ArchiveWriter,
        settings: ArchiveSettings,
        control: PartitionControl,
        *,
        on_step: Callable[[str, int], None] | None = None,
    ) -> None:
        self.writer = writer
        self.on_step = on_step or _no_fault  # the crash tests' SIGKILL (pinapp.topology.fault_hooks)
        self.settings = settings
        self.control = control
        self.limits = CutLimits(settings.max_events, settings.max_bytes, settings.max_age_s)
        self._partitions: dict[tuple[str, int], _Partition] = {}
        self._adopting = asyncio.Lock()
        self._epoch = 0
        self._epoch_ended = asyncio.Event()
        self._buffered = 0  # records in buffers and in cuts not yet acked or released
        self._cuts_written = 0
        self._finalized: set[tuple[str, str]] = set()
        #: partition -> the offset a hole's re-read ends before: until one below it comes, what the
        #: consumer still delivers from before the refetch is released
        self._refilling: dict[tuple[str, int], int] = {}

    # -- records in --------------------------------------------------------------------------

    async def add(self, record: ArchivedRecord, delivery: Delivery) -> None:
        """Buffer one record; write whatever cuts it completes (blocking while S3 is down)."""
        tp = (record.topic, record.partition)
        refill_end = self._refilling.get(tp)
        if refill_end is not None and record.offset >= refill_end:  # fetched before the hole's refetch
            self.control.release([delivery])
            return
        refetched = self._refilling.pop(tp, None) is not None  # the refetch: what it could not get is logged
        state = self._partitions.get(tp)
        if state is not None and record.offset <= state.last_seen:
            # The consumer went back (a seek to the committed offset): start over from here.
            logger.info("archive %s[%d]: rewound to offset %d; re-adopting", *tp, record.offset)
            self._forget(tp)
            state = None
        if state is None:
            try:
                state = await self._adopt(record.topic, record.partition, record.offset, check_hole=not refetched)
            except CutAbandoned:
                self.control.release([delivery])
                raise
            if state is None:  # a hole is fetched again first
                self.control.release([delivery])
                return
        state.last_seen = record.offset
        self._buffered += 1
        for cut in state.buffer.add(record, delivery):
            await self._write(state, cut)
        if self._buffered > self.settings.max_buffered_events:
            # Many partitions each below their thresholds: memory is bounded across all of them.
            largest = max(self._partitions.values(), key=lambda s: len(s.buffer))
            for cut in largest.buffer.take_all():
                await self._write(largest, cut)

    async def add_all(self, items: Iterable[tuple[ArchivedRecord, Delivery]], *, current: Callable[[], bool]) -> None:
        """Add a fetched batch's records in order while ``current()`` holds (no rebalance began
        since the batch was taken).

        From the first record for which it does not, the rest is *released*: neither buffered
        nor acked, so never committed, and not awaited by the hand-over (which flushed what
        was buffered before it; records added after that flush would wait for an age cut).
        Whoever owns the partition next reads them again. A cut abandoned on the way (revoked
        while S3 failed) is logged, and the records after it go on.
        """
        pending = iter(items)
        for record, delivery in pending:
            if not current():
                self.control.release([delivery, *(d for _, d in pending)])
                return
            try:
                await self.add(record, delivery)
            except CutAbandoned as exc:
                logger.warning("archive: %s", exc)

    async def _adopt(
        self, topic: str, partition: int, first_offset: int, *, check_hole: bool = True
    ) -> _Partition | None:
        """First record of a partition since it was assigned: learn the cuts already begun.

        ``None``: the committed offset is past the archive's end, and the hole is fetched again
        (see the module docstring); the records until it comes are released."""
        epoch = self._epoch
        async with self._adopting:
            existing = self._partitions.get((topic, partition))
            if existing is not None:
                return existing
            adoption = await self._retrying(
                topic,
                partition,
                "list intents",
                epoch,
                lambda: self.writer.adoption(topic, partition, first_offset),
            )
            if epoch != self._epoch:
                raise CutAbandoned(f"{topic}[{partition}]: revoked while reading its intents")
            if check_hole and await self._refill_hole(topic, partition, first_offset, adoption.archived_to, epoch):
                return None
            pending = adoption.pending
            if pending:
                logger.info(
                    "archive %s[%d]: re-cutting at %d intent(s) from offset %d (a previous owner "
                    "stopped between upload and commit)",
                    topic,
                    partition,
                    len(pending),
                    first_offset,
                )
            buffer = PartitionBuffer.adopting(topic, partition, self.settings.format, self.limits, pending)
            state = _Partition(buffer, asyncio.Lock(), first_offset)
            self._partitions[(topic, partition)] = state
            return state

    async def _refill_hole(
        self, topic: str, partition: int, first_offset: int, archived_to: int | None, epoch: int
    ) -> bool:
        """Whether offsets below ``first_offset`` were committed but never archived (the latest
        cut before them ends at ``archived_to``) and are being fetched again."""
        committed = self.control.committed(topic, partition)
        if archived_to is None or not committed or archived_to >= min(first_offset, committed):
            return False
        end = min(first_offset, committed)
        ARCHIVE_HOLES.labels(topic).inc()
        start = await self.control.refetch(topic, partition, archived_to)
        if epoch != self._epoch:  # revoked meanwhile: the next owner finds the hole itself
            raise CutAbandoned(f"{topic}[{partition}]: revoked while fetching a hole again")
        if start > archived_to:
            logger.error(
                "archive %s[%d]: offsets %d-%d were committed but never archived, and Kafka no longer has %d-%d "
                "(retention): they are missing from the archive (`pinapp archive verify` lists them)",
                topic,
                partition,
                archived_to,
                end - 1,
                archived_to,
                min(start, end) - 1,
            )
        if start >= end:
            return False
        logger.warning(
            "archive %s[%d]: offsets %d-%d were committed but never archived (the archive ends at %d); "
            "fetching them again from %d",
            topic,
            partition,
            archived_to,
            end - 1,
            archived_to - 1,
            start,
        )
        self._refilling[(topic, partition)] = end
        return True

    def _forget(self, tp: tuple[str, int]) -> None:
        state = self._partitions.pop(tp, None)
        if state is not None:
            self._buffered -= len(state.buffer.deliveries)
            self.control.release(state.buffer.deliveries)

    # -- writing -----------------------------------------------------------------------------

    async def _write(self, state: _Partition, cut: Cut) -> None:
        """Write ``cut`` (retrying), then ack its deliveries; on giving up, release them; refused
        (another archiver's intent at its first offset), cut again where that intent says."""
        epoch = self._epoch
        conflict: CutConflict | None = None
        try:
            async with state.lock:
                self._cuts_written += 1
                number = self._cuts_written

                async def on_step(step: Step) -> None:
                    self.on_step(step, number)

                try:
                    result = await self._retrying(
                        cut.topic,
                        cut.partition,
                        f"cut {cut.first}-{cut.last}",
                        epoch,
                        lambda: self.writer.write_cut(
                            cut.topic,
                            cut.partition,
                            cut.records,
                            cut.fmt,
                            on_step=on_step,
                            horizon_ms=self._horizon_ms(),
                            intent_last=cut.intent_last,
                        ),
                    )
                except CutConflict as exc:
                    conflict = exc
                    cut.settled = True  # its records and deliveries go back to the buffer
                else:
                    for delivery in cut.deliveries:
                        delivery.ack()
                    cut.acked = True
        finally:
            self._settle(cut)
        if conflict is not None:
            ARCHIVE_CUT_CONFLICTS.labels(cut.topic).inc()
            logger.warning("archive %s", conflict)
            for again in state.buffer.yield_to(cut, ForcedCut(conflict.first, conflict.last, conflict.fmt)):
                await self._write(state, again)
            return
        self.on_step("after_ack", number)
        state.next_offset = cut.last + 1
        state.max_event_ms = max(state.max_event_ms, result.max_event_ms)
        ARCHIVE_FUTURE_EVENTS.labels(cut.topic).inc(result.future)
        ARCHIVE_EVENTS.labels(cut.topic).inc(len(cut.records))
        ARCHIVE_BYTES.labels(cut.topic).inc(result.bytes_written)
        ARCHIVE_CUTS.labels(cut.topic).inc()
        logger.debug(
            "archived %s[%d] %d-%d in %d object(s)", cut.topic, cut.partition, cut.first, cut.last, len(result.keys)
        )

    def _settle(self, cut: Cut) -> None:
        """Done with ``cut``: written and acked, or (abandoned, cancelled) released unacked."""
        if cut.settled:
            return
        cut.settled = True
        self._buffered -= len(cut.deliveries)
        if not cut.acked:
            self.control.release(cut.deliveries)

    def _new_epoch(self) -> None:
        """Writes from before now give up at their next backoff (see :meth:`_retrying`)."""
        self._epoch += 1
        self._epoch_ended.set()
        self._epoch_ended = asyncio.Event()

    async def _retrying(self, topic: str, partition: int, what: str, epoch: int, call: Any) -> Any:
        """``await call()`` until it succeeds, pausing the partition while S3 fails.

        Gives up (:class:`CutAbandoned`) at a backoff once the epoch it started in has ended.
        """
        paused = False
        epoch_ended = self._epoch_ended if epoch == self._epoch else None

        def before_sleep(retry_state: RetryCallState) -> None:
            exc = retry_state.outcome.exception() if retry_state.outcome else None
            ARCHIVE_S3_ERRORS.inc()
            health.sink("s3").failed(exc or "unknown error")
            logger.warning(
                "archive %s[%d]: %s failed (attempt %d, %s); partition paused, retrying",
                topic,
                partition,
                what,
                retry_state.attempt_number,
                _describe(exc),
            )

        async def sleep(seconds: float) -> None:
            nonlocal paused
            if not paused:
                await self.control.pause(topic, partition)
                paused = True
            if epoch_ended is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(epoch_ended.wait(), seconds)
            if epoch != self._epoch:
                raise CutAbandoned(
                    f"{topic}[{partition}] {what}: given up (partitions handed over) while S3 was failing"
                )

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type((BotoCoreError, ClientError, OSError, asyncio.TimeoutError)),
                wait=wait_exponential_jitter(multiplier=0.2, jitter=0.2, max=self.settings.retry_max_s),
                before_sleep=before_sleep,
                sleep=sleep,
                reraise=True,
            ):
                with attempt:
                    # The client's read timeout does not cover a body the server stopped reading.
                    result = await asyncio.wait_for(call(), self.settings.request_timeout_s)
                    health.sink("s3").succeeded()
                    return result
        finally:
            if paused:
                await self.control.resume(topic, partition)
                logger.info("archive %s[%d]: S3 is back; partition resumed", topic, partition)
        raise AssertionError("unreachable")  # pragma: no cover - AsyncRetrying returns or raises

    # -- timers --------------------------------------------------------------------------------

    async def flush_due(self) -> None:
        """Write every partition's buffer that has reached its age limit."""
        for state in list(self._partitions.values()):
            cut = state.buffer.due()
            if cut is not None:
                await self._write(state, cut)

    async def flush_all(self) -> None:
        """Write everything buffered, then forget all partitions (revocation, shutdown).

        After ``archive.revoke_flush_timeout_s`` the remaining cuts are abandoned: their records
        stay unacked and uncommitted, and whoever owns the partition next re-reads and re-cuts them.
        """
        limit = self.settings.revoke_flush_timeout_s
        self._new_epoch()
        taken = [(state, cut) for state in list(self._partitions.values()) for cut in state.buffer.take_all()]

        async def flush() -> None:
            for state, cut in taken:
                await self._write(state, cut)

        try:
            await asyncio.wait_for(flush(), limit)
        except (TimeoutError, CutAbandoned):
            logger.warning(
                "archive: flush on revocation/shutdown gave up after %.1fs; the next owner "
                "re-reads the unflushed records",
                limit,
            )
            self._new_epoch()
        finally:
            for _, cut in taken:
                self._settle(cut)
            for tp in list(self._partitions):
                self._forget(tp)
            self._refilling.clear()

    @property
    def buffered(self) -> int:
        """Records held in memory, not yet in S3 (a gauge)."""
        return self._buffered

    async def collect_intents(self) -> int:
        """Delete intents below each owned partition's committed offset once older than
        ``archive.intent_retention_s`` (housekeeping; until then they fence zombies)."""
        removed = 0
        for topic, partition in list(self._partitions):
            committed = self.control.committed(topic, partition)
            if committed:
                with contextlib.suppress(BotoCoreError, ClientError, OSError):
                    removed += await self.writer.forget_cuts(
                        topic, partition, committed, older_than_s=self.settings.intent_retention_s
                    )
        return removed

    def _horizon_ms(self) -> int:
        """Event times past this are a fast clock's, not progress (``archive.future_skew_s``)."""
        return int((time.time() + self.settings.future_skew_s) * 1000)

    async def report_and_finalize(self, topics: Iterable[str]) -> list[str]:
        """Record each owned partition's progress, then put ``_SUCCESS`` where every partition is past.

        A partition's progress is the latest event time it archived, up to the archiver's own
        clock: an hour is complete once every partition has passed it and the clock is past it
        (plus ``finalize_delay_s``), never because some client's clock runs ahead.

        Returns the folders finalized now, as ``TOPIC/dt=.../hr=..``.
        """
        now_ms = int(time.time() * 1000)
        for topic, partition in self.control.assigned():
            state = self._partitions.get((topic, partition))
            high = self.control.highwater(topic, partition)
            if state is None:
                committed = self.control.committed(topic, partition)
                idle = high is not None and committed is not None and committed >= high
                progress = PartitionProgress(partition, committed or 0, now_ms) if idle else None
            else:
                idle = not state.buffer and high is not None and state.next_offset >= high
                progress = PartitionProgress(
                    partition, state.next_offset, max(state.max_event_ms, now_ms if idle else 0)
                )
            if progress is not None and progress.watermark_ms:
                watermark = min(progress.watermark_ms, now_ms)
                await self.writer.put_progress(topic, PartitionProgress(partition, progress.next_offset, watermark))
        done = []
        for topic in topics:
            progress_by_partition = await self.writer.progress(topic)
            expected = self.control.partition_count(topic)
            if not progress_by_partition or (expected and len(progress_by_partition) < expected):
                continue
            watermark = min(p.watermark_ms for p in progress_by_partition.values())
            ready_before = hour_folder(watermark - int(self.settings.finalize_delay_s * 1000) - _HOUR_MS)
            for folder in await self.writer.hour_folders(topic):
                if folder > ready_before or (topic, folder) in self._finalized:
                    continue
                if not await self.writer.is_finalized(topic, folder):
                    await self.writer.finalize(topic, folder)
                    done.append(f"{topic}/{folder}")
                self._finalized.add((topic, folder))
        return done


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code')}: {error.get('Message')}"
    return repr(exc)
