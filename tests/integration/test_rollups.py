"""Rollups and positions on the real database (MariaDB standing in): exactly once, fenced, exact.

Each test writes through :class:`EngagementStore` as the worker does, then compares the rollups
with the raw rows (:func:`check_rollups`, what ``pinapp audit`` runs) and the named queries
with the raw GROUP BY they replace.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from config import TrendSettings
from pinapp.adapters.db import EngagementStore, create_pool, migrate
from pinapp.adapters.queries import NAMED_QUERIES, allocation, query_params, run_query
from pinapp.adapters.rollup_check import check_rollups
from pinapp.adapters.sealer import PinSealer
from pinapp.domain.events import Event, EventType, parse_event
from pinapp.domain.geo import GeoLocation
from pinapp.domain.positions import Claim, PartitionWrite, WrittenEvent
from pinapp.domain.rows import build_row, exposure_rows, pin_row
from pinapp.domain.table_values import Pin
from pinapp.tools.harness import Pipeline

GEO = {"GB": GeoLocation("GB", "England", "London", 51.5, -0.1), "": GeoLocation(None, None, None, None, None)}
A = Claim("worker-a", 1)
NOW = datetime.now(UTC).replace(tzinfo=None, second=0, microsecond=0)


def _pin(pin_id: str, category: str = "travel") -> dict[str, Any]:
    return {
        "pin_id": pin_id,
        "board_id": "b",
        "user_id": "u0",
        "title": pin_id,
        "category": category,
        "created_at": 1_700_000_000_000,
    }


def _event(event_id: str, event_type: str, *, minutes_ago: float = 5, user: str = "u1", **extra: Any) -> Event:
    doc: dict[str, Any] = {
        "event_id": event_id,
        "event_type": event_type,
        "user_id": user,
        "ts": int((NOW - timedelta(minutes=minutes_ago)).replace(tzinfo=UTC).timestamp() * 1000),
        "ip": "81.2.69.160",
        **extra,
    }
    return parse_event(orjson.dumps(doc), max_bytes=16384)


def _written(offset: int, event: Event, *, country: str = "GB", learned: bool = False) -> WrittenEvent:
    geo = GEO[country]
    pin = Pin.from_event_field(event.carried_pin) if event.carried_pin is not None else None
    now = datetime.now(UTC).replace(tzinfo=None)
    row = build_row(event, geo, pin, now)
    learned_row = pin_row(event, geo, pin, now) if learned and pin is not None else None
    return WrittenEvent(offset, event.event_type, row, event.ts_ms, learned_row, tuple(exposure_rows(event, now)))


def _write(partition: int, events: list[WrittenEvent], next_offset: int | None = None) -> list[PartitionWrite]:
    end = next_offset if next_offset is not None else max(e.offset for e in events) + 1
    ts = max((e.row[4] if e.event_type is not EventType.LOGIN else e.row[2] for e in events), default=None)
    return [PartitionWrite(partition, end, events, ts)]


@pytest.fixture
async def store(pipeline: Pipeline) -> AsyncIterator[EngagementStore]:
    await migrate(pipeline.settings.db)
    pool = await create_pool(pipeline.settings.db, size=2)
    try:
        yield EngagementStore(pool, topic="events")
    finally:
        pool.close()
        await pool.wait_closed()


async def _clean(store: EngagementStore) -> None:
    check = await check_rollups(store._pool)
    assert check.clean, check.mismatches


async def test_a_batch_written_again_counts_once(store: EngagementStore, pipeline: Pipeline) -> None:
    """A replay after the database commit (a kill before the Kafka commit), or a retry whose COMMIT
    reply was lost: its records are below the stored position and pass without a write."""
    events = [
        _written(0, _event("e0", "repin", pin_id="p1", board_id="b", pin=_pin("p1"))),
        _written(1, _event("e1", "like", pin_id="p1")),
        _written(2, _event("e2", "login")),
    ]
    first = await store.write(_write(0, events), A)
    assert (first.inserted, first.already_written, first.lost) == (3, 0, frozenset())
    again = await store.write(_write(0, events), A)
    assert (again.inserted, again.already_written) == (0, 3)
    assert await pipeline.sql("SELECT event_type, SUM(events) FROM rollup_types GROUP BY event_type ORDER BY 1") == [
        ("like", 1),
        ("login", 1),
        ("repin", 1),
    ]
    assert await pipeline.sql("SELECT part, next_offset, owner, generation FROM stream_offsets") == [
        (0, 3, "worker-a", 1)
    ]
    await _clean(store)


async def test_a_fenced_zombies_batch_is_rejected(store: EngagementStore, pipeline: Pipeline) -> None:
    """Worker A (generation 1) lost partition 0 to B (generation 2), which wrote past it; A's
    batch, prepared before it noticed, writes nothing, while its other partition's records land."""
    b = Claim("worker-b", 2)
    await store.write(_write(0, [_written(i, _event(f"a{i}", "like", pin_id="p1")) for i in range(5)]), A)
    # B takes over from Kafka's committed offset (2): records 2-4 are already written, 5-9 are new.
    taken = await store.write(_write(0, [_written(i, _event(f"a{i}", "like", pin_id="p1")) for i in range(2, 10)]), b)
    assert (taken.inserted, taken.already_written, taken.lost) == (5, 3, frozenset())

    zombie = _write(0, [_written(i, _event(f"z{i}", "like", pin_id="p1")) for i in range(10, 12)])
    zombie += _write(1, [_written(0, _event("a-other", "like", pin_id="p2"))])
    outcome = await store.write(zombie, A)
    assert outcome.lost == frozenset({0})
    assert await pipeline.sql("SELECT COUNT(*) FROM likes WHERE event_id LIKE 'z%%'") == [(0,)]
    assert await pipeline.sql("SELECT part, next_offset, owner FROM stream_offsets ORDER BY part") == [
        (0, 10, "worker-b"),
        (1, 1, "worker-a"),
    ]
    assert await pipeline.sql("SELECT part, SUM(events) FROM rollup_types GROUP BY part ORDER BY part") == [
        (0, 10),
        (1, 1),
    ]
    await _clean(store)


async def test_a_duplicate_past_the_dedup_horizon_is_stored_and_counted_once(
    store: EngagementStore, pipeline: Pipeline
) -> None:
    """A resend at a new offset that dedup no longer remembers: the upsert keeps one row, and the
    rollups count only what the statement inserted (read back when the server's total differs)."""
    like = _event("dup", "like", pin_id="p1")
    await store.write(_write(0, [_written(0, like), _written(1, _event("x1", "like", pin_id="p1"))]), A)
    outcome = await store.write(_write(0, [_written(7, like), _written(8, _event("x2", "like", pin_id="p1"))]), A)
    assert outcome.inserted == 1
    assert await pipeline.sql("SELECT SUM(events) FROM rollup_types") == [(3,)]
    await _clean(store)


async def test_a_pin_counts_once_for_its_own_event_and_never_for_a_learned_row(
    store: EngagementStore, pipeline: Pipeline
) -> None:
    repin = _event("r1", "repin", pin_id="p9", board_id="b", pin=_pin("p9", "art"))
    await store.write(_write(0, [_written(0, repin, learned=True)]), A)  # the pin row learned from the repin
    own = _event("p9-own", "pin", user="u0", pin_id="p9", pin=_pin("p9", "art"))
    await store.write(_write(0, [_written(1, own)]), A)  # replaces the learned row: one pin event
    await store.write(_write(0, [_written(5, own)]), A)  # a resend: no event
    assert await pipeline.sql("SELECT event_type, SUM(events) FROM rollup_types GROUP BY 1 ORDER BY 1") == [
        ("pin", 1),
        ("repin", 1),
    ]
    assert await pipeline.sql("SELECT category, SUM(events) FROM rollup_categories WHERE grain = 'h' GROUP BY 1") == [
        ("art", 2)
    ]
    await _clean(store)


async def test_experiment_users_are_counted_once_per_group_across_partitions(
    store: EngagementStore, pipeline: Pipeline
) -> None:
    def exposed(n: int, user: str, group: str, partition: int) -> list[PartitionWrite]:
        event = _event(f"x{n}", "like", user=user, pin_id="p1", experiments={"exp": group})
        return _write(partition, [_written(n, event)])

    await store.write(exposed(0, "u1", "control", 0), A)
    await store.write(exposed(1, "u1", "control", 1), A)  # the same user, another partition
    await store.write(exposed(2, "u2", "treatment", 2), A)
    await store.write(exposed(3, "u1", "treatment", 3), A)  # a leak: u1 in both groups
    users = await allocation(store._pool, "exp", NOW - timedelta(hours=1))
    assert users == {"control": 1, "treatment": 2}
    raw = await pipeline.sql(
        "SELECT group_name, COUNT(DISTINCT user_id) FROM experiment_exposures GROUP BY group_name ORDER BY 1"
    )
    assert [(g, int(n)) for g, n in raw] == sorted(users.items())
    await _clean(store)


async def _random_traffic(store: EngagementStore, rng: random.Random, *, minutes: int, events: int) -> None:
    """Zipf-ish pins and categories over the last ``minutes``, written by four partitions in batches."""
    batches: dict[int, list[WrittenEvent]] = {p: [] for p in range(4)}
    offsets = Counter[int]()
    for n in range(events):
        pin = f"p{min(int(rng.paretovariate(1.2)), 400)}"
        kind = rng.choice(("repin", "repin", "like", "comment", "login", "pin"))
        ago = rng.uniform(0.5, minutes)
        extra: dict[str, Any] = {}
        if kind == "pin":
            new = f"{pin}-{n}"
            extra = {"pin_id": new, "pin": _pin(new, rng.choice(("art", "food", "travel"))), "user": "u0"}
        elif kind != "login":
            extra = {"pin_id": pin}
            if kind == "repin":
                extra.update(board_id="b", pin=_pin(pin, "art" if hash(pin) % 2 else "food"))
            if kind == "comment":
                extra["text"] = "hi"
            if rng.random() < 0.2:
                extra["experiments"] = {"exp": rng.choice(("control", "treatment"))}
        part = rng.randrange(4)
        user = extra.pop("user", f"u{rng.randrange(50)}")
        event = _event(f"e{n}", kind, minutes_ago=ago, user=user, **extra)
        batches[part].append(_written(offsets[part], event, country=rng.choice(("GB", "GB", ""))))
        offsets[part] += 1
        if len(batches[part]) == 50:
            await store.write(_write(part, batches[part]), A)
            batches[part] = []
    for part, rest in batches.items():
        if rest:
            await store.write(_write(part, rest), A)


async def test_every_named_query_on_the_rollups_matches_the_raw_rows(
    store: EngagementStore, pipeline: Pipeline
) -> None:
    await _random_traffic(store, random.Random(3), minutes=150, events=3000)
    await PinSealer(store._pool, "events").run_once()
    while await PinSealer(store._pool, "events").run_once():
        pass  # more than one round's minutes
    check = await check_rollups(store._pool, top_n=10)
    assert check.clean, check.mismatches
    assert check.minutes > 100 and check.pins_checked > 10

    params = query_params(120, 1000, TrendSettings(), now=NOW)
    since = params["w_start"]
    _, per_minute = await run_query(store._pool, NAMED_QUERIES["events-per-minute"].sql, params)
    raw = Counter[tuple[str, str]]()
    for table, kind in (("repins", "repin"), ("likes", "like"), ("comments", "comment"), ("logins", "login")):
        for minute, n in await pipeline.sql(
            f"SELECT DATE_FORMAT(ts, '%%Y-%%m-%%d %%H:%%i'), COUNT(*) FROM {table} WHERE ts >= %s GROUP BY 1", (since,)
        ):
            raw[(minute, kind)] += n
    got = {(m, t): n for m, t, n in per_minute if t != "pin"}
    assert got == dict(raw)

    _, countries = await run_query(store._pool, NAMED_QUERIES["top-countries"].sql, params)
    union = " UNION ALL ".join(
        f"SELECT COALESCE(country, '??') AS c FROM {t} WHERE ts >= %s"
        for t in ("repins", "likes", "comments", "logins")
    )
    raw_countries = dict(await pipeline.sql(f"SELECT c, COUNT(*) FROM ({union}) u GROUP BY c", (since,) * 4))
    own_pins = dict(
        await pipeline.sql(
            "SELECT COALESCE(country, '??'), COUNT(*) FROM pins p WHERE ts >= %s AND p.event_id LIKE %s GROUP BY 1",
            (since, "e%"),
        )
    )
    for code, n in own_pins.items():
        raw_countries[code] = raw_countries.get(code, 0) + n
    assert {c: n for c, n in countries} == raw_countries

    _, top = await run_query(store._pool, NAMED_QUERIES["most-repinned"].sql, {**params, "limit": 10})
    sealed = (await pipeline.sql("SELECT bucket FROM rollup_pin_buckets WHERE grain = 'f'"))[0][0]
    raw_top = await pipeline.sql(
        "SELECT pin_id, COUNT(*) AS n FROM repins WHERE ts >= %s AND ts < %s GROUP BY pin_id ORDER BY n DESC, pin_id",
        (since, sealed),
    )
    above = raw_top[10][1]  # the true top 10: the pins above the 11th count
    assert {p for p, n in raw_top if n > above} <= {r[0] for r in top}
    assert [r[3] for r in top] == [n for _, n in raw_top[:10]], "here every top pin is kept in every minute"
    for name in ("trending-pins", "trending-categories", "trending-countries", "top-categories"):
        columns, _ = await run_query(store._pool, NAMED_QUERIES[name].sql, params)
        assert columns, name


async def test_a_late_event_reseals_its_minute_and_hour(store: EngagementStore, pipeline: Pipeline) -> None:
    """A minute sealed before an event of it was written (a replay of an old day, a slow partition)
    is sealed again: the rollup still contains the true top pins."""
    await _random_traffic(store, random.Random(5), minutes=90, events=1500)
    sealer = PinSealer(store._pool, "events")
    while await sealer.run_once():
        pass
    late = [
        _written(
            1000 + i, _event(f"late{i}", "repin", minutes_ago=80, pin_id="p-late", board_id="b", pin=_pin("p-late"))
        )
        for i in range(40)
    ]
    await store.write(_write(0, late), A)
    assert await pipeline.sql("SELECT COUNT(*) FROM rollup_dirty") == [(1,)], "the late minute is marked"
    while await sealer.run_once():
        pass
    assert await pipeline.sql("SELECT COUNT(*) FROM rollup_dirty") == [(0,)]
    check = await check_rollups(store._pool, top_n=5)
    assert check.clean, check.mismatches
    assert await pipeline.sql("SELECT repins FROM rollup_pins WHERE grain = 'm' AND pin_id = 'p-late'") == [(40,)]
    got = await pipeline.sql("SELECT SUM(repins) FROM rollup_pins WHERE grain = 'h' AND pin_id = 'p-late'")
    assert int(got[0][0]) == 40, "its hour is merged again"
