"""`make bench-queries`: what users see, timed at realistic fill, on the rollups and on the raw rows.

Fill: the generator's traffic (2% resent duplicates, a tenth of users in the bench's
experiments) with event times spread over ``--hours`` at ``--rate`` events a second of event
time, produced to Kafka while one worker drains it (generator -> Kafka -> worker -> SingleStore:
the rollups are the stream's own). A fill is kept under a stable name (its database and topics)
and reused by ``--reuse-fill``; ``--drop-fill`` deletes it. Never run by ``make test``.

Timed in-process (``run_query``, as the dashboard's web view runs it, no HTTP or CLI start-up),
with the query's "now" at the fill's end: every named query at each ``--windows`` (p50/p99 of
``--runs``), the dashboard's round (its seven queries at once on a pool of four, as the web's),
the experiments page (allocation, engagement and timeline of each experiment) and the alerter's
round (the three trend queries and each experiment's sample-ratio test); then each named query
on the raw tables, as the code before the rollups ran it (``--raw-runs`` times).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bench.run import BENCH_EXPERIMENTS, OUT, machine
from config import TrendSettings
from pinapp.adapters.db import create_pool
from pinapp.adapters.queries import (
    ALLOCATION_SQL,
    EXPERIMENT_ENGAGEMENT_SQL,
    NAMED_QUERIES,
    NEW_USERS_SQL,
    experiment_params,
    freshness,
    query_params,
    run_query,
)
from pinapp.domain.geo import GeoLocator
from pinapp.domain.rollups import MINUTE
from pinapp.tools.generator import GeneratorConfig, TrafficGenerator
from pinapp.tools.harness import Pipeline

#: The raw-table queries the rollups replace (the named queries before them, "now" a parameter).
_RECENT = "ts >= %(now)s - INTERVAL %(minutes)s MINUTE"
_TYPES = (("pin", "pins"), ("repin", "repins"), ("comment", "comments"), ("like", "likes"), ("login", "logins"))


def _raw_trend(item: str, tables: tuple[str, ...]) -> str:
    since_recent = "%(now)s - INTERVAL %(minutes)s MINUTE"
    since_baseline = "%(now)s - INTERVAL (%(minutes)s + %(baseline_minutes)s) MINUTE"
    events = " UNION ALL ".join(f"SELECT {item} AS item, ts FROM {t} WHERE ts >= {since_baseline}" for t in tables)
    per_item = (
        f"SELECT item, CAST(SUM(ts >= {since_recent}) AS SIGNED) AS recent, CAST(SUM(ts < {since_recent}) AS SIGNED) "
        f"AS baseline FROM ({events}) e WHERE item IS NOT NULL GROUP BY item"
    )
    expected = "(c.baseline * c.recent_total / c.baseline_total)"
    return (
        f"SELECT c.item, c.recent, c.baseline, ROUND((c.recent - {expected}) / SQRT({expected} + %(prior)s), 2) AS s "
        "FROM (SELECT item, recent, baseline, SUM(recent) OVER () AS recent_total, SUM(baseline) OVER () AS "
        f"baseline_total FROM ({per_item}) g) c WHERE c.recent >= %(min_count)s AND c.recent >= %(min_share)s * "
        "c.recent_total AND c.baseline_total > 0 ORDER BY s DESC, c.item LIMIT %(limit)s"
    )


RAW = {
    "events-per-minute": "SELECT DATE_FORMAT(ts, '%%Y-%%m-%%d %%H:%%i') AS minute, event_type, COUNT(*) FROM ("
    + " UNION ALL ".join(f"SELECT '{t}' AS event_type, ts FROM {table} WHERE {_RECENT}" for t, table in _TYPES)
    + ") e GROUP BY minute, event_type ORDER BY minute DESC, event_type LIMIT %(limit)s",
    "top-categories": "SELECT category, COUNT(*) AS n FROM ("
    + " UNION ALL ".join(f"SELECT category FROM {t} WHERE {_RECENT}" for t in ("pins", "repins", "comments", "likes"))
    + ") e GROUP BY category ORDER BY n DESC, category LIMIT %(limit)s",
    "top-countries": "SELECT COALESCE(country, '??') AS c, COUNT(*) AS n FROM ("
    + " UNION ALL ".join(f"SELECT country FROM {t} WHERE {_RECENT}" for _, t in _TYPES)
    + ") e GROUP BY c ORDER BY n DESC, c LIMIT %(limit)s",
    "most-repinned": "SELECT r.pin_id, MAX(p.title), MAX(r.category), COUNT(*) AS n FROM repins r LEFT JOIN pins p "
    f"ON p.pin_id = r.pin_id WHERE r.{_RECENT} GROUP BY r.pin_id ORDER BY n DESC, r.pin_id LIMIT %(limit)s",
    "trending-pins": _raw_trend("pin_id", ("repins", "comments", "likes")),
    "trending-categories": _raw_trend("category", ("pins", "repins", "comments", "likes")),
    "trending-countries": _raw_trend("country", tuple(t for _, t in _TYPES)),
}


def _pipeline(name: str) -> Pipeline:
    return Pipeline(Path(tempfile.gettempdir()) / f"pinapp-fill-{name}", name=name)


async def fill(hours: float, rate: float, *, reuse: bool, seed: int = 27) -> tuple[Pipeline, datetime]:
    """The fill's pipeline and its end (event time); made unless ``reuse`` finds it finished."""
    name = f"fill{int(hours * 60)}m{int(rate)}"
    pipeline = _pipeline(name)
    if reuse:
        try:
            rows = await pipeline.sql("SELECT ended FROM bench_fill WHERE finished")
        except Exception:  # noqa: BLE001 - no such database or table: fill it
            rows = []
        if rows:
            print(f"fill {name}: reused (ends {rows[0][0]})")
            return pipeline, rows[0][0]
    await pipeline.drop()
    events = int(hours * 3600 * rate)
    start = datetime.now(UTC).replace(tzinfo=None, second=0, microsecond=0) - timedelta(hours=hours)
    config = GeneratorConfig(
        seed=seed,
        duplicate_ratio=0.02,
        malformed_ratio=0.0,
        experiments=BENCH_EXPERIMENTS,
        enrolled=0.1,
        start_ms=int(start.replace(tzinfo=UTC).timestamp() * 1000),
        step_ms=1000.0 / rate,
    )
    gen = TrafficGenerator(config, GeoLocator(), keep_ids=False)
    pipeline.tmp.mkdir(parents=True, exist_ok=True)
    worker = pipeline.worker()
    worker.start()
    await worker.wait_ready(180)
    began = time.monotonic()
    print(f"fill {name}: {events:,} events over {hours} h of event time at {rate:,.0f}/s")
    await pipeline.produce(next(gen) for _ in range(events))
    produced = time.monotonic() - began
    expected = sum(gen.truth.to_json()["valid_unique"].values())
    while True:
        counted = (await pipeline.sql("SELECT CAST(COALESCE(SUM(events), 0) AS SIGNED) FROM rollup_types"))[0][0]
        if counted >= expected:
            break
        print(f"  {counted:,} of {expected:,} events written ({time.monotonic() - began:,.0f} s)", flush=True)
        await asyncio.sleep(30)
    ended = start + timedelta(hours=hours)
    await asyncio.sleep(30)  # the sealer's last rounds
    worker.stop()
    await pipeline.sql(
        "CREATE TABLE IF NOT EXISTS bench_fill (ended DATETIME, events BIGINT, finished BOOL, seconds DOUBLE)"
    )
    await pipeline.sql(
        "INSERT INTO bench_fill VALUES (%s, %s, TRUE, %s)", (ended, expected, round(time.monotonic() - began, 1))
    )
    print(f"fill {name}: {expected:,} events in {time.monotonic() - began:,.0f} s (produced in {produced:,.0f} s)")
    return pipeline, ended


async def _timed(runs: int, call: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 1),
        "runs": runs,
    }


async def measure(pipeline: Pipeline, now: datetime, windows: list[int], runs: int, raw_runs: int) -> dict[str, Any]:
    pool = await create_pool(pipeline.settings.db, size=4, read_timeout=None)  # the raw tables' scans take minutes
    trends = TrendSettings()
    topic = pipeline.settings.kafka.events_topic
    out: dict[str, Any] = {"rows": {}}
    for table in ("repins", "rollup_types", "rollup_categories", "rollup_countries", "rollup_pins"):
        out["rows"][table] = (await pipeline.sql(f"SELECT COUNT(*) FROM {table}"))[0][0]
    try:
        for minutes in windows:
            params = query_params(minutes, 10, trends, now=now - MINUTE)
            for name, query in NAMED_QUERIES.items():
                p = {**params, "limit": (minutes + 2) * 5} if name == "events-per-minute" else params
                out[f"{name}@{minutes}"] = await _timed(runs, lambda q=query, p=p: run_query(pool, q.sql, p))

            async def dashboard(m: int = minutes, prm: dict[str, Any] = params) -> None:
                trend = query_params(5, 8, trends, now=now - MINUTE)
                await asyncio.gather(
                    run_query(pool, NAMED_QUERIES["events-per-minute"].sql, {**prm, "limit": (m + 2) * 5}),
                    run_query(pool, NAMED_QUERIES["top-categories"].sql, prm),
                    run_query(pool, NAMED_QUERIES["top-countries"].sql, prm),
                    run_query(pool, NAMED_QUERIES["most-repinned"].sql, prm),
                    *(run_query(pool, NAMED_QUERIES[q].sql, trend) for q in NAMED_QUERIES if q.startswith("trending")),
                    freshness(pool, topic),
                )

            out[f"dashboard@{minutes}"] = await _timed(runs, dashboard)

        async def experiments_page() -> None:
            for e in BENCH_EXPERIMENTS:
                prm = experiment_params(e.name, e.start, now=now - MINUTE)
                for sql in (ALLOCATION_SQL, EXPERIMENT_ENGAGEMENT_SQL, NEW_USERS_SQL):
                    await run_query(pool, sql, prm)

        async def alerter_round() -> None:
            trend = query_params(5, 20, trends, now=now - MINUTE)
            await freshness(pool, topic)
            for q in ("trending-pins", "trending-categories", "trending-countries"):
                await run_query(pool, NAMED_QUERIES[q].sql, trend)
            for e in BENCH_EXPERIMENTS:
                await run_query(pool, ALLOCATION_SQL, experiment_params(e.name, e.start, now=now - MINUTE))

        out["experiments-page"] = await _timed(runs, experiments_page)
        out["alerter-round"] = await _timed(runs, alerter_round)
        if raw_runs:
            for minutes in windows:
                raw_params = {"now": now, "minutes": minutes, "limit": 10, **_trend_params(minutes, trends)}
                for name, sql in RAW.items():
                    p = {**raw_params, "limit": (minutes + 2) * 5} if name == "events-per-minute" else raw_params
                    out[f"raw {name}@{minutes}"] = await _timed(raw_runs, lambda s=sql, p=p: run_query(pool, s, p))
    finally:
        pool.close()
        await pool.wait_closed()
    return out


def _trend_params(minutes: int, trends: TrendSettings) -> dict[str, Any]:
    return {
        "baseline_minutes": minutes * trends.baseline_factor,
        "min_count": trends.min_count,
        "min_share": trends.min_share,
        "prior": trends.prior,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=1.0, help="event time the fill spans")
    parser.add_argument("--rate", type=float, default=2000, help="events a second of event time (the demo's: 2,000)")
    parser.add_argument("--windows", default="15,60", help="query windows, minutes (6-hour and 24-hour: 360,1440)")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--raw-runs", type=int, default=3, help="runs on the raw tables (0: none)")
    parser.add_argument("--reuse-fill", action="store_true", help="reuse a finished fill of the same hours and rate")
    parser.add_argument("--drop-fill", action="store_true", help="delete the fill afterwards")
    args = parser.parse_args()
    pipeline, ended = await fill(args.hours, args.rate, reuse=args.reuse_fill)
    results = await measure(pipeline, ended, [int(w) for w in args.windows.split(",")], args.runs, args.raw_runs)
    results["fill"] = {"hours": args.hours, "rate": args.rate, "ended": str(ended), "machine": machine()}
    OUT.mkdir(exist_ok=True)
    target = OUT / f"queries-{pipeline.name}.json"
    target.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print(f"\n{machine()}; fill {args.hours} h at {args.rate:,.0f} events/s; rows: {results['rows']}")
    print("| query | p50 ms | p99 ms | runs |\n|---|---|---|---|")
    for key, value in results.items():
        if isinstance(value, dict) and "p50_ms" in value:
            print(f"| {key} | {value['p50_ms']} | {value['p99_ms']} | {value['runs']} |")
    if args.drop_fill:
        await pipeline.drop()


if __name__ == "__main__":
    asyncio.run(main())
