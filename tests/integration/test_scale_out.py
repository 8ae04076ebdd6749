"""Several workers of one app on real Kafka, MariaDB and the S3 server, through faults.

Every test ends with ``pinapp audit`` against the generator's ground truth: every valid event
has exactly one row in its table and is in the S3 archive, every offset is archived once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import orjson

from config import Settings
from pinapp.domain.dead_letters import HEADER_PREFIX
from pinapp.tools.generator import GeneratedRecord
from pinapp.tools.harness import Pipeline, WorkerProcess, assert_clean, start, traffic, wait_for
from pinapp.tools.stack.kafka import KafkaService
from pinapp.tools.stack.services import MariaDBService
from pinapp.tools.stack.stack import Stack

RATE = 800  # events/s offered: a backlog the workers can clear on 2 cores


@contextlib.asynccontextmanager
async def _producing(pipeline: Pipeline, records: list[GeneratedRecord], rate: float = RATE) -> AsyncIterator[None]:
    """Produce ``records`` at ``rate`` in the background; on exit, wait until all are sent."""
    task = asyncio.create_task(pipeline.produce(records, rate=rate))
    try:
        yield
    finally:
        await task


def _sink_state(worker: WorkerProcess, sink: str) -> str | None:
    """``/health``'s state of one sink (``None``: not listed, or the worker not answering)."""
    try:
        return worker.health()[1].get("sinks", {}).get(sink, {}).get("state")
    except OSError:
        return None


def _source_partitions(worker: WorkerProcess, topic: str) -> set[str]:
    try:
        status, doc = worker.health()
    except OSError:  # not listening (yet, or any more)
        return set()
    return {p for p in doc["partitions"] if p.startswith(f"{topic}:")} if status in (200, 503) else set()


async def test_a_killed_worker_is_taken_over_and_the_audit_is_clean(pipeline: Pipeline) -> None:
    records, truth, _ = traffic(pipeline, seed=51, count=12_000)
    topic = pipeline.settings.kafka.events_topic
    await pipeline.create_bucket()
    w0, w1, archiver = pipeline.worker(0), pipeline.worker(1), pipeline.archiver()
    await start(w0, w1, archiver)

    async with _producing(pipeline, records):
        await wait_for(lambda: _source_partitions(w0, topic) and _source_partitions(w1, topic), "both own partitions")
        await asyncio.sleep(4)
        w1.kill()
        # The survivor takes every partition (its state from the changelogs / standbys).
        await wait_for(
            lambda: len(_source_partitions(w0, topic)) == pipeline.settings.kafka.partitions,
            "the survivor to own every partition",
            timeout=120,
        )
        status, doc = w0.health()
        assert status == 200 and doc["status"] == "ok", doc
        assert doc["sinks"]["singlestore"]["state"] == "ok" and isinstance(doc["lag_total"], int), doc
    w1.start()
    await w1.wait_ready(180)
    assert_clean(pipeline, truth, w0, w1, archiver)
    await wait_for(lambda: _source_partitions(w1, topic), "the restarted worker to own partitions again")


async def test_a_worker_added_mid_stream_keeps_the_audit_clean_and_the_pin_cache_whole(
    test_stack: Settings, tmp_path: Path
) -> None:
    # Six partitions: with four, faust's sticky assignor leaves a third worker only standbys
    # (two each is already balanced), which is the README's point about partition counts.
    pipeline = Pipeline(tmp_path, extra_env={"PINAPP_KAFKA__PARTITIONS": "6"})
    try:
        await _added_worker(pipeline)
    finally:
        pipeline.stop_all()
        await pipeline.drop()


async def _added_worker(pipeline: Pipeline) -> None:
    records, truth, ids = traffic(pipeline, seed=52, count=10_000)
    topic = pipeline.settings.kafka.events_topic
    await pipeline.create_bucket()
    w0, w1, w2, archiver = pipeline.worker(0), pipeline.worker(1), pipeline.worker(2), pipeline.archiver()
    await start(w0, w1, archiver)
    async with _producing(pipeline, records):
        await asyncio.sleep(4)
        w2.start()
        await w2.wait_ready(180)
    assert_clean(pipeline, truth, w0, w1, w2, archiver)
    owners = [_source_partitions(w, topic) for w in (w0, w1, w2)]
    assert all(owners), f"every worker owns partitions after the rebalance: {owners}"

    # Any worker answers for every pin: the request is routed to the pin's owner.
    pin_ids = [orjson.loads(r.value)["pin_id"] for r in records if r.kind == "valid" and r.event_type == "pin"]
    assert len(pin_ids) == len(ids["pin"]) > 100
    served_by: set[str] = set()
    for pin_id in pin_ids:
        status, body = w0.get(f"/pins/{pin_id}")
        assert status == 200, (pin_id, status, body)
        assert body["pin"]["pin_id"] == pin_id
        served_by.add(body["served_by"])
    assert len(served_by) == 3, served_by
    status, body = w1.get("/pins/no-such-pin")
    assert status == 404 and "error" in body


async def test_a_database_outage_and_a_broker_restart_mid_stream_lose_and_double_nothing(pipeline: Pipeline) -> None:
    records, truth, _ = traffic(pipeline, seed=53, count=14_000)
    first, rest = records[:11_000], records[11_000:]
    await pipeline.create_bucket()
    w0, w1, archiver = pipeline.worker(0), pipeline.worker(1), pipeline.archiver()
    await start(w0, w1, archiver)
    stack = Stack(pipeline.settings)
    mariadb, kafka = MariaDBService(pipeline.settings), KafkaService(pipeline.settings)

    async with _producing(pipeline, first):
        await asyncio.sleep(2)
        assert mariadb.process.stop(), "the test database should have been running"
        try:
            # Sinks retry, partitions stop being consumed (backpressure), workers stay up.
            await wait_for(lambda: all(w.health()[0] == 503 for w in (w0, w1)), "/health to report the outage")
            rss_at_start = [w.rss_mb() for w in (w0, w1)]
            await asyncio.sleep(28)
            for w in (w0, w1):
                status, doc = w.health()
                assert w.alive and status == 503, doc
                assert doc["sinks"]["singlestore"]["state"] == "retrying" and doc["sinks"]["singlestore"]["last_error"]
                assert doc["sinks"]["brokers"]["state"] == "ok", f"a database outage reported as the brokers': {doc}"
            # The dashboard's data says the database is down; it is not a server error.
            status, doc = w0.get("/api/query/top-countries")
            assert status == 503 and ("query failed" in doc["error"] or "cannot connect" in doc["error"]), (status, doc)
            rss_at_end = [w.rss_mb() for w in (w0, w1)]
        finally:
            await asyncio.to_thread(stack.up)  # the database only; the rest is running
    assert all(end < start + 150 for start, end in zip(rss_at_start, rss_at_end, strict=True)), (
        rss_at_start,
        rss_at_end,
    )
    await wait_for(lambda: all(w.health()[0] == 200 for w in (w0, w1)), "the sinks to recover", timeout=120)

    # The broker restarted while the workers still drain the outage's backlog; /health names it.
    assert kafka.process.stop(), "the test broker should have been running"
    try:
        await wait_for(
            lambda: all(_sink_state(w, "brokers") == "retrying" for w in (w0, w1, archiver)),
            "/health to report that no broker answers",
            timeout=60,
        )
        states = [_sink_state(w, "singlestore") for w in (w0, w1)]
        assert states == ["ok", "ok"], f"a broker outage reported as the database's: {states}"
    finally:
        await asyncio.to_thread(stack.up)
    await pipeline.produce(rest)
    assert_clean(pipeline, truth, w0, w1, archiver)
    assert w0.alive and w1.alive and archiver.alive


async def test_a_poison_event_is_dead_lettered_with_its_reason_and_never_stalls_its_partition(
    test_stack: Settings, tmp_path: Path
) -> None:
    pipeline = Pipeline(tmp_path, extra_env={"PINAPP_TESTING__POISON_USER_ID": "poison-user"})
    try:
        records, truth, _ = traffic(pipeline, seed=54, count=3_000)
        poison = [
            GeneratedRecord(
                b"poison-user",
                orjson.dumps(
                    {
                        "event_id": f"poison-{i}",
                        "event_type": "login",
                        "user_id": "poison-user",
                        "ts": int(time.time() * 1000),
                        "ip": "8.8.8.8",
                    }
                ),
                "valid",
                "login",
                f"poison-{i}",
            )
            for i in range(5)
        ]
        mixed = records[:1000] + poison[:2] + records[1000:2000] + poison[2:] + records[2000:]
        await pipeline.create_bucket()
        w0, archiver = pipeline.worker(0), pipeline.archiver()
        await start(w0, archiver)
        await pipeline.produce(mixed)
        assert_clean(pipeline, truth, w0, archiver)  # the events after each poison made it too
        dlq = [
            r
            for r in await pipeline.read_topic(pipeline.settings.kafka.dlq_topic)
            if dict(r.headers)[HEADER_PREFIX + "kind"] == b"poison"
        ]
        assert sorted(orjson.loads(r.value)["event_id"] for r in dlq) == [f"poison-{i}" for i in range(5)]
        for rec in dlq:
            headers = dict(rec.headers)
            assert headers[HEADER_PREFIX + "stage"] == b"enrich"
            assert b"poison_user_id" in headers[HEADER_PREFIX + "reason"]
            assert headers[HEADER_PREFIX + "topic"] == pipeline.settings.kafka.events_topic.encode()
            assert int(headers[HEADER_PREFIX + "offset"]) >= 0
    finally:
        pipeline.stop_all()
        await pipeline.drop()


def _generations(*workers: WorkerProcess) -> list[int]:
    """The group generations the workers' logs say they joined."""
    return [g for w in workers for g in w.generations()]


async def test_a_rolling_restart_with_static_membership_moves_no_partition(
    test_stack: Settings, tmp_path: Path
) -> None:
    """Workers with ``worker.group_instance_id`` restarted one by one under load: the group's
    generation never changes (no revocation anywhere), rows never stop for a session timeout,
    and the audit is clean. With dynamic membership each restart is two rebalances."""
    session_timeout = 20.0
    pipeline = Pipeline(tmp_path, extra_env={"PINAPP_WORKER__SESSION_TIMEOUT_S": str(session_timeout)})
    try:
        records, truth, _ = traffic(pipeline, seed=57, count=14_000)
        topic = pipeline.settings.kafka.events_topic
        await pipeline.create_bucket()
        workers = [pipeline.worker(i, PINAPP_WORKER__GROUP_INSTANCE_ID=f"pinapp-worker-{i}") for i in range(2)]
        archiver = pipeline.archiver()
        await start(*workers, archiver)
        async with _producing(pipeline, records):
            await wait_for(lambda: all(_source_partitions(w, topic) for w in workers), "both own partitions")
            await asyncio.sleep(2)
            settled = max(_generations(*workers))
            owned = [_source_partitions(w, topic) for w in workers]
            restarted_at = datetime.now(UTC).replace(tzinfo=None)
            for w in workers:
                w.stop()
                w.start()
                await w.wait_ready(180)
                await wait_for(lambda w=w: _source_partitions(w, topic), "the restarted worker to own partitions")
        assert_clean(pipeline, truth, *workers, archiver)
        assert max(_generations(*workers)) == settled, "a restart made the group rebalance"
        assert [_source_partitions(w, topic) for w in workers] == owned
        times = []
        for table in ("pins", "repins", "likes", "comments", "logins"):
            times += [
                t
                for (t,) in await pipeline.sql(
                    f"SELECT ingested_at FROM {table} WHERE ingested_at >= %s", (restarted_at,)
                )
            ]
        times.sort()
        stall = max((b - a).total_seconds() for a, b in itertools.pairwise(times))
        assert stall < session_timeout, f"rows stopped for {stall:.1f}s during the rolling restart"
    finally:
        pipeline.stop_all()
        await pipeline.drop()


async def test_the_audit_after_a_normal_stop_reports_unprocessed_events_as_pending_not_missing(
    pipeline: Pipeline,
) -> None:
    """The workers and the archiver stopped (as Ctrl-C stops ``make demo``) with events still in
    Kafka: the audit shows them pending and exits 0; ``--wait`` with nothing running fails naming
    them; once a worker and the archiver run again, ``--wait`` comes out clean with none pending."""
    records, truth, _ = traffic(pipeline, seed=58, count=6_000)
    await pipeline.create_bucket()
    worker, archiver = pipeline.worker(0), pipeline.archiver()
    await start(worker, archiver)
    await pipeline.produce(records[:3_000])
    await pipeline.wait_committed(pipeline.settings.kafka.events_topic, pipeline.settings.worker.app_id)
    worker.stop()
    archiver.stop()
    await pipeline.produce(records[3_000:])  # in Kafka, beyond every position

    stopped = pipeline.cli("audit", timeout=300)  # the topic as the source: what `make demo` users run
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    pending = int(re.search(r"audit: CLEAN, (\d+) pending", stopped.stdout).group(1))  # type: ignore[union-attr]
    assert pending >= 2_900, stopped.stdout  # the second half's valid events, their dead letters, the archive's
    assert "(not counted; --wait S waits for them)" in stopped.stdout

    waited = pipeline.cli("audit", "--wait", "5", timeout=300)
    assert waited.returncode == 1 and "still there after --wait" in waited.stdout, waited.stdout

    await start(worker, archiver)
    settled = pipeline.audit(truth)
    assert settled.returncode == 0 and "audit: CLEAN\n" in settled.stdout, settled.stdout + settled.stderr
