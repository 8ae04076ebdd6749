"""Developing trends on the real stack: a pin whose rate jumps is found within seconds of being
written, and ordinary traffic (a big steady pin, a fluctuating one, a new one with a few repins)
is not flagged.

The events are written through Kafka and a worker, with event times spread over the last 70
minutes: the baseline hour and the recent 10 minutes the trend queries compare.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import orjson

from pinapp.tools.harness import Pipeline

MINUTE_MS = 60_000
#: (pin, events in the hour before, events in the last 10 minutes, its category, where its users are)
TRAFFIC = (
    ("p-big", 3000, 520, "art", "8.8.8.8"),  # the most engaged pin, steady: 500 expected
    ("p-steady", 60, 12, "art", "8.8.8.8"),  # 10 expected
    ("p-wobbly", 120, 26, "art", "8.8.8.8"),  # 20 expected: an ordinary fluctuation (z = 1.2)
    ("p-new", 0, 4, "art", "8.8.8.8"),  # a handful from nothing
    ("p-rising", 6, 80, "gardening", "81.2.69.160"),  # 1 expected: the trend (GB)
)


def trend_events(now_ms: int) -> list[tuple[bytes, bytes]]:
    rng = random.Random(7)
    out = []
    for pin, before, recent, category, ip in TRAFFIC:
        carried = {
            "pin_id": pin,
            "board_id": "b1",
            "user_id": "u0",
            "title": pin,
            "category": category,
            "created_at": now_ms - 7_200_000,
        }
        windows = [(11 * MINUTE_MS, 70 * MINUTE_MS)] * before + [(MINUTE_MS // 2, 9 * MINUTE_MS)] * recent
        for n, (low, high) in enumerate(windows):
            event_type = ("repin", "like", "comment")[n % 3]
            doc: dict[str, Any] = {
                "event_id": f"{pin}-{n}",
                "event_type": event_type,
                "ts": now_ms - rng.randrange(low, high),
                "user_id": f"u{rng.randrange(500)}",
                "ip": ip,
                "pin_id": pin,
            }
            if event_type == "repin":
                doc.update(board_id="b2", pin=carried)
            elif event_type == "comment":
                doc["text"] = "nice"
            out.append((pin.encode(), orjson.dumps(doc)))
    rng.shuffle(out)
    return out


async def test_a_rising_pin_is_found_and_ordinary_traffic_is_not(pipeline: Pipeline) -> None:
    alert_score = pipeline.settings.trends.alert_score
    worker = pipeline.worker()
    worker.start()
    await worker.wait_ready()
    records = trend_events(int(time.time() * 1000))
    produced = time.monotonic()
    await pipeline.produce(records)

    # Found within a bounded time of being produced: as soon as its rows are in SingleStore.
    deadline = produced + 60
    while True:
        status, doc = worker.get("/api/query/trending-pins?minutes=10&limit=10")
        assert status == 200, doc
        rows = doc["rows"]
        if rows and rows[0][0] == "p-rising" and rows[0][3] >= alert_score:
            break
        assert time.monotonic() < deadline, f"the rising pin was not found within 60 s: {rows}"
        await asyncio.sleep(1)
    found_after_s = time.monotonic() - produced
    assert found_after_s < 60
    assert doc["columns"] == ["pin_id", "recent", "baseline", "score"]
    assert doc["alert_score"] == alert_score

    await pipeline.wait_for_rows({"repin": sum(-(-(b + r) // 3) for _, b, r, _, _ in TRAFFIC)}, timeout=60)
    status, doc = worker.get("/api/query/trending-pins?minutes=10&limit=10")
    scores = {row[0]: row[3] for row in doc["rows"]}
    assert scores["p-rising"] >= alert_score
    others = {pin: s for pin, s in scores.items() if pin != "p-rising"}
    assert all(s < alert_score for s in others.values()), f"an ordinary pin flagged as a trend: {others}"
    assert "p-new" not in scores, "4 recent events are below trends.min_count"
    assert max(scores, key=scores.__getitem__) == "p-rising"
    assert scores["p-big"] < 3, "the biggest pin, steady, is not trending"

    # Its category and its users' country rise with it; the CLI gives the same ranking.
    status, doc = worker.get("/api/query/trending-categories?minutes=10&limit=5")
    assert doc["rows"][0][0] == "gardening" and doc["rows"][0][3] >= alert_score
    status, doc = worker.get("/api/query/trending-countries?minutes=10&limit=5")
    assert doc["rows"][0][0] == "GB" and doc["rows"][0][3] >= alert_score
    cli = pipeline.cli("query", "trending-pins", "--minutes", "10", "--limit", "3")
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert cli.stdout.splitlines()[2].split()[0] == "p-rising"
