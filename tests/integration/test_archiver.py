"""The archiver on real Kafka and the real S3 API server: layout, contents, crashes, outages.

Every test checks the archive the way a user would: ``pinapp archive verify`` (every offset
up to the archiver's committed offset exactly once) plus a record-by-record comparison of
the objects with the topic itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from pinapp.adapters.kafka import client_options
from pinapp.adapters.s3 import s3_client
from pinapp.archive.layout import ObjectKey, hour_folder
from pinapp.archive.verify import archiver_group
from pinapp.domain.ddl import ROLLUPS
from pinapp.domain.dead_letters import REPLAY_HEADER, REPLAY_TIMESTAMP_HEADER, is_replay
from pinapp.domain.geo import GeoLocator
from pinapp.tools.generator import GeneratorConfig, TrafficGenerator
from pinapp.tools.harness import TABLE_OF, Pipeline, free_port
from pinapp.tools.stack.services import S3Service
from pinapp.tools.stack.stack import Stack

HOUR_MS = 3_600_000
BASE_MS = 1_709_251_200_000  # 2024-03-01T00:00:00Z


def _stamped(i: int) -> tuple[object, int]:
    """Event ``i``'s ``ts`` in one of every accepted form, and the epoch ms it means."""
    ms = BASE_MS + i * 97_000  # ~100 s apart: 3,000 events span ~3.4 days
    form = i % 8
    if form == 0:
        return ms // 1000, ms // 1000 * 1000  # epoch seconds
    if form == 1:
        return ms, ms  # epoch milliseconds
    if form == 2:
        return ms * 1000, ms  # epoch microseconds
    if form == 3:
        return ms * 1_000_000, ms  # epoch nanoseconds
    if form == 4:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat(), ms  # ISO, +00:00
    if form == 5:  # ISO with a -05:00 zone: the same instant, another wall clock
        return datetime.fromtimestamp(ms / 1000, UTC).astimezone(
            datetime.fromisoformat("2024-01-01T00:00:00-05:00").tzinfo
        ).isoformat(), ms
    if form == 6:
        return str(ms), ms  # epoch ms as a numeric string
    return None, ms  # no usable ts: the Kafka timestamp decides (produced with timestamp = ms)


def _records(n: int, start: int = 0) -> tuple[list[tuple[bytes, bytes, int]], dict[int, str]]:
    """``n`` raw records and, by index, the hour folder each must land in."""
    out, folders = [], {}
    for i in range(start, start + n):
        ts, ms = _stamped(i)
        doc: dict[str, object] = {"event_id": f"e{i}", "event_type": "login", "user_id": f"u{i % 97}"}
        if ts is not None:
            doc["ts"] = ts
        elif i % 16 == 7:
            doc["ts"] = "yesterday"  # unusable: falls back too
        value = orjson.dumps(doc) if i % 50 else b"\xff\xfenot json at all"  # malformed bytes survive
        out.append((f"u{i % 97}".encode(), value, ms))
        folders[i] = hour_folder(_stamped(i)[1])
    return out, folders


async def _assert_archive_equals_topic(pipeline: Pipeline, topic: str) -> None:
    verify = pipeline.cli("archive", "verify", "--topic", topic)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "OK" in verify.stdout
    archived = await pipeline.archived_records(topic)
    in_topic = await pipeline.read_topic(topic)
    assert len(archived) == len(in_topic)
    by_place = {(r.partition, r.offset): r for r in archived}
    assert len(by_place) == len(archived), "an offset is archived twice"
    for rec in in_topic:
        got = by_place[(rec.partition, rec.offset)]
        assert (got.key, got.value, got.timestamp_ms, got.headers) == (
            rec.key,
            rec.value,
            rec.timestamp,
            tuple(rec.headers),
        )


@pytest.mark.parametrize("fmt", ["jsonl.gz", "parquet"])
async def test_every_record_lands_once_in_its_event_hour(pipeline: Pipeline, fmt: str) -> None:
    records, folders = _records(3000)
    await pipeline.create_bucket()
    await pipeline.produce(records)
    # Intents of committed cuts are kept a while (they fence zombies): a second here.
    archiver = pipeline.archiver(
        PINAPP_ARCHIVE__FORMAT=fmt, PINAPP_ARCHIVE__MAX_EVENTS="400", PINAPP_ARCHIVE__INTENT_RETENTION_S="1"
    )
    archiver.start()
    topic = pipeline.settings.kafka.events_topic
    await pipeline.wait_archived(topic)
    await _assert_archive_equals_topic(pipeline, topic)

    # Each record is in the hour folder of its own event time (or Kafka time), whatever the format.
    keys = [k for k in map(ObjectKey.parse, await pipeline.archive_keys(topic)) if k is not None]
    assert {k.fmt for k in keys} == {fmt}
    expected = Counter(folders.values())
    assert len(expected) > 48, "the data should span several days of hour folders"
    assert all(not f.startswith("dt=1970") for f in expected)
    placed = 0
    for key, recs in await pipeline.archived_objects(topic):
        for rec in recs:
            if rec.value and rec.value[:1] == b"{":
                want = folders[int(orjson.loads(rec.value)["event_id"][1:])]
            else:  # not JSON: the Kafka timestamp decides
                want = hour_folder(rec.timestamp_ms)
            assert key.folder == want, (key, rec)
            placed += 1
    assert placed == 3000

    # Once every partition is past an hour (idle partitions count as "now"), it gets _SUCCESS.
    async def finalized() -> set[str]:
        return {
            k.rsplit("/", 1)[0].split(f"{topic}/", 1)[1]
            for k in await pipeline.archive_keys(topic)
            if k.endswith("/_SUCCESS")
        }

    for _ in range(60):
        if set(expected) <= await finalized():
            break
        await asyncio.sleep(0.5)
    assert set(expected) <= await finalized()

    # `archive ls` lists each hour folder once, with its objects and its _SUCCESS marker.
    listing = pipeline.cli("archive", "ls", "--topic", topic)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    rows = [line.split() for line in listing.stdout.splitlines() if line.startswith("s3://")]
    objects_per_folder = Counter(k.folder for k in keys)
    assert {row[0].split(f"/{topic}/", 1)[1].rstrip("/"): int(row[1]) for row in rows} == objects_per_folder
    assert all(row[3] == "_SUCCESS" for row in rows if row[0].split(f"/{topic}/", 1)[1].rstrip("/") in expected)
    day = min(objects_per_folder)[3:13]
    one_day = pipeline.cli("archive", "ls", "--topic", topic, "--day", day)
    assert [line.split()[0] for line in one_day.stdout.splitlines() if line.startswith("s3://")] == [
        row[0] for row in rows if f"/dt={day}/" in row[0]
    ]

    # Intents of committed cuts are housekeeping: the archiver deletes them once past their
    # retention, but each partition's latest (where its archive ends, checked at adoption).
    async def intents() -> Counter[str]:
        async with s3_client(pipeline.settings.s3) as s3:
            page = await s3.list_objects_v2(Bucket=pipeline.settings.s3.bucket, Prefix=f"raw/_cuts/{topic}/")
            return Counter(o["Key"].split("/")[-2] for o in page.get("Contents", []))

    for _ in range(30):
        if max((await intents()).values(), default=0) <= 1:
            break
        await asyncio.sleep(0.5)
    assert set((await intents()).values()) == {1}, await intents()
    archiver.stop()


@pytest.mark.parametrize("crash_at", ["before_intent", "after_intent", "mid_upload", "after_upload", "after_ack"])
async def test_a_kill_9_anywhere_in_the_upload_cycle_loses_and_doubles_nothing(
    pipeline: Pipeline, crash_at: str
) -> None:
    records, _ = _records(2400)
    await pipeline.create_bucket()
    await pipeline.produce(records)
    topic = pipeline.settings.kafka.events_topic
    crashing = pipeline.archiver(
        0,
        PINAPP_TESTING__ARCHIVE_CRASH_AT=crash_at,
        PINAPP_TESTING__ARCHIVE_CRASH_ON_CUT="3",
        PINAPP_ARCHIVE__MAX_EVENTS="150",
    )
    crashing.start()
    assert crashing.proc is not None
    assert await asyncio.to_thread(crashing.proc.wait, 120) == -9, crashing.log_tail()
    assert f"testing.archive_crash_at={crash_at}" in crashing.log_path.read_text()

    # Different thresholds after the restart: the adopted intents decide the cuts, not the settings.
    survivor = pipeline.archiver(1, PINAPP_ARCHIVE__MAX_EVENTS="1000")
    survivor.start()
    await pipeline.wait_archived(topic)
    await _assert_archive_equals_topic(pipeline, topic)
    assert "re-cutting at" in survivor.log_path.read_text() or crash_at in ("before_intent", "after_ack")
    survivor.stop()


_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class _Outage:
    """A TCP proxy in front of the S3 server that can fail: refuse connections (S3 unreachable),
    answer every request with 503 SlowDown (S3 throttling), or take the bytes and never answer
    (S3 hung), then come back."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.throttling = False
        self.hanging = False
        self.links: set[asyncio.StreamWriter] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _slow_down(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            length = next(
                (int(line.split(":", 1)[1]) for line in head.split("\r\n") if line.startswith("content-length:")), 0
            )
            if length and "expect: 100-continue" not in head:
                await reader.readexactly(length)
            writer.write(
                b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(_SLOW_DOWN), _SLOW_DOWN)
            )
            await writer.drain()
        writer.close()

    async def _swallow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.links.add(writer)
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while self.hanging and await reader.read(65536):
                pass
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.hanging:
            await self._swallow(reader, writer)
            return
        if self.throttling:
            await self._slow_down(reader, writer)
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self.links |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def _cut_links(self) -> None:
        for w in self.links:
            w.transport.abort()
        self.links.clear()

    async def up(self) -> None:
        self.throttling = self.hanging = False
        if self.server is None:
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def fail(self, how: str) -> None:
        if how == "throttled":
            self.throttling = True
        elif how == "hung":
            self.hanging = True
        else:
            assert self.server is not None
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        self._cut_links()


@pytest.mark.parametrize("how", ["unreachable", "throttled", "hung"])
async def test_s3_failing_for_a_while_pauses_then_catches_up_without_loss_or_duplicates(
    pipeline: Pipeline, how: str
) -> None:
    await pipeline.create_bucket()
    outage = _Outage(pipeline.settings.stack.s3_port)
    await outage.up()
    topic = pipeline.settings.kafka.events_topic
    archiver = pipeline.archiver(
        PINAPP_S3__ENDPOINT_URL=f"http://127.0.0.1:{outage.port}",
        PINAPP_ARCHIVE__MAX_EVENTS="200",
        PINAPP_ARCHIVE__REQUEST_TIMEOUT_S="2",  # a hung upload is given up after this (the client's own never fires)
    )
    archiver.start()
    await archiver.wait_ready()
    first, _ = _records(1000)
    await pipeline.produce(first)
    await pipeline.wait_archived(topic)

    await outage.fail(how)
    more, _ = _records(1500, start=1000)
    await pipeline.produce(more, rate=300)  # ~5 s of traffic while S3 fails
    await asyncio.sleep(4)
    committed, ends = await pipeline.archive_position(topic)
    assert committed != ends, "nothing can be archived while S3 fails"
    assert archiver.proc is not None and archiver.proc.poll() is None, "the archiver must ride it out"
    assert archiver.metrics()["pinapp_archive_s3_errors_total"] > 0
    log = archiver.log_path.read_text()
    assert "partition paused, retrying" in log
    assert ("SlowDown" in log) == (how == "throttled")

    await outage.up()
    await pipeline.wait_archived(topic)
    await _assert_archive_equals_topic(pipeline, topic)
    assert "S3 is back; partition resumed" in archiver.log_path.read_text()
    archiver.stop()
    await outage.fail("unreachable")


async def test_archivers_joining_leaving_and_dying_mid_stream_archive_each_offset_once(pipeline: Pipeline) -> None:
    await pipeline.create_bucket()
    topic = pipeline.settings.kafka.events_topic
    first = pipeline.archiver(0, PINAPP_ARCHIVE__MAX_EVENTS="250")
    first.start()
    await first.wait_ready()
    records, _ = _records(6000)
    producing = asyncio.create_task(pipeline.produce(records, rate=500))  # 12 s of traffic

    await asyncio.sleep(2)
    second = pipeline.archiver(1, PINAPP_ARCHIVE__MAX_EVENTS="400")  # joins: partitions move
    second.start()
    await second.wait_ready()
    await asyncio.sleep(2)
    first.stop()  # leaves gracefully: flushes on revocation/shutdown
    third = pipeline.archiver(2, PINAPP_ARCHIVE__MAX_EVENTS="300")
    third.start()
    await third.wait_ready()
    await asyncio.sleep(1)
    second.kill()  # dies: no flush, no commit; the third takes over after the session timeout
    await producing
    await pipeline.wait_archived(topic, timeout=180)
    await _assert_archive_equals_topic(pipeline, topic)
    third.stop()


async def test_a_missing_bucket_is_a_clear_error_at_start_up(pipeline: Pipeline) -> None:
    result = pipeline.cli("archiver")
    assert result.returncode == 2
    assert f"bucket {pipeline.settings.s3.bucket!r} does not exist" in result.stderr
    assert "PINAPP_S3__BUCKET" in result.stderr


async def test_credentials_s3_refuses_are_a_clear_error_at_start_up(pipeline: Pipeline) -> None:
    # A second moto S3 server that checks credentials (moto's IAM mode): ours are unknown to it.
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", "from moto.server import main; main()", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            await asyncio.sleep(0.1)
        pipeline.env["PINAPP_S3__ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
        result = pipeline.cli("archiver")
    finally:
        server.kill()
        server.wait(10)
    assert result.returncode == 2, result.stderr
    assert "denied (403)" in result.stderr
    assert "PINAPP_S3__ACCESS_KEY_ID" in result.stderr


async def test_verify_reports_a_missing_object_and_exits_1(pipeline: Pipeline) -> None:
    records, _ = _records(600)
    await pipeline.create_bucket()
    await pipeline.produce(records)
    archiver = pipeline.archiver(PINAPP_ARCHIVE__MAX_EVENTS="100")
    archiver.start()
    topic = pipeline.settings.kafka.events_topic
    await pipeline.wait_archived(topic)
    archiver.stop()

    victim, recs = max(await pipeline.archived_objects(topic), key=lambda pair: len(pair[1]))
    offsets = sorted(r.offset for r in recs)
    assert offsets == list(range(offsets[0], offsets[-1] + 1)), "pick an object holding one run"
    async with s3_client(pipeline.settings.s3) as s3:
        await s3.delete_object(Bucket=pipeline.settings.s3.bucket, Key=str(victim))
    result = pipeline.cli("archive", "verify", "--topic", topic)
    assert result.returncode == 1
    assert "FAILED" in result.stdout
    row = next(line.split() for line in result.stdout.splitlines() if line.split()[:1] == [str(victim.partition)])
    assert row[3] == f"{offsets[0]}-{offsets[-1]}" and row[4] == "-", result.stdout


async def test_the_stack_s3_restarted_empty_has_the_archiver_archive_again_from_the_log_start(
    pipeline: Pipeline,
) -> None:
    """The stack's S3 server keeps nothing across a restart while Kafka keeps the archiver's
    commits: ``stack up`` sets the group back to the log start, and the archive is whole again."""
    records, _ = _records(600)
    await pipeline.create_bucket()
    await pipeline.produce(records)
    archiver = pipeline.archiver()
    archiver.start()
    topic = pipeline.settings.kafka.events_topic
    ends = await pipeline.wait_archived(topic)
    archiver.stop()

    assert S3Service(pipeline.settings).process.stop(), "the test stack's S3 should have been running"
    report = await asyncio.to_thread(Stack(pipeline.settings).up)
    assert any("set back to the log start" in line for line in report), report
    committed, _ = await pipeline.group_position(topic, archiver_group(pipeline.settings))
    assert not any(committed.values()), committed  # every partition from its start again
    await pipeline.create_bucket()
    assert not await pipeline.archive_keys(topic)  # the objects went with the server

    again = pipeline.archiver(1)
    again.start()
    assert await pipeline.wait_archived(topic) == ends
    verify = pipeline.cli("archive", "verify", "--topic", topic)
    assert verify.returncode == 0, verify.stdout + verify.stderr


async def _table_rows(pipeline: Pipeline) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every event table, all columns but the ingestion time, sorted."""
    out = {}
    for table in TABLE_OF.values():
        columns = [
            r[0]
            for r in await pipeline.sql(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                "ORDER BY ordinal_position",
                (pipeline.settings.db.database, table),
            )
        ]
        kept = ", ".join(f"`{c}`" for c in columns if c != "ingested_at")
        out[table] = sorted(await pipeline.sql(f"SELECT {kept} FROM {table}"), key=repr)
    return out


async def test_replaying_a_day_from_the_archive_restores_wiped_tables(pipeline: Pipeline) -> None:
    day_ms = 1_709_596_800_000  # 2024-03-05T00:00:00Z
    gen = TrafficGenerator(
        GeneratorConfig(seed=23, start_ms=day_ms + 3_600_000, step_ms=5.0, duplicate_ratio=0.03, malformed_ratio=0.02),
        GeoLocator(),
    )
    records = [next(gen) for _ in range(3000)]
    expected = dict(gen.truth.to_json()["valid_unique"])
    await pipeline.create_bucket()
    worker, archiver = pipeline.worker(), pipeline.archiver()
    worker.start()
    archiver.start()
    await worker.wait_ready()
    await pipeline.produce(records)
    await pipeline.wait_for_rows(expected)
    await pipeline.wait_archived(pipeline.settings.kafka.events_topic)
    # The dead letters are archived too, reasons (headers) and all.
    dlq = pipeline.settings.kafka.dlq_topic
    await pipeline.wait_archived(dlq)
    await _assert_archive_equals_topic(pipeline, dlq)
    assert any(dict(r.headers).get("pinapp.dlq.reason") for r in await pipeline.archived_records(dlq))
    before = await _table_rows(pipeline)
    assert {t: len(rows) for t, rows in before.items()} == {TABLE_OF[k]: n for k, n in expected.items()}

    await pipeline.assert_rollups_exact()
    # The database is restored from before that day: its rows are gone, and their counts with them.
    for table in (*TABLE_OF.values(), "experiment_exposures", "experiment_users", *(s.name for s in ROLLUPS)):
        await pipeline.sql(f"DELETE FROM {table}")
    assert all(not rows for rows in (await _table_rows(pipeline)).values())

    that_day = sum(
        len(recs)
        for key, recs in await pipeline.archived_objects(pipeline.settings.kafka.events_topic)
        if key.folder.startswith("dt=2024-03-05/")
    )
    assert that_day > 2900  # all but malformed inputs whose time is unusable (archived under today)
    replay_started_ms = int(time.time() * 1000)
    replay = pipeline.cli("archive", "replay", "--from", "2024-03-05", "--to", "2024-03-05")
    assert replay.returncode == 0, replay.stderr
    assert f"replayed {that_day} records" in replay.stdout, replay.stdout
    await pipeline.wait_for_rows(expected)
    assert await _table_rows(pipeline) == before
    await pipeline.wait_committed(pipeline.settings.kafka.events_topic, pipeline.settings.worker.app_id)
    await pipeline.assert_rollups_exact()
    # Stamped with the replay's time, so the topic's time retention counts from the backfill;
    # the original Kafka timestamp travels in a header.
    originals = {
        (r.partition, r.offset): r.timestamp_ms
        for r in await pipeline.archived_records(pipeline.settings.kafka.events_topic)
    }
    replayed = [r for r in await pipeline.read_topic(pipeline.settings.kafka.events_topic) if is_replay(r.headers)]
    assert len(replayed) == that_day
    for rec in replayed:
        headers = dict(rec.headers)
        _topic, partition, offset = headers[REPLAY_HEADER].decode().rsplit(":", 2)
        assert int(headers[REPLAY_TIMESTAMP_HEADER]) == originals[(int(partition), int(offset))]
        assert rec.timestamp >= replay_started_ms

    # Replayed over tables that still hold the rows: processed again, and every row stays single.
    replay = pipeline.cli("archive", "replay", "--from", "2024-03-05", "--to", "2024-03-05")
    assert replay.returncode == 0, replay.stderr
    await pipeline.wait_committed(pipeline.settings.kafka.events_topic, pipeline.settings.worker.app_id)
    assert await _table_rows(pipeline) == before
    await pipeline.assert_rollups_exact()  # the rows it replayed were there: counted nothing


async def test_empty_keys_use_the_aws_credential_chain_and_say_which_source(pipeline: Pipeline) -> None:
    """No keys in the settings: botocore's chain finds them (here in the environment, as an
    instance role would serve them in production), and the archiver names the source, never
    the secret."""
    records, _ = _records(500)
    await pipeline.create_bucket()
    await pipeline.produce(records)
    secret = pipeline.settings.s3.secret_access_key.get_secret_value()
    archiver = pipeline.archiver(
        PINAPP_S3__ACCESS_KEY_ID="",
        PINAPP_S3__SECRET_ACCESS_KEY="",
        AWS_ACCESS_KEY_ID=pipeline.settings.s3.access_key_id.get_secret_value(),
        AWS_SECRET_ACCESS_KEY=secret,
        PINAPP_S3__ADDRESSING_STYLE="path",
    )
    archiver.start()
    topic = pipeline.settings.kafka.events_topic
    await pipeline.wait_archived(topic)
    await _assert_archive_equals_topic(pipeline, topic)
    log = archiver.log_tail(400)
    assert "S3 credentials from AWS credential chain: env" in log, log[-2000:]
    assert secret not in log


async def test_a_client_clock_hours_ahead_does_not_finalize_the_hour_being_written(pipeline: Pipeline) -> None:
    """Events from a client 3 hours fast reach every partition: if progress followed the event
    times seen, ``_SUCCESS`` would go into the hour still being written, and batch jobs would read
    it incomplete. Progress is bounded by the archiver's clock; the fast events are counted."""
    now_ms = int(time.time() * 1000)
    fast_ms = now_ms + 3 * 3600_000
    records = [
        (f"u{i}".encode(), orjson.dumps({"event_id": f"e{i}", "ts": fast_ms if i % 2 else now_ms}), now_ms)
        for i in range(200)
    ]
    await pipeline.create_bucket()
    await pipeline.produce(records)
    archiver = pipeline.archiver(PINAPP_ARCHIVE__MAX_EVENTS="20", PINAPP_ARCHIVE__FINALIZE_INTERVAL_S="0.5")
    archiver.start()
    topic = pipeline.settings.kafka.events_topic
    await pipeline.wait_archived(topic)
    folders = {hour_folder(now_ms), hour_folder(fast_ms)}
    keys = await pipeline.archive_keys(topic)
    assert {k.rsplit("/", 1)[0].split(f"{topic}/", 1)[1] for k in keys if "/dt=" in k} >= folders
    await asyncio.sleep(5)  # ten rounds of the finalizer
    finalized = [k for k in await pipeline.archive_keys(topic) if k.endswith("/_SUCCESS")]
    assert finalized == [], "no hour the archiver's clock has not passed is complete"
    assert archiver.metrics()[f"pinapp_archive_future_events_total{{topic={topic}}}"] == 100


async def test_a_committed_offset_past_the_archive_is_fetched_again_and_archived(pipeline: Pipeline) -> None:
    """The archiver group's commit moved past the archive's last cut (an operator's reset, or
    the bug the cluster's archiver cut-off scenario once showed): the next owner finds the hole
    at adoption, fetches it again and archives it; nothing is doubled."""
    await pipeline.create_bucket()
    topic = pipeline.settings.kafka.events_topic
    first = pipeline.archiver(0, PINAPP_ARCHIVE__MAX_EVENTS="200")
    first.start()
    await first.wait_ready()
    await pipeline.produce(_records(1000)[0])
    await pipeline.wait_archived(topic)
    first.stop()

    await pipeline.produce(_records(1000, start=1000)[0])
    _, ends = await pipeline.archive_position(topic)
    consumer = AIOKafkaConsumer(
        **client_options(pipeline.settings.kafka), group_id=archiver_group(pipeline.settings), enable_auto_commit=False
    )
    await consumer.start()
    try:  # every partition committed to its end, 1000 records never archived
        consumer.assign([TopicPartition(topic, p) for p in ends])
        await consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(end, "") for p, end in ends.items()})
    finally:
        await consumer.stop()

    second = pipeline.archiver(1, PINAPP_ARCHIVE__MAX_EVENTS="200")
    second.start()
    await second.wait_ready()
    await pipeline.produce(_records(100, start=2000)[0])  # a record per partition starts its adoption
    deadline = time.monotonic() + 120
    while len(await pipeline.archived_records(topic)) < 2100 and time.monotonic() < deadline:
        await asyncio.sleep(1)
    await pipeline.wait_archived(topic)
    await _assert_archive_equals_topic(pipeline, topic)
    log = second.log_path.read_text()
    assert "were committed but never archived" in log, second.log_tail(40)
    assert second.metrics()[f"pinapp_archive_holes_total{{topic={topic}}}"] >= 1
    second.stop()
