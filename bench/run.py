"""`make bench`: throughput, freshness, scale-out, recovery, archive and log shipping on the local stack.

- throughput: a backlog of generated events (2% duplicates, 1% malformed) is produced to a
  fresh `events` topic, then one worker drains it; events/s = backlog / (last row written -
  worker ready), from the rows' own ``ingested_at``. In the same round, the raw consumer
  ceiling: the same backlog drained by a plain aiokafka consumer doing ``orjson.loads`` of
  every value, and pinapp's share of it.
- freshness: a worker runs while the generator produces at a fixed rate with live event
  times; freshness of a row = ``ingested_at - ts`` (produced -> committed row), reported as
  p50/p95/p99. The rate is ``--rate``, else half of this run's throughput median (the
  maximum rate, when throughput was measured first), else 5,000 events/s.

- archive: the same kind of backlog, drained by one archiver (``pinapp archiver``, default
  thresholds) into the S3 server; events/s and MB/s (record bytes, and object bytes written)
  from the archiver ready until its ``pinapp_archive_events`` counter reaches the backlog.
  Once as gzip JSON lines (the default) and once as Parquet.

- singer: a JSON-lines file of generated events (``--singer-lines`` lines) shipped to a fresh
  topic by ``pinapp singer`` (acks=all, idempotent, the topology's key per line) and, in the same
  run, by ``kcat -P -l`` (librdkafka, acks=all, idempotent, no keys); lines/s and MB/s from the
  start of shipping until the last line is acknowledged. Singer: from its "shipping" log line
  (connected, file in place) to the save of the watermark that reaches the end of the file;
  kcat: from its start until the process exits after flushing (its connecting included).

- workers: the throughput backlog drained by 1 and by 2 workers started together, alternated
  run by run in the same `make bench`.
- globe: two workers process live traffic (``--globe-rate``, default 2,000 events/s, for
  ``--duration`` s); a client of worker 0's ``/globe/stream`` stamps each repin's arrival;
  delay = arrival - the source event's Kafka timestamp, p50/p99 (target: within 2 s).
- recovery: two workers hold the state of 60,000 events, traffic flows at 1,000 events/s, one
  worker is SIGKILLed; seconds until the first new row of one of its partitions is written by
  the survivor. With standby replicas 1 (the default) and 0.

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
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner

from pinapp.adapters.kafka import ensure_topics
from pinapp.domain.experiments import load_experiments
from pinapp.domain.geo import GeoLocator
from pinapp.tools.generator import GeneratorConfig, TrafficGenerator
from pinapp.tools.harness import REPO, TABLE_OF, Pipeline, placeable_repins
from pinapp.tools.stack.packages import ensure_debian_package

OUT = Path("bench-output")
#: The archive benchmark cuts at 10,000 events or 1 s, whichever comes first: with the default
#: thresholds (100,000 events, 60 s) a 150,000-event backlog's last cut of each partition would
#: wait for the age limit, and the figure would measure the setting, not the archiver.
ARCHIVE_CUT_EVENTS = 10_000
ARCHIVE_CUT_AGE_S = 1.0


#: The checkout whose code the workers run: this one, or a baseline's worktree (--baseline).
CODE: dict[str, Path] = {"current": REPO}
_under_test = "current"


def _pipeline(tmp: str, **kwargs: Any) -> Pipeline:
    return Pipeline(Path(tmp), repo=CODE[_under_test], **kwargs)


#: The demo's two experiments, a tenth of the users in each: about one event in five carries
#: an exposure (docs/benchmarks.md, issue 18, has the cost of more).
BENCH_EXPERIMENTS = load_experiments(REPO / "config" / "experiments.toml")


def _backlog_traffic(seed: int) -> TrafficGenerator:
    """A backlog's events: 2% resent duplicates, 1% malformed, experiments as above."""
    config = GeneratorConfig(
        seed=seed, duplicate_ratio=0.02, malformed_ratio=0.01, experiments=BENCH_EXPERIMENTS, enrolled=0.1
    )
    return TrafficGenerator(config, GeoLocator(), keep_ids=False)


def _live_traffic(seed: int, rate: float, geo: GeoLocator | None = None, **config: Any) -> TrafficGenerator:
    """Clean events stamped from now at ``rate`` a second (``config``: more GeneratorConfig fields)."""
    return TrafficGenerator(
        GeneratorConfig(
            seed=seed,
            duplicate_ratio=0.0,
            malformed_ratio=0.0,
            start_ms=int(time.time() * 1000),
            step_ms=1000.0 / rate,
            **config,
        ),
        geo or GeoLocator(),
        keep_ids=False,
    )


def baseline_worktree(commit: str, *, build_singer: bool) -> Path:
    """``commit`` checked out beside this one (``bench-output/baseline``), ready to run.

    The workers run it with this checkout's virtualenv: a worker started in the worktree
    imports its ``pinapp``, ``agents``, ``tables`` and ``config`` (the current directory
    comes before the editable install). Singer's C extension is built there when needed.
    """
    sha = subprocess.run(
        ["git", "rev-parse", "--verify", f"{commit}^{{commit}}"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()
    path = REPO / OUT / "baseline"
    if path.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO, check=False, capture_output=True)
    subprocess.run(["git", "worktree", "prune"], cwd=REPO, check=True)
    subprocess.run(
        ["git", "worktree", "add", "--force", "--detach", str(path), sha], cwd=REPO, check=True, capture_output=True
    )
    if build_singer and (path / "setup.py").exists():
        subprocess.run(
            [sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=path, check=True, capture_output=True
        )
    print(f"baseline: {commit} ({sha[:12]}) in {path}", flush=True)
    return path


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = int(
        next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    )
    return f"{os.cpu_count()} cores ({model}), {mem_kb / 1024 / 1024:.0f} GiB, {platform.system()} {platform.release()}, Python {platform.python_version()}"


async def _row_times(pipeline: Pipeline) -> list[tuple[datetime, datetime]]:
    """(ts, ingested_at) of every row in every table."""
    out: list[tuple[datetime, datetime]] = []
    for table in TABLE_OF.values():
        out += await pipeline.sql(f"SELECT ts, ingested_at FROM {table}")
    return out


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads), from /proc."""
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stack_pids(pipeline: Pipeline) -> dict[str, int | None]:
    """The broker's and the database's pids, from the local stack's pid files."""
    run = pipeline.settings.stack.data_dir / "run"
    pids: dict[str, int | None] = {}
    for name in ("kafka", "mariadb"):
        try:
            pids[name] = int((run / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            pids[name] = None
    return pids


async def throughput_run(events: int, seed: int, workers: int = 1) -> dict[str, Any]:
    """A backlog of ``events`` drained by ``workers`` workers started together, timed from the
    first worker ready (it starts on the backlog while the others join) to the last row.

    With one worker, also the CPU each process spent per event over the drain (from /proc:
    the worker's threads, the broker's, the database's), the basis of how many cores a rate
    needs (docs/benchmarks.md)."""
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = _pipeline(tmp, extra_env={"PINAPP_WORKER__LOG_LEVEL": "info"})
        gen = _backlog_traffic(seed)
        await pipeline.produce(next(gen) for _ in range(events))
        expected = gen.truth.to_json()["valid_unique"]
        procs = [pipeline.worker(i) for i in range(workers)]
        try:
            for w in procs:
                w.start()
            waits = [asyncio.ensure_future(w.wait_ready()) for w in procs]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            ready = datetime.now(UTC).replace(tzinfo=None)
            pids = {"worker": procs[0].proc.pid if procs[0].proc else None, **_stack_pids(pipeline)}
            cpu_before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
            await asyncio.gather(*waits)
            # Seldom: each poll counts every table, the database's CPU taken from the drain it times
            # (the time is the last row's ingested_at, not the poll's).
            await pipeline.wait_for_rows(expected, timeout=600, poll_s=3.0)
            cpu = {name: _cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
            last = max(ingested for _, ingested in await _row_times(pipeline))
        finally:
            pipeline.stop_all()
            await pipeline.drop()
        seconds = (last - ready).total_seconds()
        cpu_us = {
            f"cpu_us_per_event_{name}": round(spent * 1e6 / events, 1) for name, spent in cpu.items() if workers == 1
        }
        return {
            "workers": workers,
            "events": events,
            "rows": sum(expected.values()),
            "seconds": round(seconds, 2),
            "events_per_s": round(events / seconds),
            **cpu_us,
        }


async def ceiling_run(events: int, seed: int) -> dict[str, Any]:
    """The raw consumer ceiling: the throughput backlog drained by a plain aiokafka consumer that
    ``orjson.loads`` every value and does nothing else, from its first record to its last."""
    from aiokafka import AIOKafkaConsumer

    with tempfile.TemporaryDirectory() as tmp:
        pipeline = _pipeline(tmp)
        gen = _backlog_traffic(seed)
        await pipeline.produce(next(gen) for _ in range(events))
        consumer = AIOKafkaConsumer(
            pipeline.settings.kafka.events_topic,
            bootstrap_servers=pipeline.settings.kafka.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        await consumer.start()
        try:
            n = decoded = 0
            first = 0.0
            while n < events:
                batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                if not first and batch:
                    first = time.perf_counter()
                for records in batch.values():
                    for record in records:
                        try:
                            orjson.loads(record.value)
                            decoded += 1
                        except orjson.JSONDecodeError:
                            pass
                    n += len(records)
            seconds = time.perf_counter() - first
        finally:
            await consumer.stop()
            await pipeline.drop()
        return {"events": n, "decoded": decoded, "seconds": round(seconds, 3), "events_per_s": round(n / seconds)}


async def recovery_run(seed: int, standby: int, state_events: int = 60_000, rate: float = 1_000) -> dict[str, Any]:
    """Time from SIGKILL of one of two workers until its partitions produce rows again on the survivor.

    The tables first hold the state of ``state_events`` events (pin cache and dedup entries);
    then traffic flows at ``rate`` with live times. The survivor notices the death after the
    session timeout, is assigned the partitions, restores their tables (from its standby
    copies, or the changelog), and processes them: the first new row of a killed worker's
    partition ends the measurement.
    """
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = _pipeline(
            tmp, extra_env={"PINAPP_WORKER__LOG_LEVEL": "info", "PINAPP_WORKER__TABLE_STANDBY_REPLICAS": str(standby)}
        )
        partitions = pipeline.settings.kafka.partitions
        partitioner = DefaultPartitioner()
        gen = _live_traffic(seed, rate)
        w0, w1 = pipeline.worker(0), pipeline.worker(1)
        try:
            for w in (w0, w1):
                w.start()
            for w in (w0, w1):
                await w.wait_ready()
            await pipeline.produce(next(gen) for _ in range(state_events))
            await pipeline.wait_for_rows(gen.truth.to_json()["valid_unique"], timeout=600)
            topic = pipeline.settings.kafka.events_topic
            victim = {int(p.split(":")[1]) for p in w1.health()[1]["partitions"] if p.startswith(f"{topic}:")}
            live = [next(gen) for _ in range(int(rate * 90))]
            ids_of_victim = {
                orjson.loads(r.value)["event_id"]
                for r in live
                if partitioner(r.key, list(range(partitions)), list(range(partitions))) in victim
            }
            producing = asyncio.create_task(pipeline.produce(live, rate=rate))
            await asyncio.sleep(10)
            w1.kill()
            killed = datetime.now(UTC).replace(tzinfo=None)
            recovered: datetime | None = None
            while recovered is None and not producing.done():
                await asyncio.sleep(0.5)
                for table in TABLE_OF.values():
                    rows = await pipeline.sql(
                        f"SELECT event_id, ingested_at FROM {table} WHERE ingested_at > %s",
                        (killed,),
                    )
                    times = [at for event_id, at in rows if event_id in ids_of_victim]
                    if times:
                        recovered = min(times) if recovered is None else min(recovered, *times)
            producing.cancel()
            if recovered is None:
                raise RuntimeError(f"the killed worker's partitions did not recover:\n{w0.log_tail()}")
        finally:
            pipeline.stop_all()
            await pipeline.drop()
        return {
            "standby_replicas": standby,
            "state_events": state_events,
            "session_timeout_s": pipeline.settings.worker.session_timeout_s,
            "recovery_s": round((recovered - killed).total_seconds(), 2),
        }


async def archive_run(events: int, seed: int, fmt: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = _pipeline(tmp, extra_env={"PINAPP_WORKER__LOG_LEVEL": "info"})
        gen = _backlog_traffic(seed)
        records = [next(gen) for _ in range(events)]
        raw_bytes = sum(len(r.key or b"") + len(r.value) for r in records)
        await pipeline.create_bucket()
        await pipeline.produce(records)
        archiver = pipeline.archiver(
            PINAPP_ARCHIVE__FORMAT=fmt,
            PINAPP_ARCHIVE__MAX_AGE_S=str(ARCHIVE_CUT_AGE_S),
            PINAPP_ARCHIVE__MAX_EVENTS=str(ARCHIVE_CUT_EVENTS),
        )
        try:
            archiver.start()
            await archiver.wait_ready()
            ready = time.monotonic()
            deadline = ready + 600
            samples: dict[str, float] = {}
            while time.monotonic() < deadline:
                samples = archiver.metrics()
                done = sum(v for k, v in samples.items() if k.startswith("pinapp_archive_events_total"))
                if done >= events:
                    break
                await asyncio.sleep(0.2)
            else:
                raise RuntimeError(f"archive incomplete after 600 s:\n{archiver.log_tail()}")
            seconds = time.monotonic() - ready
            object_bytes = sum(v for k, v in samples.items() if k.startswith("pinapp_archive_bytes_total"))
        finally:
            pipeline.stop_all()
            await pipeline.drop()
        return {
            "format": fmt,
            "events": events,
            "seconds": round(seconds, 2),
            "events_per_s": round(events / seconds),
            "record_mb_per_s": round(raw_bytes / seconds / 1e6, 2),
            "object_mb_per_s": round(object_bytes / seconds / 1e6, 2),
            "compression": round(raw_bytes / object_bytes, 1),
        }


def _singers_librdkafka(code: Path) -> Path:
    """The librdkafka the Singer built in ``code`` loads (``ldd`` of its C loop)."""
    [module] = code.glob("pinapp/singer/_rdkafka*.so")
    linked = subprocess.run(["ldd", str(module)], capture_output=True, text=True, check=True).stdout
    for line in linked.splitlines():
        name, _, where = line.strip().partition(" => ")
        if name.startswith("librdkafka"):
            return Path(where.split(" (")[0])
    raise RuntimeError(f"{module} loads no librdkafka:\n{linked}")


async def singer_run(lines: int, seed: int, kcat: str) -> dict[str, Any]:
    """Singer and kcat ship the same file; kcat runs on the librdkafka this Singer runs on
    (``LD_LIBRARY_PATH`` to a ``librdkafka.so.1`` that is it), so the two compare like for like."""
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = _pipeline(tmp)
        librdkafka = _singers_librdkafka(CODE[_under_test])
        (Path(tmp) / "lib").mkdir()
        (Path(tmp) / "lib" / "librdkafka.so.1").symlink_to(librdkafka)
        log = pipeline.logs / "app.log"
        log.parent.mkdir(parents=True)
        gen = TrafficGenerator(GeneratorConfig(seed=seed), GeoLocator(), keep_ids=False)
        with log.open("wb") as out:
            for _ in range(lines):
                out.write(next(gen).value + b"\n")
        size = log.stat().st_size
        kafka = pipeline.settings.kafka
        kcat_topic = f"{kafka.events_topic}-kcat"
        await ensure_topics(kafka, [kafka.events_topic, kafka.dlq_topic, kcat_topic])
        try:
            started = time.monotonic()
            subprocess.run(
                [
                    kcat,
                    "-P",
                    "-b",
                    kafka.bootstrap,
                    "-t",
                    kcat_topic,
                    "-l",
                    str(log),
                    "-X",
                    "acks=all",
                    "-X",
                    "enable.idempotence=true",
                    "-X",
                    "linger.ms=10",
                ],
                check=True,
                capture_output=True,
                env={**os.environ, "LD_LIBRARY_PATH": str(Path(tmp) / "lib")},
            )
            kcat_s = time.monotonic() - started

            singer = pipeline.singer()
            watermark = pipeline.tmp / "singer" / "app.watermark.json"
            singer.start()
            await singer.wait_ready()
            # Both ends from Singer's own records, not from when this loop looked: the log line
            # it writes as it starts shipping, and the last save of its watermark.
            started = _logged_at(singer.log_path, singer.ready_marker)
            while True:
                if watermark.exists():
                    marks = json.loads(watermark.read_text())["files"].values()
                    if sum(m["offset"] for m in marks) >= size:
                        finished = watermark.stat().st_mtime
                        break
                if time.time() - started > 600:
                    raise RuntimeError(f"singer did not finish:\n{singer.log_tail()}")
                await asyncio.sleep(0.05)
            singer_s = finished - started
        finally:
            pipeline.stop_all()
            await pipeline.drop()
            await _delete_topic(kafka, kcat_topic)
        return {
            "lines": lines,
            "mb": round(size / 1e6, 1),
            "singer_s": round(singer_s, 2),
            "singer_lines_per_s": round(lines / singer_s),
            "singer_mb_per_s": round(size / singer_s / 1e6, 1),
            "kcat_s": round(kcat_s, 2),
            "kcat_lines_per_s": round(lines / kcat_s),
            "kcat_mb_per_s": round(size / kcat_s / 1e6, 1),
            "singer_vs_kcat": round(kcat_s / singer_s, 2),
            "librdkafka": librdkafka.name,
        }


def _logged_at(log: Path, marker: str) -> float:
    """When the first line of ``log`` holding ``marker`` was written (its ``asctime``, ms; epoch s)."""
    for line in log.read_text(errors="replace").splitlines():
        if marker in line:
            return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    raise RuntimeError(f"no {marker!r} line in {log}")


async def _delete_topic(kafka: Any, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _percentiles(sorted_values: list[float]) -> dict[str, float]:
    """p50, p95, p99 and max of sorted seconds, rounded to the millisecond."""
    return {
        **{f"p{q}_s": round(_percentile(sorted_values, q / 100), 3) for q in (50, 95, 99)},
        "max_s": round(sorted_values[-1], 3),
    }


async def freshness_run(rate: float, duration: float, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = _pipeline(tmp, extra_env={"PINAPP_WORKER__LOG_LEVEL": "info"})
        worker = pipeline.worker()
        try:
            worker.start()
            await worker.wait_ready()
            count = int(rate * duration)
            gen = _live_traffic(seed, rate, iso_ts_ratio=0.0)
            started = time.monotonic()
            await pipeline.produce((next(gen) for _ in range(count)), rate=rate)
            achieved = count / (time.monotonic() - started)
            await pipeline.wait_for_rows(gen.truth.to_json()["valid_unique"], timeout=300)
            lags = sorted((ingested - ts).total_seconds() for ts, ingested in await _row_times(pipeline))
        finally:
            pipeline.stop_all()
            await pipeline.drop()
        return {"rate": rate, "achieved_rate": round(achieved), "rows": len(lags), **_percentiles(lags)}


async def globe_run(rate: float, duration: float, seed: int) -> dict[str, Any]:
    """Two workers process live traffic at ``rate``; a client of worker 0's ``/globe/stream``
    records when each repin arrives. Delay = arrival - the source event's Kafka timestamp
    (both clocks are this machine's). Also counts how many of the placeable repins arrived."""
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = _pipeline(tmp, extra_env={"PINAPP_WORKER__LOG_LEVEL": "info"})
        geo = GeoLocator()
        gen = _live_traffic(seed, rate, geo)
        records = [next(gen) for _ in range(int(rate * duration))]
        placeable = placeable_repins(records, geo)
        workers = [pipeline.worker(0), pipeline.worker(1)]
        try:
            for w in workers:
                w.start()
            for w in workers:
                await w.wait_ready()
            async with workers[0].globe_stream() as points:
                await pipeline.produce(records, rate=rate)
                deadline = time.monotonic() + 60
                while len({p["event_id"] for p in points} & placeable) < len(placeable) and time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
            delays = sorted((p["received_ms"] - p["kafka_ts"]) / 1000 for p in points if p["event_id"] in placeable)
        finally:
            pipeline.stop_all()
            await pipeline.drop()
        return {"rate": rate, "repins": len(placeable), "received": len(delays), **_percentiles(delays)}


MEASURES = ("throughput", "freshness", "archive", "workers", "recovery", "globe", "singer")


async def one_round(kind: str, i: int, args: argparse.Namespace, kcat: str | None) -> dict[str, dict[str, Any]]:
    """Round ``i`` of measurement ``kind``: one run of each of its series."""
    if kind == "throughput":  # and the same backlog through a plain consumer: what pinapp could be handed
        return {
            "throughput": await throughput_run(args.events, seed=1000 + i),
            "ceiling": await ceiling_run(args.events, seed=1000 + i),
        }
    if kind == "freshness":
        return {"freshness": await freshness_run(args.rate, args.duration, seed=2000 + i)}
    if kind == "archive":
        return {
            f"archive_{fmt}": await archive_run(args.events, seed=3000 + i, fmt=fmt) for fmt in ("jsonl.gz", "parquet")
        }
    if kind == "workers":  # alternated, so drift of the machine hits both alike
        return {f"workers_{n}": await throughput_run(args.events, seed=5000 + i, workers=n) for n in (1, 2)}
    if kind == "recovery":
        return {f"recovery_{standby}": await recovery_run(seed=6000 + i, standby=standby) for standby in (1, 0)}
    if kind == "globe":
        return {"globe": await globe_run(args.globe_rate, args.duration, seed=7000 + i)}
    assert kind == "singer" and kcat is not None
    return {"singer": await singer_run(args.singer_lines, seed=4000 + i, kcat=kcat)}


def medians(series: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    def median(name: str, key: str) -> float:
        rows = series.get(name, [])
        return statistics.median(r[key] for r in rows) if rows else float("nan")

    return {
        **{
            f"singer_{key}": median("singer", key)
            for key in ("singer_lines_per_s", "singer_mb_per_s", "kcat_lines_per_s", "kcat_mb_per_s", "singer_vs_kcat")
        },
        **{
            f"archive_{fmt}_{key}": median(f"archive_{fmt}", key)
            for fmt in ("jsonl.gz", "parquet")
            for key in ("events_per_s", "record_mb_per_s", "object_mb_per_s", "compression")
        },
        "events_per_s": median("throughput", "events_per_s"),
        **{
            f"cpu_us_per_event_{name}": median("throughput", f"cpu_us_per_event_{name}")
            for name in ("worker", "kafka", "mariadb")
            if all(f"cpu_us_per_event_{name}" in r for r in series.get("throughput", [{}]))
        },
        "ceiling_events_per_s": median("ceiling", "events_per_s"),
        "share_of_ceiling": (
            median("throughput", "events_per_s") / median("ceiling", "events_per_s")
            if series.get("ceiling") and series.get("throughput")
            else float("nan")
        ),
        "workers_1_events_per_s": median("workers_1", "events_per_s"),
        "workers_2_events_per_s": median("workers_2", "events_per_s"),
        "recovery_standby_s": median("recovery_1", "recovery_s"),
        "recovery_no_standby_s": median("recovery_0", "recovery_s"),
        "freshness_p50_s": median("freshness", "p50_s"),
        "freshness_p95_s": median("freshness", "p95_s"),
        "freshness_p99_s": median("freshness", "p99_s"),
        "globe_p50_s": median("globe", "p50_s"),
        "globe_p99_s": median("globe", "p99_s"),
    }


async def main() -> None:
    global _under_test  # noqa: PLW0603 - which checkout the runs use, set once per run
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=150_000)
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="events/s of the freshness benchmark (default: half of this run's throughput median, else 5,000)",
    )
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--singer-lines", type=int, default=1_000_000)
    parser.add_argument("--globe-rate", type=float, default=2_000, help="events/s of the globe benchmark")
    parser.add_argument(
        "--only",
        choices=MEASURES,
        action="append",
        help="run this measurement (repeatable; results.json then holds only these)",
    )
    parser.add_argument(
        "--baseline",
        metavar="COMMIT",
        help="also run COMMIT's code (a git worktree), alternating with this one run by run, "
        "and print each figure for both with the ratio of medians",
    )
    args = parser.parse_args()
    wanted = [kind for kind in MEASURES if not args.only or kind in args.only]
    labels = ["current"]
    if args.baseline:
        CODE["baseline"] = baseline_worktree(args.baseline, build_singer="singer" in wanted)
        labels = ["baseline", "current"]
    kcat = ensure_debian_package("kcat", ["kcat"]) if "singer" in wanted else None

    runs: dict[str, dict[str, list[dict[str, Any]]]] = {label: {} for label in labels}
    for kind in wanted:
        if kind == "freshness" and args.rate is None:  # half of the maximum: the headroom a deployment keeps
            measured = runs["current"].get("throughput")
            args.rate = round(statistics.median(r["events_per_s"] for r in measured) / 2) if measured else 5_000.0
            print(
                f"freshness at {args.rate:,.0f} events/s",
                "(half of the throughput median)" if measured else "",
                flush=True,
            )
        for i in range(args.runs):
            for label in labels:  # alternated run by run: the machine's drift hits both alike
                _under_test = label
                for name, result in (await one_round(kind, i, args, kcat)).items():
                    runs[label].setdefault(name, []).append(result)
                    print(f"{kind} run ({label}):", result, flush=True)
    _under_test = "current"
    current = runs["current"]
    throughput, freshness, singer, globe = (current.get(k, []) for k in ("throughput", "freshness", "singer", "globe"))
    archive = {fmt: current.get(f"archive_{fmt}", []) for fmt in ("jsonl.gz", "parquet")}
    scale = {n: current.get(f"workers_{n}", []) for n in (1, 2)}
    recovery = {standby: current.get(f"recovery_{standby}", []) for standby in (1, 0)}

    results = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": "make bench" + (f" BASELINE={args.baseline}" if args.baseline else ""),
        "throughput_runs": throughput,
        "ceiling_runs": current.get("ceiling", []),
        "freshness_runs": freshness,
        "archive_runs": archive,
        "singer_runs": singer,
        "workers_runs": scale,
        "recovery_runs": recovery,
        "globe_runs": globe,
        "median": medians(current),
        **(
            {"baseline": {"commit": args.baseline, "runs": runs["baseline"], "median": medians(runs["baseline"])}}
            if args.baseline
            else {}
        ),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    m = results["median"]
    fresh_rate = args.rate if args.rate is not None else float("nan")
    pipeline_session_timeout = next((r["session_timeout_s"] for r in recovery[1]), float("nan"))
    print(f"""
## Results ({results["when"]}, `{results["command"]}`)

Machine: {results["machine"]}

| measure | median of {args.runs} runs | target |
|---|---|---|
| end-to-end throughput, one worker ({args.events:,} events backlog) | {m["events_per_s"]:,.0f} events/s | >= 10,000 |
| CPU per event while one worker drains it: worker, broker, database | {m.get("cpu_us_per_event_worker", float("nan")):.0f} us, {m.get("cpu_us_per_event_kafka", float("nan")):.0f} us, {m.get("cpu_us_per_event_mariadb", float("nan")):.0f} us | |
| raw consumer ceiling: aiokafka + orjson.loads, same backlog | {m["ceiling_events_per_s"]:,.0f} events/s (pinapp: {100 * m["share_of_ceiling"]:.1f}% of it) | pinapp >= 10% |
| freshness p50 at {fresh_rate:,.0f} events/s | {m["freshness_p50_s"]:.3f} s | |
| freshness p95 at {fresh_rate:,.0f} events/s | {m["freshness_p95_s"]:.3f} s | |
| freshness p99 at {fresh_rate:,.0f} events/s | {m["freshness_p99_s"]:.3f} s | <= 1 s at half the maximum |
| archive, one archiver, gzip JSON lines | {m["archive_jsonl.gz_events_per_s"]:,.0f} events/s, {m["archive_jsonl.gz_record_mb_per_s"]:.1f} MB/s of records ({m["archive_jsonl.gz_object_mb_per_s"]:.1f} MB/s written, {m["archive_jsonl.gz_compression"]:.1f}x) | >= the throughput above |
| archive, one archiver, Parquet | {m["archive_parquet_events_per_s"]:,.0f} events/s, {m["archive_parquet_record_mb_per_s"]:.1f} MB/s of records ({m["archive_parquet_object_mb_per_s"]:.1f} MB/s written, {m["archive_parquet_compression"]:.1f}x) | >= the throughput above |
| throughput, 1 worker vs 2 workers ({args.events:,} events backlog, same run) | {m["workers_1_events_per_s"]:,.0f} vs {m["workers_2_events_per_s"]:,.0f} events/s | |
| recovery after SIGKILL of 1 of 2 workers, standby replicas 1 | {m["recovery_standby_s"]:.1f} s (session timeout {pipeline_session_timeout:.0f} s included) | |
| recovery after SIGKILL of 1 of 2 workers, no standby replicas | {m["recovery_no_standby_s"]:.1f} s | |
| live globe: Kafka -> repin on the page, 2 workers, {args.globe_rate:,.0f} events/s | p50 {m["globe_p50_s"]:.3f} s, p99 {m["globe_p99_s"]:.3f} s | <= 2 s |
| singer, {args.singer_lines:,} lines | {m["singer_singer_lines_per_s"]:,.0f} lines/s, {m["singer_singer_mb_per_s"]:.1f} MB/s | >= half of kcat |
| kcat -P, same file, same run | {m["singer_kcat_lines_per_s"]:,.0f} lines/s, {m["singer_kcat_mb_per_s"]:.1f} MB/s (singer/kcat = {m["singer_singer_vs_kcat"]:.2f}) | |
""")
    if args.baseline:
        pairs = paired_ratios(runs["baseline"], current)
        print(ab_table(args.baseline, results["baseline"]["median"], m, args.runs, pairs))


def paired_ratios(
    before: dict[str, list[dict[str, Any]]], after: dict[str, list[dict[str, Any]]]
) -> dict[str, list[float]]:
    """Each figure's ratio run by run (this checkout's run i / the baseline's run i, taken one after
    the other): the machine's drift between rounds cancels out of them, not out of the medians."""
    out: dict[str, list[float]] = {}
    for name in ("throughput", "ceiling"):
        for old, new in zip(before.get(name, []), after.get(name, []), strict=False):
            for key, value in new.items():
                if key.startswith(("events_per_s", "cpu_us_per_event_")) and old.get(key):
                    figure = "ceiling_events_per_s" if name == "ceiling" else key
                    out.setdefault(figure, []).append(value / old[key])
    return out


def ab_table(
    commit: str, before: dict[str, float], after: dict[str, float], runs: int, pairs: dict[str, list[float]]
) -> str:
    """Each figure measured for both, with the ratio of medians (this checkout / baseline) and the
    median of the run-by-run ratios (:func:`paired_ratios`)."""
    lines = [
        f"## A/B: {commit} (baseline) vs this checkout, medians of {runs} alternated runs each",
        "",
        "The ceiling runs the same code for both: its ratios show the machine's noise.",
        "",
        "| figure | baseline | this checkout | ratio of medians | median of paired ratios (min-max) | better is |",
        "|---|---|---|---|---|---|",
    ]
    for key, new in after.items():
        old = before.get(key, float("nan"))
        if new != new and old != old:  # measured for neither
            continue
        ratio = new / old if old else float("nan")
        better = "higher" if key.endswith(("_per_s", "_vs_kcat", "compression", "share_of_ceiling")) else "lower"
        digits = 0 if better == "higher" and abs(new) >= 100 else 3
        paired = pairs.get(key)
        spread = f"{statistics.median(paired):.2f} ({min(paired):.2f}-{max(paired):.2f})" if paired else ""
        lines.append(f"| {key} | {old:,.{digits}f} | {new:,.{digits}f} | {ratio:.2f} | {spread} | {better} |")
    return "\n".join(lines)


if __name__ == "__main__":
    asyncio.run(main())
