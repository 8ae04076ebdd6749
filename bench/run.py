"""`make bench`: end-to-end throughput and freshness of one worker on the local stack.

- throughput: a backlog of generated events (2% duplicates, 1% malformed) is produced to a
  fresh `events` topic, then one worker drains it; events/s = backlog / (last row written -
  worker ready), from the rows' own ``ingested_at``.
- freshness: a worker runs while the generator produces at a fixed rate (5,000 events/s) with
  live event times; freshness of a row = ``ingested_at - ts`` (produced -> committed row),
  reported as p50/p95/p99.

Each measurement runs ``--runs`` times on a fresh app id, topics and database; the medians
are reported. Results go to bench-output/results.json and are printed as Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pinapp.generator import GeneratorConfig, TrafficGenerator
from pinapp.geo import GeoLocator
from tests.integration.harness import TABLE_OF, Pipeline

OUT = Path("bench-output")


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")))
    return f"{os.cpu_count()} cores ({model}), {mem_kb / 1024 / 1024:.0f} GiB, {platform.system()} {platform.release()}, Python {platform.python_version()}"


async def _row_times(pipeline: Pipeline) -> list[tuple[datetime, datetime]]:
    """(ts, ingested_at) of every row in every table."""
    out: list[tuple[datetime, datetime]] = []
    for table in TABLE_OF.values():
        out += await pipeline.sql(f"SELECT ts, ingested_at FROM {table}")  # noqa: S608
    return out


async def throughput_run(events: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = Pipeline(Path(tmp), extra_env={"PINAPP_WORKER__LOG_LEVEL": "info"})
        gen = TrafficGenerator(GeneratorConfig(seed=seed, duplicate_ratio=0.02, malformed_ratio=0.01), GeoLocator(), keep_ids=False)
        await pipeline.produce(next(gen) for _ in range(events))
        expected = gen.truth.to_json()["valid_unique"]
        worker = pipeline.worker()
        try:
            worker.start()
            await worker.wait_ready()
            ready = datetime.now(UTC).replace(tzinfo=None)
            await pipeline.wait_for_rows(expected, timeout=600)
            last = max(ingested for _, ingested in await _row_times(pipeline))
        finally:
            pipeline.stop_all()
            await pipeline.drop()
        seconds = (last - ready).total_seconds()
        return {"events": events, "rows": sum(expected.values()), "seconds": round(seconds, 2),
                "events_per_s": round(events / seconds)}


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def freshness_run(rate: float, duration: float, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = Pipeline(Path(tmp), extra_env={"PINAPP_WORKER__LOG_LEVEL": "info"})
        worker = pipeline.worker()
        try:
            worker.start()
            await worker.wait_ready()
            count = int(rate * duration)
            gen = TrafficGenerator(
                GeneratorConfig(seed=seed, duplicate_ratio=0.0, malformed_ratio=0.0, iso_ts_ratio=0.0,
                                start_ms=int(time.time() * 1000), step_ms=1000.0 / rate),
                GeoLocator(), keep_ids=False,
            )
            started = time.monotonic()
            await pipeline.produce((next(gen) for _ in range(count)), rate=rate)
            achieved = count / (time.monotonic() - started)
            await pipeline.wait_for_rows(gen.truth.to_json()["valid_unique"], timeout=300)
            lags = sorted((ingested - ts).total_seconds() for ts, ingested in await _row_times(pipeline))
        finally:
            pipeline.stop_all()
            await pipeline.drop()
        return {"rate": rate, "achieved_rate": round(achieved), "rows": len(lags),
                "p50_s": round(_percentile(lags, 0.50), 3), "p95_s": round(_percentile(lags, 0.95), 3),
                "p99_s": round(_percentile(lags, 0.99), 3), "max_s": round(lags[-1], 3)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=150_000)
    parser.add_argument("--rate", type=float, default=5_000)
    parser.add_argument("--duration", type=float, default=30)
    args = parser.parse_args()

    throughput = [await throughput_run(args.events, seed=1000 + i) for i in range(args.runs)]
    for r in throughput:
        print("throughput run:", r, flush=True)
    freshness = [await freshness_run(args.rate, args.duration, seed=2000 + i) for i in range(args.runs)]
    for r in freshness:
        print("freshness run:", r, flush=True)

    def median(rows: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    results = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": "make bench",
        "throughput_runs": throughput,
        "freshness_runs": freshness,
        "median": {
            "events_per_s": median(throughput, "events_per_s"),
            "freshness_p50_s": median(freshness, "p50_s"),
            "freshness_p95_s": median(freshness, "p95_s"),
            "freshness_p99_s": median(freshness, "p99_s"),
        },
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    m = results["median"]
    print(f"""
## Results ({results['when']}, `{results['command']}`)

Machine: {results['machine']}

| measure | median of {args.runs} runs | target |
|---|---|---|
| end-to-end throughput, one worker ({args.events:,} events backlog) | {m['events_per_s']:,.0f} events/s | >= 10,000 |
| freshness p50 at {args.rate:,.0f} events/s | {m['freshness_p50_s']:.3f} s | |
| freshness p95 at {args.rate:,.0f} events/s | {m['freshness_p95_s']:.3f} s | |
| freshness p99 at {args.rate:,.0f} events/s | {m['freshness_p99_s']:.3f} s | <= 2 s |
""")


if __name__ == "__main__":
    asyncio.run(main())
