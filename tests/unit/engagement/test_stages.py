"""The engagement batch's rules, on in-memory tables, database and topics (no broker).

What the worker passes instead (faust's tables, SingleStore, the topics) is covered on the
real stack by tests/integration/test_pipeline.py; here each rule of
:mod:`pinapp.engagement.stages` is pinned down on its own: in-batch and table dedup, the
pin-resolution order, rows, dead letters by stage, and what happens only after the write.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from config import PipelineSettings, TestingSettings
from pinapp.domain.ddl import COLUMNS, EXPOSURES
from pinapp.domain.dead_letters import REPLAY_HEADER
from pinapp.domain.events import EventType
from pinapp.domain.geo import GeoLocation
from pinapp.domain.positions import Claim, PartitionWrite, Stored, WriteOutcome, may_write
from pinapp.domain.repin_points import decode_points
from pinapp.domain.rows import UNKNOWN_CATEGORY, ms_to_datetime
from pinapp.domain.table_values import Pin, SeenEvent
from pinapp.engagement.overlap import OverlappedBatches
from pinapp.engagement.stages import EngagementStages
from pinapp.errors import SinkError, StateStoreError, StateStoreLost
from pinapp.telemetry import health, metrics
from pinapp.topology import fault_hooks
from tests.unit.samples import PIN

LONDON = GeoLocation("GB", "England", "London", 51.5, -0.1)


@dataclass
class Record:
    """A consumed record, as faust's ``Message`` has it."""

    partition: int
    offset: int
    value: bytes
    topic: str = "events"
    key: bytes | None = None
    timestamp: float = field(default_factory=time.time)
    headers: Any = ()


class MemoryTable:
    """A changelog-backed table by partition; ``flushes`` counts the changelog sends."""

    def __init__(self) -> None:
        self.partitions: dict[int, dict[bytes, Any]] = defaultdict(dict)
        self.flushes = 0

    def get(self, partition: int, key: bytes) -> Any:
        return self.partitions[partition].get(key)

    def set(self, partition: int, key: bytes, value: Any) -> None:
        self.partitions[partition][key] = value

    def set_many(self, partition: int, items: Iterable[tuple[bytes, Any]]) -> None:
        self.partitions[partition].update(items)

    def delete_many(self, partition: int, keys: Iterable[bytes]) -> None:
        for key in keys:
            self.partitions[partition].pop(key, None)

    def partition_items(self, partition: int) -> Callable[[bytes | None], Iterator[tuple[bytes, bytes]]]:
        def items(from_key: bytes | None) -> Iterator[tuple[bytes, bytes]]:
            data = self.partitions[partition]
            return iter([(k, data[k]) for k in sorted(data) if from_key is None or k >= from_key])

        return items

    async def flush(self) -> None:
        self.flushes += 1

    async def unconfirmed(self) -> list[BaseException]:
        return []  # Kafka took everything


class MemoryStore:
    """The SingleStore tables: rows by table and event_id; ``reject`` holds event_ids it refuses."""

    def __init__(self, pins: Mapping[str, Pin] = (), reject: Iterable[str] = ()) -> None:
        self.known_pins = dict(pins)
        self.reject = set(reject)
        self.tables: dict[EventType, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.writes = 0
        self.pin_lookups: list[list[str]] = []
        self.exposures: dict[tuple[str, str], dict[str, Any]] = {}  # (experiment, event_id) -> row
        self.positions: dict[int, Stored] = {}

    async def write(self, writes: Sequence[PartitionWrite], claim: Claim) -> WriteOutcome:
        """As the database does: all or nothing, fenced, records below a position passed over."""
        events = [e for w in writes for e in w.events]
        refused = [e.row[COLUMNS[e.event_type].index("event_id")] for e in events]
        refused = [event_id for event_id in refused if event_id in self.reject]
        if refused:
            raise SinkError(f"database rejected a batch: {refused}")
        self.writes += 1
        lost = frozenset(w.partition for w in writes if not may_write(self.positions.get(w.partition), claim))
        already = 0
        for w in writes:
            if w.partition in lost:
                continue
            stored = self.positions.get(w.partition)
            for e in w.events:
                if stored is not None and e.offset < stored.next_offset:
                    already += 1
                    continue
                row = dict(zip(COLUMNS[e.event_type], e.row, strict=True))
                self.tables[e.event_type][row["event_id"]] = row
                for exposure in e.exposures:
                    named = dict(zip(EXPOSURES.column_names, exposure, strict=True))
                    self.exposures[(named["experiment"], named["event_id"])] = named
                if e.learned_pin is not None:  # fills a missing pin row, never replaces one
                    pin = dict(zip(COLUMNS[EventType.PIN], e.learned_pin, strict=True))
                    if all(r["pin_id"] != pin["pin_id"] for r in self.tables[EventType.PIN].values()):
                        self.tables[EventType.PIN][pin["event_id"]] = pin
            next_offset = max(w.next_offset, stored.next_offset if stored is not None else 0)
            self.positions[w.partition] = Stored(next_offset, claim.owner, claim.generation, w.event_ts)
        return WriteOutcome(lost, already)

    async def fetch_pins(self, pin_ids: Iterable[str]) -> dict[str, Pin]:
        ids = list(pin_ids)
        self.pin_lookups.append(ids)
        return {i: self.known_pins[i] for i in ids if i in self.known_pins}

    def row(self, event_type: EventType, event_id: str) -> dict[str, Any]:
        return self.tables[event_type][event_id]


class Here:
    def lookup(self, ip: str) -> GeoLocation:
        return LONDON


@dataclass
class Sent:
    record: Any
    reason: str
    kind: str
    stage: str


@dataclass
class DeadLetterBox:
    """The dead-letter topic: what was sent, each taken at once."""

    dead: list[Sent]

    async def __call__(self, record: Any, reason: str, *, kind: str, stage: str) -> None:
        self.dead.append(Sent(record, reason, kind, stage))

    async def unconfirmed(self) -> list[BaseException]:
        return []


@dataclass
class Pipeline:
    store: MemoryStore = field(default_factory=MemoryStore)
    seen: MemoryTable = field(default_factory=MemoryTable)
    pins: MemoryTable = field(default_factory=MemoryTable)
    dead: list[Sent] = field(default_factory=list)
    live: list[bytes] = field(default_factory=list)
    settings: PipelineSettings = field(default_factory=PipelineSettings)

    def __post_init__(self) -> None:
        async def publish(value: bytes) -> None:
            self.live.append(value)

        self.batcher = EngagementStages(
            self.store,
            Here(),
            seen=self.seen,
            pins=self.pins,
            dead_letter=DeadLetterBox(self.dead),
            publish_live=publish,
            settings=self.settings,
            row_builder=fault_hooks.row_builder(TestingSettings(poison_user_id="u-poison")),
        )

    def seen_at(self, partition: int, event_id: str) -> tuple[int, int] | None:
        raw = self.seen.get(partition, event_id.encode())
        return None if raw is None else SeenEvent.from_bytes(raw)[1:]


def event(event_id: str, event_type: str = "like", *, pin_id: str | None = "p1", **extra: Any) -> bytes:
    doc: dict[str, Any] = {
        "event_id": event_id,
        "event_type": event_type,
        "ts": 1_700_000_000_123,
        "user_id": "u1",
        "ip": "81.2.69.160",
    }
    if event_type != "login" and pin_id is not None:
        doc["pin_id"] = pin_id
    doc.update(extra)
    return orjson.dumps(doc)


def records(*values: bytes, partition: int = 0, first: int = 0) -> list[Record]:
    return [Record(partition, first + i, value) for i, value in enumerate(values)]


async def test_a_batch_is_written_in_one_write_and_marked_seen_only_after_it() -> None:
    p = Pipeline()
    prepared = await p.batcher.prepare(records(event("e1"), event("e2", "login"), partition=3, first=10))
    assert p.store.writes == 0 and p.seen_at(3, "e1") is None, "preparing writes nothing"

    await p.batcher.commit(prepared)
    assert p.store.writes == 1
    assert p.store.row(EventType.LIKE, "e1")["country"] == "GB"
    assert p.store.row(EventType.LOGIN, "e2")["city"] == "London"
    assert (p.seen_at(3, "e1"), p.seen_at(3, "e2")) == ((3, 10), (3, 11))
    assert (p.seen.flushes, p.pins.flushes) == (1, 1)


async def test_a_duplicate_in_the_batch_or_in_the_batch_being_written_is_dropped() -> None:
    p = Pipeline()
    batch = records(event("e1"), event("e1"), event("e2"), event("e3"))
    prepared = await p.batcher.prepare(batch, in_flight={"e3": (0, 99)})
    assert [a.event.event_id for a in prepared.accepted] == ["e1", "e2"]
    await p.batcher.commit(prepared)
    assert set(p.store.tables[EventType.LIKE]) == {"e1", "e2"}
    assert p.dead == [], "a duplicate is dropped, not dead-lettered"


async def test_an_event_seen_at_another_offset_is_dropped_but_a_redelivery_or_a_replay_is_not() -> None:
    p = Pipeline()
    await p.batcher.process(records(event("e1"), event("e2"), first=0))

    resend = await p.batcher.prepare(records(event("e1"), first=50))
    assert resend.accepted == [], "the same event_id at another offset is a duplicate"
    redelivered = await p.batcher.prepare(records(event("e2"), first=1))
    assert [a.event.event_id for a in redelivered.accepted] == ["e2"], "the same offset again is a redelivery"
    replay = Record(0, 77, event("e1"), headers=[(REPLAY_HEADER, b"events:0:0")])
    assert [a.event.event_id for a in (await p.batcher.prepare([replay])).accepted] == ["e1"]


async def test_an_entry_past_the_horizon_no_longer_makes_a_duplicate() -> None:
    p = Pipeline(settings=PipelineSettings(dedup_horizon_s=60))
    long_ago = int(time.time() * 1000) - 61_000
    p.seen.set(0, b"e1", SeenEvent(long_ago, 0, 5).to_bytes())
    assert [a.event.event_id for a in (await p.batcher.prepare(records(event("e1"), first=50))).accepted] == ["e1"]


async def test_a_pin_comes_from_the_cache_then_the_database_then_the_event_else_unknown() -> None:
    in_db = Pin.from_event_field({**PIN, "pin_id": "p-db", "category": "travel"})
    p = Pipeline(store=MemoryStore(pins={"p-db": in_db}))
    p.pins.set(0, b"p-cached", Pin.from_event_field({**PIN, "pin_id": "p-cached", "category": "food"}))
    batch = records(
        event("e1", "repin", pin_id="p-cached", board_id="b2"),
        event("e2", "like", pin_id="p-db"),
        event("e3", "repin", pin_id="p-carried", board_id="b2", pin={**PIN, "pin_id": "p-carried"}),
        event("e4", "comment", pin_id="p-nowhere", text="hi"),
    )
    await p.batcher.process(batch)

    assert p.store.pin_lookups == [["p-db", "p-carried", "p-nowhere"]], "one database lookup, for the misses only"
    assert p.store.row(EventType.REPIN, "e1")["category"] == "food"
    assert p.store.row(EventType.LIKE, "e2")["category"] == "travel"
    assert p.store.row(EventType.REPIN, "e3")["category"] == "art"
    assert p.store.row(EventType.COMMENT, "e4")["category"] == UNKNOWN_CATEGORY
    # What the database and the events gave is cached; an unknown pin is not.
    assert p.pins.get(0, b"p-db") == in_db and p.pins.get(0, b"p-carried").category == "art"
    assert p.pins.get(0, b"p-nowhere") is None

    await p.batcher.process(records(event("e5", "like", pin_id="p-db"), first=10))
    assert len(p.store.pin_lookups) == 1, "a cached pin is not looked up again"


async def test_a_pin_in_the_batch_resolves_its_repins_before_or_after_it() -> None:
    p = Pipeline()
    await p.batcher.process(records(event("e0", "pin", pin=PIN), event("e1", "repin", board_id="b2")))
    assert p.store.row(EventType.REPIN, "e1")["category"] == "art"
    assert p.store.pin_lookups == [], "the pin before it filled the cache: no database lookup"

    p = Pipeline()
    await p.batcher.process(records(event("e1", "repin", board_id="b2"), event("e0", "pin", pin=PIN)))
    assert p.store.row(EventType.REPIN, "e1")["category"] == "art", "a pin later in the batch still wins over unknown"
    assert p.store.row(EventType.PIN, "e0")["pin_id"] == "p1"


async def test_a_repin_carrying_an_unknown_pin_teaches_the_pins_table() -> None:
    p = Pipeline()
    await p.batcher.process(records(event("e1", "repin", board_id="b2", pin=PIN)))
    learned = [row for row in p.store.tables[EventType.PIN].values() if row["pin_id"] == "p1"]
    assert [row["event_id"] for row in learned] == ["e1"], "the pins row carries the teaching event's id"


async def test_malformed_inputs_are_dead_lettered_at_validation_and_the_rest_written() -> None:
    p = Pipeline()
    batch = records(b"not json", event("e1"), orjson.dumps({"event_id": "e2"}), b"x" * 20_000, event("e3"))
    await p.batcher.process(batch)
    assert set(p.store.tables[EventType.LIKE]) == {"e1", "e3"}
    assert [(d.record.offset, d.stage) for d in p.dead] == [(0, "validate"), (2, "validate"), (3, "validate")]
    assert [d.kind for d in p.dead] == ["not_json", "schema", "too_large"]
    assert p.seen_at(0, "e2") is None


async def test_an_event_failing_enrichment_is_dead_lettered_alone() -> None:
    p = Pipeline()
    await p.batcher.process(records(event("e1"), event("e2", user_id="u-poison"), event("e3")))
    assert set(p.store.tables[EventType.LIKE]) == {"e1", "e3"}
    assert [(d.record.offset, d.kind, d.stage) for d in p.dead] == [(1, "poison", "enrich")]
    assert "poison_user_id" in p.dead[0].reason
    assert p.seen_at(0, "e2") is None, "a dead-lettered event is not marked seen"


async def test_rows_the_database_rejects_are_found_one_by_one_and_dead_lettered() -> None:
    p = Pipeline(store=MemoryStore(reject={"e2"}))
    await p.batcher.process(records(event("e1"), event("e2"), event("e3")))
    assert set(p.store.tables[EventType.LIKE]) == {"e1", "e3"}
    assert [(d.record.offset, d.kind, d.stage) for d in p.dead] == [(1, "rejected", "sink")]
    assert p.seen_at(0, "e2") is None and p.seen_at(0, "e1") == (0, 0)


async def test_a_batch_failing_as_a_whole_is_processed_event_by_event() -> None:
    p = Pipeline()

    def crash(event_id: bytes) -> Any:
        raise RuntimeError("a table that cannot be read")

    p.seen.get = lambda partition, key: crash(key) if key == b"e2" else None  # type: ignore[method-assign]
    batch = records(event("e1"), event("e2"), event("e3"))
    with pytest.raises(RuntimeError):
        await p.batcher.process(batch)
    await p.batcher.process_one_by_one(batch)
    assert set(p.store.tables[EventType.LIKE]) == {"e1", "e3"}
    assert [(d.record.offset, d.kind, d.stage) for d in p.dead] == [(1, "poison", "process")]


async def test_written_repins_with_a_location_go_to_the_live_feed_after_the_write() -> None:
    p = Pipeline()
    prepared = await p.batcher.prepare(records(event("e1", "repin", board_id="b2", pin=PIN), event("e2")))
    assert p.live == [], "nothing is shown before it is written"
    await p.batcher.commit(prepared)
    [value] = p.live
    [point] = decode_points(value)
    assert (point["event_id"], point["category"], point["country"], point["lat"]) == ("e1", "art", "GB", 51.5)


async def test_each_experiment_an_event_carries_is_an_exposure_written_with_it() -> None:
    p = Pipeline(store=MemoryStore(reject={"e3"}))
    experiments = {"search_v2": "treatment", "onboarding": "control"}
    batch = records(
        event("e1", experiments=experiments),
        event("e1", experiments=experiments),
        event("e2"),
        event("e3", experiments={"search_v2": "control"}),
    )
    await p.batcher.process(batch)
    assert set(p.store.exposures) == {("search_v2", "e1"), ("onboarding", "e1")}, "the duplicate and e2 add none"
    row = p.store.exposures[("search_v2", "e1")]
    assert (row["group_name"], row["event_type"], row["user_id"]) == ("treatment", "like", "u1")
    assert row["ts"].isoformat(" ", timespec="microseconds") == p.store.row(EventType.LIKE, "e1")["ts"]
    assert [(d.record.offset, d.stage) for d in p.dead] == [(3, "sink")], "a rejected event's exposures go with it"


async def test_a_replayed_batch_passes_unwritten_and_a_fenced_partition_is_dropped_unmarked() -> None:
    """Records below a partition's stored position were written before (a kill before the Kafka
    commit): they are acknowledged without a write. A partition another worker's newer generation
    holds is dropped: nothing of it is marked seen or shown."""
    p = Pipeline()
    batch = records(event("e1"), event("e2"), partition=0)
    await p.batcher.process(batch)
    await p.batcher.process(batch)  # the same records again
    assert p.store.positions[0].next_offset == 2 and set(p.store.tables[EventType.LIKE]) == {"e1", "e2"}

    p.store.positions[1] = Stored(0, "newer-owner", 9, None)
    await p.batcher.process(records(event("e3"), partition=1) + records(event("e4"), partition=2))
    assert "e3" not in p.store.tables[EventType.LIKE], "the zombie's partition is not written"
    assert p.seen_at(1, "e3") is None, "nor marked seen"
    assert p.seen_at(2, "e4") == (2, 0), "its other partition is"


async def test_an_event_dated_past_the_clocks_skew_is_written_but_does_not_move_the_watermark() -> None:
    """A client whose clock runs an hour fast must not make the rollups' minutes look complete."""
    p = Pipeline()
    future_ms = int(time.time() * 1000) + 3600_000
    before = metrics.FUTURE_EVENTS._value.get()
    await p.batcher.process(records(event("on-time"), event("fast-clock", ts=future_ms), partition=0))
    assert set(p.store.tables[EventType.LIKE]) == {"on-time", "fast-clock"}, "both are written"
    assert p.store.positions[0].event_ts == ms_to_datetime(1_700_000_000_123), "the on-time event's time"
    assert metrics.FUTURE_EVENTS._value.get() == before + 1


class FailingTable(MemoryTable):
    """A table whose local store fails its first ``failures`` writes (a full disk, say)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def set_many(self, partition: int, items: Iterable[tuple[bytes, Any]]) -> None:
        if self.failures:
            self.failures -= 1
            raise StateStoreError(f"table seen, partition {partition}: the local store failed a write: No space left")
        super().set_many(partition, items)


async def test_a_local_store_failure_makes_the_batch_wait_and_dead_letters_nothing() -> None:
    """Before, each event failed alone and was dead-lettered as poison, and the batch acked."""
    p = Pipeline(seen=FailingTable(failures=3))
    acked: list[Any] = []
    overlap = OverlappedBatches(p.batcher, acked.extend, state_retry_max_s=30)
    batch = records(event("e1"), event("e2"), partition=0)
    await overlap.submit(batch)
    await overlap.drain()
    assert p.dead == [], "an outage dead-letters nothing"
    assert set(p.store.tables[EventType.LIKE]) == {"e1", "e2"} and p.seen_at(0, "e1") == (0, 0)
    assert acked == batch
    assert health.sink("state").ok and health.sink("state").last_success is not None


async def test_a_local_store_that_never_recovers_stops_the_worker_naming_the_data_dir() -> None:
    p = Pipeline(seen=FailingTable(failures=10**6))
    acked: list[Any] = []
    overlap = OverlappedBatches(p.batcher, acked.extend, state_retry_max_s=0.5, data_dir="/var/lib/pinapp")
    await overlap.submit(records(event("e1"), partition=0))
    with pytest.raises(StateStoreLost, match="under /var/lib/pinapp failed for") as info:
        await overlap.drain()
    assert "\n" not in str(info.value)
    assert p.dead == [] and acked == []
    assert not health.sink("state").ok
    health.sink("state").succeeded()  # the process-wide record, for the tests after this one


class UnconfirmedTable(MemoryTable):
    """A table whose changelog Kafka refuses ``failures`` times (a broker outage)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def unconfirmed(self) -> list[BaseException]:
        if self.failures:
            self.failures -= 1
            return [ConnectionError("NotEnoughReplicas")]
        return []


async def test_a_batch_is_acked_only_once_kafka_has_its_changelog_records() -> None:
    p = Pipeline(seen=UnconfirmedTable(failures=2))
    acked: list[Any] = []
    overlap = OverlappedBatches(p.batcher, acked.extend)
    batch = records(event("e1"), partition=0)
    await overlap.submit(batch)
    await overlap.drain()
    assert p.seen.failures == 0, "asked until Kafka took them"  # type: ignore[attr-defined]
    assert acked == batch and p.dead == []
    assert health.sink("kafka").ok and health.sink("kafka").last_success is not None
