"""The SingleStore sink's row rules on the real database (MariaDB standing in)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import orjson
import pytest

from pinapp.adapters.db import EngagementStore, create_pool, migrate
from pinapp.adapters.sql_values import backslash_escapes
from pinapp.domain.events import EventType, parse_event
from pinapp.domain.geo import GeoLocation
from pinapp.domain.positions import Claim, PartitionWrite, WrittenEvent
from pinapp.domain.rows import build_row, pin_row
from pinapp.domain.table_values import Pin
from pinapp.tools.harness import Pipeline

_PIN = {
    "pin_id": "p-1",
    "board_id": "b-1",
    "user_id": "u-1",
    "title": "a pin",
    "category": "travel",
    "created_at": 1_795_000_000_000,
}


_CLAIM = Claim("test", 1)


def _batch(first: int, event_type: EventType, rows: list, learned: tuple | None = None) -> list[PartitionWrite]:  # type: ignore[type-arg]
    """Rows of one type as the next records of partition 0, from offset ``first``."""
    events = [WrittenEvent(first + i, event_type, row, 1_795_000_000_500, learned) for i, row in enumerate(rows)]
    return [PartitionWrite(0, first + len(rows), events)]


def _event(event_id: str, event_type: str, **extra: object) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "event_type": event_type,
            "user_id": "u-2",
            "pin_id": "p-1",
            "ts": 1_795_000_000_500,
            "ip": "81.2.69.142",
            **extra,
        }
    )


async def test_a_pins_own_event_replaces_a_row_learned_from_a_repin_in_either_order(pipeline: Pipeline) -> None:
    await migrate(pipeline.settings.db)
    pool = await create_pool(pipeline.settings.db, size=1)
    try:
        store = EngagementStore(pool)
        now = datetime.now(UTC).replace(tzinfo=None)
        geo = GeoLocation(country="GB", city="London", latitude=51.5, longitude=-0.1)
        pin = Pin.from_event_field(_PIN)
        own = parse_event(_event("e-pin", "pin", user_id="u-1", pin=_PIN), max_bytes=16384)
        repin = parse_event(_event("e-repin", "repin", board_id="b-9", pin=_PIN), max_bytes=16384)
        learned = pin_row(repin, geo, pin, now)
        own_row = build_row(own, geo, pin, now)

        # The repin's learned row lands first (the pin's own event is late), then the pin's.
        repin_row = build_row(repin, geo, pin, now)
        await store.write(_batch(0, EventType.REPIN, [repin_row], learned), _CLAIM)
        assert await pipeline.sql("SELECT event_id FROM pins") == [("e-repin",)]
        await store.write(_batch(1, EventType.PIN, [own_row]), _CLAIM)
        assert await pipeline.sql("SELECT event_id, user_id, title FROM pins") == [("e-pin", "u-1", "a pin")]

        # A later learned row (or a replay of the repin) never replaces the pin's own row,
        # and a replay of the pin's own event leaves it as it is.
        await store.write(_batch(2, EventType.REPIN, [repin_row], learned), _CLAIM)
        await store.write(_batch(3, EventType.PIN, [own_row]), _CLAIM)
        assert await pipeline.sql("SELECT event_id FROM pins") == [("e-pin",)]
        assert await pipeline.sql("SELECT event_id FROM repins") == [("e-repin",)]
    finally:
        pool.close()
        await pool.wait_closed()


_NASTY = [
    "it's",
    'say "hi"',
    "back\\slash",
    "l1\nl2\r\n",
    "nul\x00sub\x1a",
    "é😀 中文",
    "50% off %s",
    "'; DROP TABLE comments; --",
]


@pytest.mark.parametrize("multi_statements", [True, False], ids=["round trips shared", "one statement a trip"])
async def test_rows_round_trip_exactly_and_replays_keep_the_first_ingested_at(
    pipeline: Pipeline, multi_statements: bool
) -> None:
    """The sink's own encoding (pinapp.adapters.sql_values) on the real server: every character comes back
    as sent, a batch larger than one statement is written whole in one transaction, and a
    replay is a no-op that keeps the first ``ingested_at``; with statements sent together or
    one by one (``db.multi_statements``)."""
    await migrate(pipeline.settings.db)
    pool = await create_pool(pipeline.settings.db, size=1)
    try:
        store = EngagementStore(pool, multi_statements=multi_statements)
        first = datetime(2026, 12, 2, 10, 0, 0, 123456)
        geo = GeoLocation(country="GB", city="Lo'ndon\\", latitude=51.5, longitude=-1e-05)
        comments = [
            parse_event(
                _event(f"e-c{i}", "comment", text=text * (1 + i % 3) + "x" * (3000 if i % 2 else 0)), max_bytes=16384
            )
            for i, text in enumerate(_NASTY * 90)
        ]
        rows = [build_row(e, geo, None, first) for e in comments]
        assert sum(len(str(r)) for r in rows) > 1_000_000  # more than one statement's worth
        assert (await store.write(_batch(0, EventType.COMMENT, rows), _CLAIM)).inserted == len(rows)
        stored = dict(await pipeline.sql("SELECT event_id, text FROM comments"))
        assert stored == {e.event_id: e.text for e in comments}
        assert await pipeline.sql("SELECT DISTINCT city, longitude, ingested_at FROM comments") == [
            ("Lo'ndon\\", -1e-05, first)
        ]

        later = datetime(2026, 12, 2, 11, 0, 0)
        replay = [build_row(e, geo, None, later) for e in comments[:5]]
        assert (await store.write(_batch(len(rows), EventType.COMMENT, replay), _CLAIM)).inserted == 0
        assert await pipeline.sql("SELECT DISTINCT ingested_at FROM comments") == [(first,)]
    finally:
        pool.close()
        await pool.wait_closed()


async def test_a_server_without_backslash_escapes_gets_rows_through_the_driver(pipeline: Pipeline) -> None:
    """In NO_BACKSLASH_ESCAPES mode the sink's encoding would be read wrong: asyncmy's
    executemany (which follows the mode) writes instead, and the text still round-trips."""
    await migrate(pipeline.settings.db)
    pool = await create_pool(pipeline.settings.db, size=1)
    try:
        async with pool.acquire() as conn:
            async with conn.cursor() as cur:
                await cur.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
            await conn.commit()
            assert not backslash_escapes(conn)
        store = EngagementStore(pool)
        geo = GeoLocation(country="GB", city="London", latitude=51.5, longitude=-0.1)
        comments = [
            parse_event(_event(f"e-n{i}", "comment", text=text), max_bytes=16384) for i, text in enumerate(_NASTY)
        ]
        rows = [build_row(e, geo, None, datetime(2026, 12, 2)) for e in comments]
        assert (await store.write(_batch(0, EventType.COMMENT, rows), _CLAIM)).inserted == len(rows)
        assert dict(await pipeline.sql("SELECT event_id, text FROM comments")) == {e.event_id: e.text for e in comments}
    finally:
        pool.close()
        await pool.wait_closed()


async def test_migrate_makes_an_existing_tables_ids_compare_as_bytes(pipeline: Pipeline) -> None:
    """A table created by an earlier version (the server's case-insensitive default collation)
    is altered by ``migrate``: then two likes whose ids differ only in case are two rows."""
    await migrate(pipeline.settings.db)
    await pipeline.sql("DROP TABLE likes")
    await pipeline.sql(
        "CREATE TABLE likes (pin_id VARCHAR(64) NOT NULL, category VARCHAR(64) NOT NULL, event_id VARCHAR(64) "
        "NOT NULL, user_id VARCHAR(64) NOT NULL, ts DATETIME(6) NOT NULL, ip VARCHAR(45) NOT NULL, country CHAR(2), "
        "region VARCHAR(128), city VARCHAR(128), latitude DOUBLE, longitude DOUBLE, ingested_at DATETIME(6) NOT NULL, "
        "PRIMARY KEY (pin_id, event_id)) DEFAULT CHARSET=utf8mb4 COLLATE utf8mb4_general_ci"
    )
    statements = await migrate(pipeline.settings.db)
    assert [s.split(" MODIFY")[0] for s in statements] == ["ALTER TABLE `likes`"]
    assert await migrate(pipeline.settings.db) == [], "a second run finds nothing to change"
    pool = await create_pool(pipeline.settings.db, size=1)
    try:
        store = EngagementStore(pool)
        now = datetime.now(UTC).replace(tzinfo=None)
        geo = GeoLocation(country="GB", city="London", latitude=51.5, longitude=-0.1)
        likes = [parse_event(_event(event_id, "like"), max_bytes=16384) for event_id in ("l-x", "L-X")]
        rows = [build_row(e, geo, None, now) for e in likes]
        assert (await store.write(_batch(0, EventType.LIKE, rows), _CLAIM)).inserted == 2
        assert sorted(r[0] for r in await pipeline.sql("SELECT event_id FROM likes")) == ["L-X", "l-x"]
    finally:
        pool.close()
        await pool.wait_closed()


async def test_workers_migrating_a_new_database_together_log_no_warning(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    """Two workers starting on a new database both find a table missing and both create it;
    the second's ``IF NOT EXISTS`` makes the server send a note, which asyncmy logs as a
    WARNING that reads like a fault. Tried on fresh databases until the two did race."""
    await migrate(pipeline.settings.db)  # the test's own database, from which the others are dropped
    caplog.set_level(logging.WARNING, logger="asyncmy")
    made: list[str] = []
    try:
        for attempt in range(10):
            db = pipeline.settings.db.model_copy(update={"database": f"{pipeline.settings.db.database}_race{attempt}"})
            made.append(db.database)
            first, second = await asyncio.gather(migrate(db), migrate(db))
            if set(first) & set(second):
                break
        assert set(first) & set(second), "the two migrations never raced in 10 tries"
        assert [r.getMessage() for r in caplog.records if r.name.startswith("asyncmy")] == []
    finally:
        for name in made:
            await pipeline.sql(f"DROP DATABASE IF EXISTS `{name}`")
