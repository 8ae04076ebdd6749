"""The web views of two running workers (real Kafka and MariaDB): tables, per-key reads routed
to the owning worker, dedup state, the dashboard's queries, metrics, and the live repin feed.

One two-worker cluster serves the whole module (starting workers is the slow part); the test
that kills a worker runs last.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest

from config import Settings
from pinapp.adapters.queries import NAMED_QUERIES
from pinapp.domain.geo import GeoLocator
from pinapp.tools.generator import GeneratedRecord
from pinapp.tools.harness import Pipeline, WorkerProcess, placeable_repins, start, traffic, wait_for


class Cluster:
    """Two workers over the same topics, with generated traffic already written."""

    def __init__(self, pipeline: Pipeline, workers: list[WorkerProcess], records: list[GeneratedRecord]) -> None:
        self.pipeline = pipeline
        self.workers = workers
        self.records = records

    def events(self, event_type: str) -> list[dict[str, Any]]:
        """The valid, unique events of one type that were produced (as JSON documents)."""
        return [json.loads(r.value) for r in self.records if r.kind == "valid" and r.event_type == event_type]


@pytest.fixture(scope="module")
async def cluster(test_stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    pipeline = Pipeline(tmp_path_factory.mktemp("web"))
    try:
        records, _, expected = traffic(pipeline, seed=71, count=4000)
        workers = [pipeline.worker(0), pipeline.worker(1)]
        await start(*workers)
        topic = pipeline.settings.kafka.events_topic
        await wait_for(lambda: all(_owns(w, topic) for w in workers), "both workers to own partitions")
        await pipeline.produce(records)
        await pipeline.wait_for_rows({t: len(ids) for t, ids in expected.items()})
        yield Cluster(pipeline, workers, records)
    finally:
        pipeline.stop_all()
        await pipeline.drop()


def _owns(worker: WorkerProcess, topic: str) -> bool:
    status, doc = worker.health()
    return status == 200 and any(p.startswith(f"{topic}:") for p in doc["partitions"])


def _urls(cluster: Cluster) -> set[str]:
    return {w.get("/health")[1]["url"].rstrip("/") for w in cluster.workers}


async def test_tables_lists_every_table_and_which_worker_owns_each_partition(cluster: Cluster) -> None:
    w0, w1 = cluster.workers
    status, doc = w0.get("/tables")
    assert status == 200
    by_name = {t["name"]: t for t in doc["tables"]}
    assert set(by_name) == {"pin_by_id", "seen_event_ids"}
    partitions = cluster.pipeline.settings.kafka.partitions
    for table in by_name.values():
        assert table["changelog_topic"].endswith(f"-{table['name']}-changelog")
        assert table["help"]
        owned = sorted(p for parts in table["owners"].values() for p in parts)
        assert owned == list(range(partitions)), table  # every partition has exactly one owner
        assert {u.rstrip("/") for u in table["owners"]} == _urls(cluster)

    status, one = w1.get("/tables/pin_by_id")
    assert status == 200 and one["name"] == "pin_by_id"
    assert one["local"]["active"], one
    assert sum(n or 0 for n in one["local_keys_estimate"].values()) > 0, one
    assert w1.get("/tables/no_such_table") == (404, {"error": "no table 'no_such_table'; see /tables"})


async def test_any_worker_answers_for_every_pin_from_its_owner(cluster: Cluster) -> None:
    pins = random.Random(3).sample(cluster.events("pin"), 40)
    served_by: set[str] = set()
    for i, event in enumerate(pins):
        worker = cluster.workers[i % 2]
        status, doc = worker.get(f"/pins/{quote(event['pin_id'])}")
        assert status == 200, (event["pin_id"], doc)
        assert doc["pin"]["pin_id"] == event["pin_id"]
        assert doc["pin"]["category"] == event["pin"]["category"]
        served_by.add(doc["served_by"].rstrip("/"))
    assert served_by == _urls(cluster), "requests were answered by their owner, on both workers"

    for worker in cluster.workers:
        assert worker.get("/pins/no-such-pin")[0] == 404
        status, doc = worker.get("/pins/" + "p" * 65)
        assert status == 400 and "pin_id" in doc["error"]
        assert worker.get("/pins/%01bad")[0] == 400


async def test_dedup_entries_are_read_on_the_partition_owner(cluster: Cluster) -> None:
    events = random.Random(4).sample(cluster.events("repin") + cluster.events("like"), 30)
    topic = cluster.pipeline.settings.kafka.events_topic
    served_by: set[str] = set()
    for i, event in enumerate(events):
        worker = cluster.workers[i % 2]
        status, doc = worker.get(f"/dedup/{quote(event['event_id'])}?key={quote(event['pin_id'])}")
        assert status == 200, (event, doc)
        assert doc["event_id"] == event["event_id"]
        assert doc["source"]["topic"] == topic and doc["source"]["offset"] >= 0
        assert doc["expired"] is False
        served_by.add(doc["served_by"].rstrip("/"))
    assert served_by == _urls(cluster)

    w0 = cluster.workers[0]
    some = events[0]
    assert w0.get(f"/dedup/no-such-event?key={quote(some['pin_id'])}")[0] == 404
    status, doc = w0.get(f"/dedup/{quote(some['event_id'])}")
    assert status == 400 and "key" in doc["error"]

    status, stats = w0.get("/dedup")
    assert status == 200, stats
    assert sorted(int(p) for p in stats["partitions"]) == list(range(cluster.pipeline.settings.kafka.partitions))
    assert {p["owner"].rstrip("/") for p in stats["partitions"].values()} == _urls(cluster)
    assert stats["entries_estimate"] > 0 and stats["unreachable"] == []
    # The generator resends ~3% of events: both workers dropped some.
    assert stats["duplicates_dropped_since_start"] > 0
    assert stats["horizon_s"] == cluster.pipeline.settings.pipeline.dedup_horizon_s


async def test_the_dashboard_queries(cluster: Cluster) -> None:
    w1 = cluster.workers[1]
    status, doc = w1.get("/api/queries")
    assert status == 200
    assert [q["name"] for q in doc["queries"]] == list(NAMED_QUERIES)  # the set: unit/adapters/test_rows_and_queries.py

    status, doc = w1.get("/api/query/top-categories?minutes=1440&limit=5")
    assert status == 200, doc
    assert doc["columns"] == ["category", "events"] and 0 < len(doc["rows"]) <= 5
    expected = {e["pin"]["category"] for e in cluster.events("pin")}
    assert {row[0] for row in doc["rows"]} <= expected | {"unknown"}

    status, doc = w1.get("/api/query/events-per-minute?minutes=1440&limit=1000")
    assert status == 200
    per_type: dict[str, int] = {}
    for _minute, event_type, events in doc["rows"]:
        per_type[event_type] = per_type.get(event_type, 0) + events
    assert per_type["repin"] == len(cluster.events("repin"))

    assert doc["complete_until"] is not None, "the watermark: minutes at or after it may still change"

    # The pin rollup holds complete minutes: sealed once the stream is past them (idle, here),
    # minute by minute, until it holds the true top 3.
    repins = Counter(e["pin_id"] for e in cluster.events("repin"))
    true_top = [n for _, n in repins.most_common(3)]
    deadline = time.monotonic() + 150
    while True:
        status, doc = w1.get("/api/query/most-repinned?minutes=1440&limit=3")
        assert status == 200 and doc["columns"] == ["pin_id", "title", "category", "repins"]
        if [row[3] for row in doc["rows"]] == true_top:
            break
        assert time.monotonic() < deadline, f"not the true top 3 {true_top} after 150 s: {doc}"
        await asyncio.sleep(2)
    assert doc["pins_sealed_until"] is not None

    assert w1.get("/api/query/no-such-query")[0] == 404
    for bad in ("minutes=abc", "minutes=0", "minutes=99999999", "limit=-1", "limit=100000"):
        status, doc = w1.get(f"/api/query/top-countries?{bad}")
        assert status == 400, (bad, doc)
        assert ("minutes" in doc["error"]) or ("limit" in doc["error"])


async def test_metrics_cover_every_stage_and_the_consumer_lag(cluster: Cluster) -> None:
    totals: dict[str, float] = {}
    for worker in cluster.workers:
        for name, value in worker.metrics().items():
            totals[name] = totals.get(name, 0.0) + value
    valid = sum(r.kind == "valid" for r in cluster.records)
    assert totals["pinapp_events_in_total"] >= len(cluster.records)
    assert totals["pinapp_stage_events_total{outcome=out,stage=sink}"] == valid
    assert totals["pinapp_stage_events_total{outcome=dead_lettered,stage=validate}"] > 0
    assert totals["pinapp_stage_events_total{outcome=duplicate,stage=dedup}"] > 0
    assert totals["pinapp_pin_cache_total{result=hit}"] > 0
    assert totals["pinapp_sink_batch_seconds_count"] > 0
    assert totals["pinapp_live_points_published_total"] > 0

    def lag() -> dict[str, float]:
        return {k: v for w in cluster.workers for k, v in w.metrics().items() if k.startswith("pinapp_consumer_lag{")}

    assert len(lag()) == cluster.pipeline.settings.kafka.partitions, lag()
    # Everything produced is processed; the lag reaches 0 at the next commit (every ~3 s).
    await wait_for(lambda: all(v == 0 for v in lag().values()), "the consumer lag to reach 0", 30)


async def test_every_worker_streams_every_repin_of_the_cluster(cluster: Cluster) -> None:
    pipeline = cluster.pipeline
    more, _, _ = traffic(pipeline, seed=72, count=1500)
    placeable = placeable_repins(more, GeoLocator())
    assert len(placeable) > 50
    async with cluster.workers[0].globe_stream() as seen0, cluster.workers[1].globe_stream() as seen1:
        await pipeline.produce(more)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got0 = {p["event_id"] for p in seen0} & placeable
            got1 = {p["event_id"] for p in seen1} & placeable
            if got0 == got1 == placeable:
                break
            await asyncio.sleep(0.5)
    # Each worker processes only its partitions, yet both streams carry every repin.
    assert got0 == got1 == placeable, (len(got0), len(got1), len(placeable))
    assert {p["event_id"] for p in seen0} <= placeable  # nothing but the new repins
    point = next(p for p in seen0 if p["event_id"] in placeable)
    assert set(point) == {
        "event_id",
        "pin_id",
        "category",
        "country",
        "city",
        "lat",
        "lon",
        "ts",
        "kafka_ts",
        "received_ms",
    }  # the last one added by the test client
    assert -90 <= point["lat"] <= 90 and -180 <= point["lon"] <= 180
    cluster.records.extend(more)


async def test_pages_and_views_carry_no_secrets(cluster: Cluster) -> None:
    worker = cluster.workers[0]
    secret = cluster.pipeline.settings.s3.secret_access_key.get_secret_value()
    for path in (
        "/",
        "/globe",
        "/static/globe.js",
        "/static/dashboard.js",
        "/tables",
        "/tables/pin_by_id",
        "/dedup",
        "/health",
        "/metrics",
        "/api/queries",
        "/api/query/top-countries",
    ):
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}{path}", timeout=10) as resp:
            assert resp.status == 200, path
            body = resp.read().decode()
        assert secret not in body and "password" not in body.lower() and "secret" not in body.lower(), path


async def test_a_request_for_a_dead_workers_key_is_503_not_500(cluster: Cluster) -> None:
    """Runs last: it kills a worker. Until the group notices (session timeout), the
    assignment still names the dead worker; a forwarded request then fails cleanly."""
    w0, w1 = cluster.workers
    url1 = w1.get("/health")[1]["url"].rstrip("/")
    pins = cluster.events("pin")
    theirs = next(e for e in pins if w0.get(f"/pins/{quote(e['pin_id'])}")[1].get("served_by", "").rstrip("/") == url1)
    w1.kill()
    status, doc = w0.get(f"/pins/{quote(theirs['pin_id'])}")
    assert status == 503, doc
    assert "did not answer" in doc["error"] or "rebalancing" in doc["error"]
    # Once the survivor owns every partition, it answers itself.
    topic = cluster.pipeline.settings.kafka.events_topic
    await wait_for(
        lambda: (
            len([p for p in w0.health()[1]["partitions"] if p.startswith(f"{topic}:")])
            == cluster.pipeline.settings.kafka.partitions
        ),
        "the survivor to own every partition",
        120,
    )
    await wait_for(lambda: w0.get(f"/pins/{quote(theirs['pin_id'])}")[0] == 200, "the pin from the survivor", 60)
