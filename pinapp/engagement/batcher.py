"""The engagement stages over one batch, and batches overlapped: the topology's logic, free of faust.

``agents.engagement`` runs this on the batches faust fetches from ``events``; each stage
is a function of its own module (events, dedup, geo, rows) and this module orders them,
batch by batch:

1. validate every input; malformed ones are dead-lettered;
2. drop duplicates (the ``seen`` table), within the batch too (replays from the archive
   pass the seen check: their rows are kept single by primary key);
3. resolve each pin-related event's pin: the pin cache, then SingleStore, then the pin
   the event carries; else category ``unknown``;
4. enrich with geo-location and category, and build rows (and an ``experiment_exposures``
   row per experiment an event carries);
5. write all rows in one transaction with the rollups they add to and each partition's
   position (:mod:`pinapp.domain.positions`: exactly once, fenced against a zombie; retried
   while the database is down);
6. only then mark the events seen and sweep expired dedup entries;
7. wait until Kafka has the batch's changelog records and dead letters.

Steps 1-4 *prepare* a batch, 5-7 *commit* it. :class:`OverlappedBatches` prepares batch
N+1 while batch N's transaction runs in the database; commits begin in order, one at a
time, and a batch is acknowledged only once its commit is done, so offsets are committed
only for events whose rows are in SingleStore (exactly once there, by the positions) and
whose dead letters and changelog records are in Kafka. A failing local store or Kafka
refusing a send is an outage: the batch waits and is tried again, nothing is dead-lettered.
The events of the batch being written count as already in the batch for dedup, so a
duplicate that straddles two batches is dropped as one within a batch is.

What the stages need from the worker is a few small interfaces (as the archiver's
:class:`~pinapp.archive.archiver.PartitionControl`): the changelog-backed tables as
:class:`PartitionedTable`, the database as :class:`RowStore`, the dead-letter topic as
:class:`DeadLetter`, the live topic as a ``publish`` coroutine. The worker passes faust's
(``BatchedTable``, ``EngagementStore``, the topics' ``send``); the unit tests pass
in-memory ones (tests/unit/test_engagement_batcher.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, Final, Protocol, TypeVar

from cachetools import LRUCache

from config import PipelineSettings
from pinapp.domain import dead_letters
from pinapp.domain.ddl import EXPOSURES
from pinapp.domain.dead_letters import is_replay
from pinapp.domain.dedup import PartitionSweeper, is_duplicate
from pinapp.domain.events import Event, EventType, parse_event
from pinapp.domain.geo import GeoLocation
from pinapp.domain.positions import Claim, PartitionWrite, WriteOutcome, WrittenEvent
from pinapp.domain.repin_points import RepinPoint, encode_points
from pinapp.domain.rows import UNKNOWN_CATEGORY, Row, build_row, exposure_rows, ms_to_datetime, pin_row
from pinapp.domain.table_values import Pin, SeenEvent
from pinapp.errors import InvalidEvent, LostOwnership, SinkError, StateStoreError, StateStoreLost
from pinapp.telemetry import health, metrics

__all__ = [
    "DeadLetter",
    "EngagementBatcher",
    "Locator",
    "OverlappedBatches",
    "PartitionedTable",
    "RowStore",
    "SourceRecord",
]

logger = logging.getLogger(__name__)


class SourceRecord(dead_letters.SourceRecord, Protocol):
    """A consumed record of the events topic (faust's ``Message`` is one), with its headers."""

    @property
    def headers(self) -> Any: ...  # pairs or a mapping, as faust gives them


class PartitionedTable(Protocol):
    """A changelog-backed table read and written by partition (``BatchedTable`` in the worker).

    Writes are seen by later reads at once; :meth:`flush` sends their changelog records.
    """

    def get(self, partition: int, key: bytes) -> Any: ...
    def set(self, partition: int, key: bytes, value: Any) -> None: ...
    def set_many(self, partition: int, items: Iterable[tuple[bytes, Any]]) -> None: ...
    def delete_many(self, partition: int, keys: Iterable[bytes]) -> None: ...
    def partition_items(self, partition: int) -> Callable[[bytes | None], Iterator[tuple[bytes, bytes]]]:
        """``items(from_key)``: the partition's raw pairs in key order (what the dedup sweeper walks)."""

    async def flush(self) -> None: ...
    async def unconfirmed(self) -> list[BaseException]:
        """Wait for the changelog records flushed so far; send again what Kafka did not take."""


class RowStore(Protocol):
    """The SingleStore tables (``EngagementStore`` in the worker)."""

    async def write(self, writes: Sequence[PartitionWrite], claim: Claim) -> WriteOutcome:
        """Write in one transaction, exactly once; retries outages, raises ``SinkError`` if rows are rejected."""

    async def fetch_pins(self, pin_ids: Iterable[str]) -> dict[str, Pin]: ...


class Locator(Protocol):
    """IP -> location (``GeoLocator`` in the worker)."""

    def lookup(self, ip: str) -> GeoLocation: ...


class DeadLetter(Protocol):
    """Sends an input to the dead-letter topic (``pinapp.topology.topics.dead_letters``)."""

    async def __call__(self, record: Any, reason: str, *, kind: str, stage: str) -> None: ...
    async def unconfirmed(self) -> list[BaseException]:
        """Wait for the dead letters sent so far; send again what Kafka did not take."""


@dataclass(slots=True)
class _Accepted:
    """An event that passed validation and dedup, on its way to a row."""

    source: SourceRecord
    event: Event
    pin: Pin | None
    row: Row | None = None
    geo: GeoLocation | None = None
    exposures: list[Row] | None = None  # its experiment_exposures rows, if it carries experiments


_T = TypeVar("_T")
_EVENT_TYPE: Final = attrgetter("event.event_type")
_EXPOSURES: Final = attrgetter("exposures")


@dataclass(slots=True)
class _Prepared:
    """A batch validated, deduplicated and enriched: what its commit writes."""

    batch: Sequence[SourceRecord]
    now_ms: int
    accepted: list[_Accepted]
    learned: dict[int, Row]  # id(accepted item) -> the pin row learned from its event
    claim: Claim


class EngagementBatcher:
    """Runs the stages over one batch. One instance per agent, for the worker's life."""

    def __init__(
        self,
        store: RowStore,
        geo: Locator,
        *,
        seen: PartitionedTable,
        pins: PartitionedTable,
        dead_letter: DeadLetter,
        publish_live: Callable[[bytes], Awaitable[Any]],
        settings: PipelineSettings,
        claim: Callable[[Sequence[SourceRecord]], Claim] = lambda batch: Claim("pinapp", 0),
        row_builder: Callable[[Event, GeoLocation, Pin | None, datetime], Row] = build_row,
    ) -> None:
        self.store = store
        self.geo = geo
        self.seen = seen  # event_id -> SeenEvent bytes
        self.pins = pins  # pin_id -> Pin
        self.dead_letter = dead_letter
        self.publish_live = publish_live
        self.claim = claim  # who writes a batch: this worker, in the group generation it was fetched in
        self.max_bytes = settings.max_event_bytes
        self.horizon_ms = int(settings.dedup_horizon_s * 1000)
        self.future_skew_ms = int(settings.future_skew_s * 1000)
        self.sweep_per_event = settings.dedup_sweep_per_event
        # Decoded pins, in front of the pin cache table: pins do not change, and popular
        # pins are read for most events. Filled on every read and write of the table.
        self.recent_pins: LRUCache[str, Pin] = LRUCache(maxsize=max(1, settings.pin_lru_size))
        self.sweeper = PartitionSweeper(decode_key=bytes.decode, decode_value=SeenEvent.from_bytes)
        self.build_row = row_builder  # build_row; the fault tests' poisoning one (pinapp.topology.fault_hooks)

    async def process_one_by_one(self, batch: Sequence[SourceRecord]) -> None:
        """Process the events of a batch that failed as a whole, one by one.

        An exception escaping a batch would stop the agent (and its partitions) for good;
        the batch would be fetched again and fail again. An event that fails on its own is
        dead-lettered (kind ``poison``, stage ``process``) and the partition moves on.
        Database and broker outages never get here: they are retried inside.
        """
        for source in batch:
            try:
                await self.process([source])
            except StateStoreError:
                raise  # an outage, not this event's fault: the batch waits (OverlappedBatches)
            except Exception as exc:
                logger.exception("event %s[%d]@%d failed on its own", source.topic, source.partition, source.offset)
                await self.dead_letter(source, f"processing failed: {exc!r}", kind="poison", stage="process")
                metrics.STAGE_EVENTS.labels(stage="process", outcome="dead_lettered").inc()

    async def process(self, batch: Sequence[SourceRecord]) -> None:
        await self.commit(await self.prepare(batch))

    async def prepare(
        self, batch: Sequence[SourceRecord], *, in_flight: Mapping[str, tuple[int, int]] | None = None
    ) -> _Prepared:
        """Steps 1-4. ``in_flight``: event id -> (partition, offset) of the batch being written."""
        now_ms = int(time.time() * 1000)
        claim = self.claim(batch)
        accepted = await self._validate_and_dedup(batch, now_ms, in_flight or {})
        await self._resolve_missing_pins(accepted)
        learned = await self._enrich(accepted)
        return _Prepared(batch, now_ms, accepted, learned, claim)

    async def commit(self, prepared: _Prepared) -> None:
        """Steps 5-6, then the changelog records and the live feed; returns once Kafka has every
        changelog record and dead letter of the batch (only then may it be acked)."""
        await self._write(prepared)
        self._mark_seen_and_sweep(prepared.accepted, prepared.now_ms)
        await self.seen.flush()
        await self.pins.flush()
        await self._publish_live(prepared.accepted)
        await self._confirm_sends()

    async def _confirm_sends(self) -> None:
        """Wait until Kafka has taken every changelog record and dead letter sent so far,
        sending again what it refused (a broker outage: the batch waits, ``/health`` says so).

        faust's commit flushes the producer but does not fail on a send that failed after its
        hand-off, so without this a batch's offsets could be committed past a lost dead letter
        or a changelog record a restarted worker would miss.
        """
        kafka = health.sink("kafka")
        delay = 0.2
        while True:
            errors = [
                *await self.seen.unconfirmed(),
                *await self.pins.unconfirmed(),
                *await self.dead_letter.unconfirmed(),
            ]
            if not errors:
                if not kafka.ok:
                    kafka.succeeded()
                return
            kafka.failed(errors[0])
            logger.warning(
                "Kafka did not take %d changelog or dead-letter batch(es): %r; sent again, the batch waits",
                len(errors),
                errors[0],
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _validate_and_dedup(
        self, batch: Sequence[SourceRecord], now_ms: int, in_flight: Mapping[str, tuple[int, int]]
    ) -> list[_Accepted]:
        accepted: list[_Accepted] = []
        in_batch: dict[str, tuple[int, int]] = dict(in_flight)
        duplicates = from_event = hits = invalid = 0
        for msg in batch:
            try:
                event = parse_event(msg.value or b"", max_bytes=self.max_bytes)
            except InvalidEvent as exc:
                await self.dead_letter(msg, exc.reason, kind=exc.kind, stage="validate")
                invalid += 1
                continue
            where = (msg.partition, msg.offset)
            first = in_batch.get(event.event_id)
            if first is not None and first != where:
                duplicates += 1
                continue
            seen = self._seen_entry(msg.partition, event.event_id)
            # A replay from the archive restores rows, so it passes the seen check; the
            # tables' primary keys keep its rows single (see pinapp.archive.replay).
            if is_duplicate(seen, msg.partition, msg.offset, now_ms, self.horizon_ms) and not is_replay(msg.headers):
                duplicates += 1
                continue
            in_batch[event.event_id] = where
            pin: Pin | None = None
            if event.event_type is EventType.PIN:
                assert event.carried_pin is not None, "a pin event always carries its pin"
                pin = Pin.from_event_field(event.carried_pin)
                self._save_pin(msg.partition, pin)
                from_event += 1
            elif event.pin_id is not None:
                pin = self._cached_pin(msg.partition, event.pin_id)
                hits += pin is not None
            accepted.append(_Accepted(msg, event, pin))
        metrics.DUPLICATES_DROPPED.inc(duplicates)
        metrics.STAGE_EVENTS.labels(stage="validate", outcome="dead_lettered").inc(invalid)
        metrics.STAGE_EVENTS.labels(stage="validate", outcome="out").inc(len(batch) - invalid)
        metrics.STAGE_EVENTS.labels(stage="dedup", outcome="duplicate").inc(duplicates)
        metrics.STAGE_EVENTS.labels(stage="dedup", outcome="out").inc(len(accepted))
        metrics.PIN_CACHE.labels(result="event").inc(from_event)
        metrics.PIN_CACHE.labels(result="hit").inc(hits)
        return accepted

    async def _resolve_missing_pins(self, accepted: list[_Accepted]) -> None:
        """Cache misses: one SingleStore lookup for the batch, then the event's own pin."""
        missing = [a for a in accepted if a.pin is None and a.event.pin_id is not None]
        if not missing:
            return
        from_db = await self.store.fetch_pins(a.event.pin_id for a in missing)  # type: ignore[misc]  # not None: filtered above
        for item in missing:
            pin_id = item.event.pin_id
            assert pin_id is not None
            cached = self._cached_pin(
                item.source.partition, pin_id
            )  # an earlier event of this batch may have filled it
            if cached is not None:
                item.pin = cached
                metrics.PIN_CACHE.labels(result="hit").inc()
            elif pin_id in from_db:
                item.pin = from_db[pin_id]
                self._save_pin(item.source.partition, item.pin)
                metrics.PIN_CACHE.labels(result="database").inc()
            elif item.event.carried_pin is not None:
                item.pin = Pin.from_event_field(item.event.carried_pin)
                self._save_pin(item.source.partition, item.pin)
                metrics.PIN_CACHE.labels(result="event").inc()
            else:
                metrics.PIN_CACHE.labels(result="miss").inc()

    def _seen_entry(self, partition: int, event_id: str) -> SeenEvent | None:
        raw = self.seen.get(partition, event_id.encode())
        if raw is None:
            return None
        try:
            return SeenEvent.from_bytes(raw)
        except ValueError as exc:  # dedup falls back on the sink's primary key
            logger.warning("ignoring undecodable dedup entry of %r: %s", event_id, exc)
            return None

    def _cached_pin(self, partition: int, pin_id: str) -> Pin | None:
        pin = self.recent_pins.get(pin_id)
        if pin is None:
            pin = self.pins.get(partition, pin_id.encode())
            if pin is not None:
                self.recent_pins[pin_id] = pin
        return pin

    def _save_pin(self, partition: int, pin: Pin) -> None:
        self.pins.set(partition, pin.pin_id.encode(), pin)
        self.recent_pins[pin.pin_id] = pin

    async def _enrich(self, accepted: list[_Accepted]) -> dict[int, Row]:
        learned_pins: dict[int, Row] = {}
        ingested_at = datetime.now(UTC).replace(tzinfo=None)
        poisoned: list[_Accepted] = []
        for item in accepted:
            event = item.event
            try:
                item.geo = geo = self.geo.lookup(event.ip)
                item.row = self.build_row(event, geo, item.pin, ingested_at)
                if event.event_type is not EventType.PIN and event.carried_pin is not None and item.pin is not None:
                    learned_pins[id(item)] = pin_row(event, geo, item.pin, ingested_at)
                if event.experiments is not None:
                    item.exposures = exposure_rows(event, ingested_at)
            except Exception as exc:  # a poison event must never stall its partition
                logger.exception("enrichment failed for event %r", event.event_id)
                await self.dead_letter(item.source, f"enrichment failed: {exc!r}", kind="poison", stage="enrich")
                poisoned.append(item)
                learned_pins.pop(id(item), None)
        for item in poisoned:
            accepted.remove(item)
        metrics.STAGE_EVENTS.labels(stage="enrich", outcome="dead_lettered").inc(len(poisoned))
        metrics.STAGE_EVENTS.labels(stage="enrich", outcome="out").inc(len(accepted))
        return learned_pins

    def _partition_writes(
        self,
        prepared: _Prepared,
        items: Iterable[_Accepted],
        *,
        learned: bool = True,
        records: Iterable[SourceRecord] | None = None,
    ) -> list[PartitionWrite]:
        """``items`` by partition: the position moves past ``records`` (the whole batch by default:
        a dead-lettered record's offset too), the accepted events' rows are written."""
        writes: dict[int, PartitionWrite] = {}
        newest: dict[int, int] = {}  # partition -> its newest event time (ms) up to the clock's skew
        on_time = prepared.now_ms + self.future_skew_ms
        future = 0
        for msg in prepared.batch if records is None else records:
            w = writes.get(msg.partition)
            if w is None:
                writes[msg.partition] = PartitionWrite(msg.partition, msg.offset + 1)
            elif msg.offset >= w.next_offset:
                w.next_offset = msg.offset + 1
        for item in items:
            assert item.row is not None
            w = writes[item.source.partition]
            ts_ms = item.event.ts_ms
            w.events.append(
                WrittenEvent(
                    item.source.offset,
                    item.event.event_type,
                    item.row,
                    ts_ms,
                    prepared.learned.get(id(item)) if learned else None,
                    item.exposures or (),
                )
            )
            if ts_ms > on_time:  # a client's clock ahead: never "processed up to" the future
                future += 1
            elif ts_ms > newest.get(w.partition, 0):
                newest[w.partition] = ts_ms
        if future and records is None:
            metrics.FUTURE_EVENTS.inc(future)
        for partition, ts_ms in newest.items():
            writes[partition].event_ts = ms_to_datetime(ts_ms)
        return list(writes.values())

    async def _write(self, prepared: _Prepared) -> None:
        accepted = prepared.accepted
        started = time.perf_counter()
        try:
            outcome = await self.store.write(self._partition_writes(prepared, accepted), prepared.claim)
        except SinkError:
            outcome = await self._write_one_by_one(prepared)
        if outcome.lost:
            # A zombie's records: the new owner writes them; nothing of them is marked or shown here.
            logger.warning("%s", LostOwnership(outcome.lost))
            dropped = [a for a in accepted if a.source.partition in outcome.lost]
            for item in dropped:
                accepted.remove(item)
            metrics.STAGE_EVENTS.labels(stage="sink", outcome="lost_ownership").inc(len(dropped))
        metrics.STAGE_EVENTS.labels(stage="sink", outcome="already_written").inc(outcome.already_written)
        metrics.SINK_BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.SINK_BATCH_ROWS.observe(len(accepted))
        metrics.STAGE_EVENTS.labels(stage="sink", outcome="out").inc(len(accepted))
        for event_type, n in Counter(map(_EVENT_TYPE, accepted)).items():
            metrics.ROWS_WRITTEN.labels(table=event_type.value).inc(n)
        metrics.ROWS_WRITTEN.labels(table=EXPOSURES.name).inc(sum(map(len, filter(None, map(_EXPOSURES, accepted)))))

    async def _write_one_by_one(self, prepared: _Prepared) -> WriteOutcome:
        """The database rejected the batch: find the rows it rejects and dead-letter them.

        Each event is written alone (its learned pin row, if refused, dropped with a log line:
        the cache still has the pin); then the batch's positions, past the refused records too.
        """
        accepted = prepared.accepted
        logger.warning("batch rejected by the database; writing %d rows one by one", len(accepted))
        rejected: list[_Accepted] = []
        lost: set[int] = set()
        already = 0
        for item in accepted:
            outcome = None
            for learned in (True, False):
                if not learned and id(item) not in prepared.learned:
                    break
                one = self._partition_writes(prepared, [item], learned=learned, records=[item.source])
                try:
                    outcome = await self.store.write(one, prepared.claim)
                    break
                except SinkError as exc:
                    if learned and id(item) in prepared.learned:
                        logger.warning("the pin learned from event %r was rejected: %s", item.event.event_id, exc)
                        continue
                    await self.dead_letter(item.source, str(exc), kind="rejected", stage="sink")
                    rejected.append(item)
            if outcome is not None:
                lost |= outcome.lost
                already += outcome.already_written
        for item in rejected:
            accepted.remove(item)
        metrics.STAGE_EVENTS.labels(stage="sink", outcome="dead_lettered").inc(len(rejected))
        positions = await self.store.write(self._partition_writes(prepared, ()), prepared.claim)
        return WriteOutcome(frozenset(lost | positions.lost), already)

    async def _publish_live(self, accepted: list[_Accepted]) -> None:
        """The batch's written repins, as one record for every worker's ``/globe`` feed.

        After the sink: the globe shows what analysts can already query. At most once (a
        view, not a delivery path): a redelivered batch may show its repins again.
        """
        points = [
            RepinPoint(
                event_id=item.event.event_id,
                pin_id=item.event.pin_id or "",
                category=item.pin.category if item.pin is not None else UNKNOWN_CATEGORY,
                country=item.geo.country,
                city=item.geo.city,
                lat=item.geo.latitude,
                lon=item.geo.longitude,
                ts=item.event.ts_ms,
                kafka_ts=int(item.source.timestamp * 1000),
            )
            for item in accepted
            if item.event.event_type is EventType.REPIN
            and item.geo is not None
            and item.geo.latitude is not None
            and item.geo.longitude is not None
        ]
        if points:
            await self.publish_live(encode_points(points))
            metrics.LIVE_PUBLISHED.inc(len(points))

    def _mark_seen_and_sweep(self, accepted: list[_Accepted], now_ms: int) -> None:
        per_partition: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
        for item in accepted:
            msg = item.source
            per_partition[msg.partition].append(
                (item.event.event_id.encode(), SeenEvent(now_ms, msg.partition, msg.offset).to_bytes())
            )
        for partition, marks in per_partition.items():
            self.seen.set_many(partition, marks)
            expired = self.sweeper.expired_keys(
                partition,
                self.seen.partition_items(partition),
                budget=self.sweep_per_event * len(marks),
                now_ms=now_ms,
                horizon_ms=self.horizon_ms,
            )
            if expired:
                self.seen.delete_many(partition, [key.encode() for key in expired])


class OverlappedBatches:
    """Batch N+1 is prepared while batch N commits; a batch is acknowledged once committed.

    The database works on one core while the worker's thread prepares the next batch on the
    other. Commits run one at a time, in the order batches were taken (the dedup marks and
    the pins rule assume it). A batch whose preparation or commit raises is processed again
    event by event (:meth:`EngagementBatcher.process_one_by_one`) before anything after it
    commits. ``done`` is called with each batch once it is committed, before its ack.
    """

    def __init__(
        self,
        batcher: EngagementBatcher,
        ack: Callable[[Sequence[Any]], None],
        done: Callable[[Sequence[Any]], None] | None = None,
        *,
        state_retry_max_s: float = 300.0,
        data_dir: str = "worker.data_dir",
    ) -> None:
        self.batcher = batcher
        self._ack = ack
        self._done = done
        self._committing: asyncio.Future[None] | None = None
        self._committing_ids: dict[str, tuple[int, int]] = {}
        self._state_retry_max_s = state_retry_max_s
        self._data_dir = data_dir

    async def _store_retrying(self, what: Callable[[], Awaitable[_T]]) -> _T:
        """``what()``, tried again while the local table store fails (an outage: the partitions
        wait, ``/health`` says so); :class:`StateStoreLost` once it has failed for
        ``state_retry_max_s``. Trying again is safe: the database write is exactly once."""
        state = health.sink("state")
        started = time.monotonic()
        delay = 0.2
        while True:
            try:
                result = await what()
            except StateStoreError as exc:
                state.failed(exc)
                if time.monotonic() - started > self._state_retry_max_s:
                    raise StateStoreLost(
                        f"the local table store under {self._data_dir} failed for "
                        f"{self._state_retry_max_s:.0f} s ({exc}); free space or replace the disk, or delete the "
                        "folder (the tables are rebuilt from their changelogs), then restart the worker"
                    ) from exc
                logger.warning("%s; the batch waits and is tried again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if not state.ok:
                state.succeeded()
            return result

    async def submit(self, batch: Sequence[SourceRecord]) -> None:
        """Prepare ``batch`` (while the previous one commits), then start its commit."""
        metrics.EVENTS_IN.inc(len(batch))
        try:
            prepared = await self._store_retrying(lambda: self.batcher.prepare(batch, in_flight=self._committing_ids))
        except StateStoreLost:
            raise
        except Exception:
            logger.exception("a batch of %d events failed; retrying its events one by one", len(batch))
            await self.drain()
            await self._store_retrying(lambda: self.batcher.process_one_by_one(batch))
            self._committed(batch)
            return
        await self.drain()
        self._committing_ids = {a.event.event_id: (a.source.partition, a.source.offset) for a in prepared.accepted}
        self._committing = asyncio.ensure_future(self._commit(prepared))

    async def drain(self) -> None:
        """Wait for the batch being committed (its failure, isolated, included)."""
        committing, self._committing = self._committing, None
        if committing is not None:
            await committing
        self._committing_ids = {}

    async def cancel(self) -> None:
        """Stop: a batch still being committed is not acknowledged (it is fetched again)."""
        committing, self._committing = self._committing, None
        if committing is not None and not committing.done():
            committing.cancel()
            await asyncio.gather(committing, return_exceptions=True)

    async def _commit(self, prepared: _Prepared) -> None:
        await self._store_retrying(lambda: self._commit_or_isolate(prepared))
        # Its ids are marked seen now, and the dedup table decides from here on: kept in
        # flight, they would make a resend look like a duplicate past the horizon.
        self._committing_ids = {}
        self._committed(prepared.batch)

    async def _commit_or_isolate(self, prepared: _Prepared) -> None:
        try:
            await self.batcher.commit(prepared)
        except StateStoreError:
            raise
        except Exception:
            logger.exception("a batch of %d events failed; retrying its events one by one", len(prepared.batch))
            await self.batcher.process_one_by_one(prepared.batch)

    def _committed(self, batch: Sequence[SourceRecord]) -> None:
        if self._done is not None:
            self._done(batch)
        self._ack(batch)
