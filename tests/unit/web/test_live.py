"""The live feed's record format and its fan-out (no Kafka needed for these)."""

from __future__ import annotations

import asyncio

from config import KafkaSettings
from pinapp.domain.repin_points import RepinPoint, decode_points, encode_points
from pinapp.web.live_feed import LiveFeed


def _point(i: int) -> RepinPoint:
    return RepinPoint(
        event_id=f"e{i}",
        pin_id="p1",
        category="travel",
        country="FR",
        city="Paris",
        lat=48.85,
        lon=2.35,
        ts=1_700_000_000_000 + i,
        kafka_ts=1_700_000_000_500 + i,
    )


def test_points_round_trip_as_one_json_record() -> None:
    points = [_point(1), _point(2)]
    decoded = decode_points(encode_points(points))
    assert [p["event_id"] for p in decoded] == ["e1", "e2"]
    assert decoded[0] == {
        "event_id": "e1",
        "pin_id": "p1",
        "category": "travel",
        "country": "FR",
        "city": "Paris",
        "lat": 48.85,
        "lon": 2.35,
        "ts": 1_700_000_000_001,
        "kafka_ts": 1_700_000_000_501,
    }


def test_records_that_are_not_point_lists_yield_nothing() -> None:
    for value in (None, b"", b"not json", b"[1, 2]", b'{"points": 3}', b'{"other": []}'):
        assert decode_points(value) == []
    assert decode_points(b'{"points": [1, {"event_id": "e"}]}') == [{"event_id": "e"}]


async def test_a_slow_subscriber_loses_its_oldest_batches_not_the_newest() -> None:
    feed = LiveFeed(KafkaSettings(bootstrap="127.0.0.1:1"), "t", queue_size=2)
    async with feed.subscribe() as slow, feed.subscribe() as other:
        for i in range(5):
            feed.publish([{"n": i}])
        assert [slow.get_nowait()[0]["n"] for _ in range(2)] == [3, 4]
        assert other.qsize() == 2
    feed.publish([{"n": 9}])  # nobody subscribed: nothing kept
    assert slow.empty() and isinstance(slow, asyncio.Queue)
