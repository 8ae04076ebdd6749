"""The SingleStore sink's row rules on the real database (MariaDB standing in)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from pinapp.db import EngagementStore, create_pool, migrate
from pinapp.events import EventType, parse_event
from pinapp.geo import GeoLocation
from pinapp.records import Pin
from pinapp.rows import build_row, pin_row
from tests.integration.harness import Pipeline

_PIN = {"pin_id": "p-1", "board_id": "b-1", "user_id": "u-1", "title": "a pin", "category": "travel",
        "created_at": 1_795_000_000_000}


def _event(event_id: str, event_type: str, **extra: object) -> bytes:
    return orjson.dumps({"event_id": event_id, "event_type": event_type, "user_id": "u-2", "pin_id": "p-1",
                         "ts": 1_795_000_000_500, "ip": "81.2.69.142", **extra})


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
        await store.write({EventType.REPIN: [build_row(repin, geo, pin, now)]}, [learned])
        assert await pipeline.sql("SELECT event_id FROM pins") == [("e-repin",)]
        await store.write({EventType.PIN: [own_row]})
        assert await pipeline.sql("SELECT event_id, user_id, title FROM pins") == [("e-pin", "u-1", "a pin")]

        # A later learned row (or a replay of the repin) never replaces the pin's own row,
        # and a replay of the pin's own event leaves it as it is.
        await store.write({}, [learned])
        await store.write({EventType.PIN: [own_row]}, [learned])
        assert await pipeline.sql("SELECT event_id FROM pins") == [("e-pin",)]
        assert await pipeline.sql("SELECT event_id FROM repins") == [("e-repin",)]
    finally:
        pool.close()
        await pool.wait_closed()
