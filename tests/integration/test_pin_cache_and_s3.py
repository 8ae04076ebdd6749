"""The pin cache's fallbacks on real Kafka and MariaDB; the S3 API server for real."""

from __future__ import annotations

import asyncio

import orjson

from config import Settings
from pinapp.adapters.s3 import s3_client
from pinapp.tools.harness import Pipeline

TS = 1_700_000_000_000


def _repin(event_id: str, pin_id: str, pin: dict | None = None) -> tuple[bytes, bytes]:
    doc = {
        "event_id": event_id,
        "event_type": "repin",
        "ts": TS,
        "user_id": "u1",
        "ip": "81.2.69.160",
        "pin_id": pin_id,
    }
    if pin is not None:
        doc["pin"] = pin
    return pin_id.encode(), orjson.dumps(doc)


async def test_pin_cache_misses_fall_back_to_the_database_then_the_event(pipeline: Pipeline) -> None:
    worker = pipeline.worker()
    worker.start()
    await worker.wait_ready()  # the worker has created the tables
    # A pin SingleStore knows (from before the cache existed), never seen on the topic.
    await pipeline.sql(
        "INSERT INTO pins (pin_id, category, event_id, user_id, ts, ip, ingested_at, board_id, title, created_at) "
        "VALUES ('p-db', 'gardening', 'e-old', 'u0', '2023-01-01', '1.1.1.1', '2023-01-01', 'b0', 'old pin', "
        "'2023-01-01')"
    )
    carried = {
        "pin_id": "p-new",
        "board_id": "b7",
        "user_id": "u7",
        "title": "carried",
        "category": "travel",
        "created_at": TS,
    }
    await pipeline.produce(
        [
            _repin("r-db-1", "p-db"),
            _repin("r-db-2", "p-db"),  # database, then cache hit
            _repin("r-ev-1", "p-new", carried),
            _repin("r-ev-2", "p-new"),  # the event's pin, then a hit
            _repin("r-none", "p-nowhere"),  # nowhere: category unknown
        ]
    )
    await pipeline.wait_for_rows({"repin": 5, "pin": 2})
    await asyncio.sleep(1)
    categories = dict(await pipeline.sql("SELECT event_id, category FROM repins"))
    assert categories == {
        "r-db-1": "gardening",
        "r-db-2": "gardening",
        "r-ev-1": "travel",
        "r-ev-2": "travel",
        "r-none": "unknown",
    }
    # The pin learned from the repin is saved to SingleStore too.
    assert await pipeline.sql("SELECT title, category FROM pins WHERE pin_id = 'p-new'") == [("carried", "travel")]
    metrics = worker.metrics()
    assert {r: metrics[f"pinapp_pin_cache_total{{result={r}}}"] for r in ("database", "event", "hit", "miss")} == {
        "database": 1,
        "event": 1,
        "hit": 2,
        "miss": 1,
    }


async def test_the_s3_server_stores_and_lists_objects(test_stack: Settings) -> None:
    bucket = f"pinapp-it-{id(test_stack)}"
    async with s3_client(test_stack.s3) as s3:
        await s3.create_bucket(Bucket=bucket)
        await s3.put_object(Bucket=bucket, Key="events/dt=2024-01-01/hr=00/a.jsonl.gz", Body=b"x" * 1000)
        listed = await s3.list_objects_v2(Bucket=bucket, Prefix="events/dt=2024-01-01/")
        assert [(o["Key"], o["Size"]) for o in listed["Contents"]] == [("events/dt=2024-01-01/hr=00/a.jsonl.gz", 1000)]
        body = await (await s3.get_object(Bucket=bucket, Key="events/dt=2024-01-01/hr=00/a.jsonl.gz"))["Body"].read()
        assert body == b"x" * 1000
