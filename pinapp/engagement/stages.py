"""The engagement stages over one batch, free of faust (``agents.engagement`` runs them).

Prepare: validate (malformed inputs dead-lettered), dedup (the ``seen`` table and the batch),
resolve pins (:mod:`.pins`), enrich and build rows. Commit: write rows, rollups and positions in
one transaction (exactly once, fenced), mark the events seen, wait until Kafka has the batch's
changelog records and dead letters. docs/architecture.md, "The engagement stages", says why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, Final, TypeVar

from config import PipelineSettings
from pinapp.domain.ddl import EXPOSURES
from pinapp.domain.dead_letters import is_replay
from pinapp.domain.dedup import PartitionSweeper, is_duplicate
from pinapp.domain.events import Event, EventType, parse_event
from pinapp.domain.geo import GeoLocation
from pinapp.domain.positions import Claim, PartitionWrite, WriteOutcome, WrittenEvent
from pinapp.domain.repin_points import RepinPoint, encode_points
from pinapp.domain.rows import UNKNOWN_CATEGORY, Row, RowBuilder, build_row, exposure_rows, ms_to_datetime, pin_row
from pinapp.domain.table_values import Pin, SeenEvent
from pinapp.engagement.pins import PinResolver
from pinapp.engagement.ports import DeadLetter, Locator, PartitionedTable, RowStore, SourceRecord
from pinapp.errors import InvalidEvent, LostOwnership, SinkError, StateStoreError
from pinapp.telemetry import health, metrics

__all__ = ["EngagementStages", "PreparedBatch"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Accepted:
    """An event that passed validation and dedup, on its way to a row."""

    source: SourceRecord
    event: Event
    pin: Pin | None = None
    row: Row | None = None
    geo: GeoLocation | None = None
    exposures: list[Row] | None = None  # its experiment_exposures rows, if it carries experiments


_T = TypeVar("_T")
_EVENT_TYPE: Final = attrgetter("event.event_type")
_EXPOSURES: Final = attrgetter("exposures")


@dataclass(slots=True)
class PreparedBatch:
    """A batch validated, deduplicated and enriched: what its commit writes."""

    batch: Sequence[SourceRecord]
    now_ms: int
    accepted: list[_Accepted]
    learned: dict[int, Row]  # id(accepted item) -> the pin row learned from its event
    claim: Claim


class EngagementStages:
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
        row_builder: RowBuilder = build_row,
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
        self.pin_resolver = PinResolver(pins, store, lru_size=settings.pin_lru_size)
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
    ) -> PreparedBatch:
        """Steps 1-4. ``in_flight``: event id -> (partition, offset) of the batch being written."""
        now_ms = int(time.time() * 1000)
        claim = self.claim(batch)
        accepted = await self._validate_and_dedup(batch, now_ms, in_flight or {})
        await self.pin_resolver.resolve(accepted)  # writes the pin cache: PinResolver says why
        learned = await self._enrich(accepted)
        return PreparedBatch(batch, now_ms, accepted, learned, claim)

    async def commit(self, prepared: PreparedBatch) -> None:
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
        duplicates = invalid = 0
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
            accepted.append(_Accepted(msg, event))
        metrics.DUPLICATES_DROPPED.inc(duplicates)
        metrics.STAGE_EVENTS.labels(stage="validate", outcome="dead_lettered").inc(invalid)
        metrics.STAGE_EVENTS.labels(stage="validate", outcome="out").inc(len(batch) - invalid)
        metrics.STAGE_EVENTS.labels(stage="dedup", outcome="duplicate").inc(duplicates)
        metrics.STAGE_EVENTS.labels(stage="dedup", outcome="out").inc(len(accepted))
        return accepted

    def _seen_entry(self, partition: int, event_id: str) -> SeenEvent | None:
        raw = self.seen.get(partition, event_id.encode())
        if raw is None:
            return None
        try:
            return SeenEvent.from_bytes(raw)
        except ValueError as exc:  # dedup falls back on the sink's primary key
            logger.warning("ignoring undecodable dedup entry of %r: %s", event_id, exc)
            return None

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
        prepared: PreparedBatch,
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

    async def _write(self, prepared: PreparedBatch) -> None:
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

    async def _write_one_by_one(self, prepared: PreparedBatch) -> WriteOutcome:
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
