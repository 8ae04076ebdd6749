"""``pinapp singer`` on real files and a real Kafka broker: rotation, kill -9, broker outage,
copytruncate, partial and over-long lines, heartbeats."""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict

import orjson
from aiokafka.partitioner import murmur2

from pinapp.singer.keys import line_key
from pinapp.tools.harness import REPO, Pipeline, free_port
from pinapp.tools.stack.kafka import KafkaService
from pinapp.tools.stack.stack import Stack


def _cli(pipeline: Pipeline, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "from pinapp.cli import main; main()", "--profile", "test", *args],
        cwd=REPO,
        env={**pipeline.env, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _generate(
    pipeline: Pipeline, count: int, *, rate: int | None = None, rotate_bytes: int = 200_000, seed: int = 5
) -> subprocess.Popen[bytes]:
    args = [
        *pipeline.generate_args(count, seed),
        "--rotate-bytes",
        str(rotate_bytes),
        "--rotate-keep",
        "1000",
    ]
    if rate:
        args += ["--rate", str(rate)]
    return _cli(pipeline, *args)


async def _succeeds(proc: subprocess.Popen[bytes], timeout: float = 120) -> str:
    """Wait for ``proc``; its output (the pipe is read and closed). Fails on a non-zero exit."""
    out = (await asyncio.to_thread(proc.communicate, None, timeout))[0].decode(errors="replace")
    assert proc.returncode == 0, out
    return out


def _written(pipeline: Pipeline) -> list[list[bytes]]:
    """The lines of every log file, oldest file first (app.log.N ... app.log.1, app.log)."""
    files = [*sorted(pipeline.logs.glob("app.log.*"), key=lambda p: -int(p.suffix[1:])), pipeline.logs / "app.log"]
    return [p.read_bytes().splitlines() for p in files if p.exists()]


def _for_events(pipeline: Pipeline, lines: list[bytes]) -> list[bytes]:
    """The lines that belong in ``events``: the generator's over-long ones go to the DLQ."""
    return [line for line in lines if len(line) <= pipeline.settings.pipeline.max_event_bytes]


async def _shipped(pipeline: Pipeline, want: int, timeout: float = 120.0) -> list[object]:
    """The events topic once it holds at least ``want`` records."""
    deadline = time.monotonic() + timeout
    records: list[object] = []
    while time.monotonic() < deadline:
        records = await pipeline.read_topic(pipeline.settings.kafka.events_topic)
        if len(records) >= want:
            return records
        await asyncio.sleep(1)
    logs = "\n".join(w.log_tail(30) for w in pipeline.workers)
    raise AssertionError(f"only {len(records)} of {want} lines arrived\n{logs}")


async def test_every_line_arrives_through_rotation_in_file_order_per_key(pipeline: Pipeline) -> None:
    await pipeline.produce([])  # creates the topics
    singer = pipeline.singer()
    singer.start()
    await singer.wait_ready()
    gen = _generate(pipeline, 20_000, rate=5_000, rotate_bytes=300_000)
    await _succeeds(gen, 120)
    files = _written(pipeline)
    assert len(files) > 5, "the generator should have rotated several times"
    written = [line for f in files for line in f]
    assert len(written) == 20_000
    lines = _for_events(pipeline, written)
    assert 0 < len(written) - len(lines) < 100, "a few over-long lines, dead-lettered"

    records = await _shipped(pipeline, len(lines))
    assert Counter(r.value for r in records) == Counter(lines), "every line exactly once"
    assert all(r.key == line_key(r.value) for r in records), "the topology's key rule"
    # librdkafka's murmur2_random is the Java client's partitioner, which aiokafka (and faust) use:
    # a keyed line lands in the partition the topology's own producers would pick for its key.
    partitions = pipeline.settings.kafka.partitions
    keyed = [r for r in records if r.key is not None]
    assert keyed and all(r.partition == (murmur2(r.key) & 0x7FFFFFFF) % partitions for r in keyed)
    # Order: per key, Kafka holds the lines in the order they were written (across rotations).
    # Lines without a key (unreadable JSON) are spread over partitions, so have no order to keep.
    in_kafka: dict[bytes, list[bytes]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        if r.key is not None:
            in_kafka[r.key].append(r.value)
    in_files: dict[bytes, list[bytes]] = defaultdict(list)
    for line in lines:
        if (key := line_key(line)) is not None:
            in_files[key].append(line)
    assert in_kafka == in_files
    dead = await pipeline.read_topic(pipeline.settings.kafka.dlq_topic)
    assert len(dead) == len(written) - len(lines)
    assert {dict(r.headers)["pinapp.dlq.kind"] for r in dead} == {b"too_large"}
    singer.stop()


async def test_kill_9_at_random_moments_loses_nothing_and_doubles_only_the_batch_in_flight(pipeline: Pipeline) -> None:
    await pipeline.produce([])
    gen = _generate(pipeline, 30_000, rotate_bytes=500_000)
    await _succeeds(gen, 120)
    lines = _for_events(pipeline, [line for f in _written(pipeline) for line in f])
    batch = 500
    rng = random.Random(11)
    kills = 0
    for i in range(3):
        singer = pipeline.singer(i, PINAPP_SINGER__BATCH_LINES=str(batch))
        singer.start()
        await singer.wait_ready()
        await asyncio.sleep(rng.uniform(0.2, 1.2))
        singer.kill()
        kills += 1
    last = pipeline.singer(9, PINAPP_SINGER__BATCH_LINES=str(batch))
    last.start()
    records = await _shipped(pipeline, len(lines))
    got = Counter(r.value for r in records)
    want = Counter(lines)
    assert not want - got, "a line was lost"
    extra = sum((got - want).values())
    # At a kill, one batch can be unacknowledged: the one being shipped.
    assert extra <= batch * kills, f"{extra} duplicates from {kills} kills of {batch}-line batches"
    last.stop()


async def test_a_clean_stop_finishes_the_batch_in_flight_so_a_restart_sends_nothing_twice(pipeline: Pipeline) -> None:
    await pipeline.produce([])
    gen = _generate(pipeline, 20_000, rate=4_000)  # ~5 s of writing
    for i in range(3):  # stopped (SIGTERM) twice mid-stream, then left to finish
        singer = pipeline.singer(i, PINAPP_SINGER__BATCH_LINES="1000")
        singer.start()
        await singer.wait_ready()
        if i < 2:
            await asyncio.sleep(1.5)
            singer.stop()
    await _succeeds(gen, 120)
    lines = _for_events(pipeline, [line for f in _written(pipeline) for line in f])
    records = await _shipped(pipeline, len(lines))
    await asyncio.sleep(2)  # anything sent twice would arrive by now
    records = await pipeline.read_topic(pipeline.settings.kafka.events_topic)
    assert Counter(r.value for r in records) == Counter(lines), "a clean stop must lose and double nothing"
    singer.stop()


async def test_a_broker_outage_mid_stream_loses_nothing_and_singer_recovers_by_itself(pipeline: Pipeline) -> None:
    await pipeline.produce([])
    # A 2 s request timeout: batches in flight fail during the 6 s outage, so the producer is
    # recreated and the batch sent again (the path a long outage takes in production).
    singer = pipeline.singer(PINAPP_SINGER__BATCH_LINES="1000", PINAPP_SINGER__REQUEST_TIMEOUT_S="2")
    singer.start()
    await singer.wait_ready()
    gen = _generate(pipeline, 24_000, rate=2_000)  # ~12 s of writing
    await asyncio.sleep(3)
    kafka = KafkaService(pipeline.settings)
    assert kafka.process.stop(), "the test broker should have been running"
    down_ms = time.time() * 1000
    try:
        await asyncio.sleep(6)
        assert singer.proc is not None and singer.proc.poll() is None, "singer must ride the outage out"
    finally:
        await asyncio.to_thread(Stack(pipeline.settings).up)  # restarts the broker only
    await _succeeds(gen, 120)
    lines = _for_events(pipeline, [line for f in _written(pipeline) for line in f])
    records = await _shipped(pipeline, len(lines), timeout=180)
    got, want = Counter(r.value for r in records), Counter(lines)
    assert not want - got, "a line was lost"
    # Records stamped after the broker went down could only be delivered after it came back:
    # the same process shipped lines written during the outage, by itself.
    assert sum(r.timestamp > down_ms for r in records) > 1000
    extra = sum((got - want).values())
    resends = singer.log_path.read_text().count("not acknowledged")
    assert resends, "the resend path should have run"
    assert extra <= 1000 * resends, "duplicates only from the batch resent each time"
    assert singer.proc is not None and singer.proc.poll() is None
    singer.stop()


async def test_partial_lines_wait_copytruncate_rereads_and_long_lines_are_dead_lettered(pipeline: Pipeline) -> None:
    await pipeline.produce([])
    pipeline.logs.mkdir(parents=True)
    log = pipeline.logs / "app.log"
    a, b = b'{"event_type":"login","user_id":"u1","n":1}', b'{"event_type":"login","user_id":"u2","n":2}'
    log.write_bytes(a + b"\n" + b + b"\n" + b'{"event_type":"login",')
    singer = pipeline.singer()
    singer.start()
    await singer.wait_ready()
    assert sorted(r.value for r in await _shipped(pipeline, 2)) == [a, b]
    await asyncio.sleep(1.5)
    assert len(await pipeline.read_topic(pipeline.settings.kafka.events_topic)) == 2, "half a line is not sent"

    with log.open("ab") as f:
        f.write(b'"user_id":"u3","n":3}\n')
    c = b'{"event_type":"login","user_id":"u3","n":3}'
    assert sorted(r.value for r in await _shipped(pipeline, 3)) == [a, b, c]

    # copytruncate: the copy and the truncated file are both read from the start.
    shutil.copy(log, pipeline.logs / "app.log.1")
    with log.open("r+b") as f:
        f.truncate(0)
    d = b'{"event_type":"login","user_id":"u4","n":4}'
    log.write_bytes(d + b"\n")
    values = Counter(r.value for r in await _shipped(pipeline, 7))
    assert values == Counter({a: 2, b: 2, c: 2, d: 1}), "documented: copytruncate re-sends the copy"

    # A line over the limit goes to the DLQ with its file and offset, not to events.
    big = b'{"event_type":"login","user_id":"u5","pad":"' + b"x" * 20_000 + b'"}'
    offset = log.stat().st_size
    with log.open("ab") as f:
        f.write(big + b"\n")
    dlq = pipeline.settings.kafka.dlq_topic
    deadline = time.monotonic() + 60
    dead: list[object] = []
    while not dead and time.monotonic() < deadline:
        dead = await pipeline.read_topic(dlq)
        await asyncio.sleep(0.5)
    assert len(dead) == 1
    headers = {k: v.decode() for k, v in dead[0].headers}
    assert headers["pinapp.dlq.kind"] == "too_large"
    assert headers["pinapp.dlq.file"] == str(log) and headers["pinapp.dlq.offset"] == str(offset)
    assert f"line of {len(big)} bytes" in headers["pinapp.dlq.reason"]
    assert dead[0].value == big[: pipeline.settings.pipeline.max_event_bytes]
    assert len(await pipeline.read_topic(pipeline.settings.kafka.events_topic)) == 7
    singer.stop()


async def test_heartbeats_and_status_report_the_streams(pipeline: Pipeline) -> None:
    await pipeline.produce([])
    gen = _generate(pipeline, 3_000)
    await _succeeds(gen, 60)
    lines = _for_events(pipeline, [line for f in _written(pipeline) for line in f])
    singer = pipeline.singer(PINAPP_SINGER__METRICS_PORT=str(port := free_port()))
    singer.web_port = port  # its /metrics
    singer.start()
    await _shipped(pipeline, len(lines))
    status_topic = pipeline.settings.singer.status_topic
    deadline = time.monotonic() + 30
    beats: list[dict] = []
    while time.monotonic() < deadline:
        beats = [orjson.loads(r.value) for r in await pipeline.read_topic(status_topic)]
        if beats and beats[-1]["streams"][0]["lines_shipped"] == len(lines):
            break
        await asyncio.sleep(1)
    stream = beats[-1]["streams"][0]
    assert stream["name"] == "app" and stream["bytes_behind"] == 0 and stream["lines_shipped"] == len(lines)
    assert stream["dead_lettered"] == 3_000 - len(lines)
    out = await _succeeds(_cli(pipeline, "singer", "status", env=singer.env), 60)
    row = next(line.split() for line in out.splitlines() if line.startswith("app "))
    assert row[2] == "0" and row[3] == str(len(lines)), out  # bytes behind, lines shipped
    deadline = time.monotonic() + 10  # bytes behind is measured once a second
    while (samples := singer.metrics())["pinapp_singer_bytes_behind{stream=app}"] and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert samples["pinapp_singer_bytes_behind{stream=app}"] == 0
    assert samples["pinapp_singer_lines_shipped_total{stream=app}"] == len(lines)
    assert samples["pinapp_singer_dead_lettered_total{stream=app}"] == 3_000 - len(lines)
    assert samples["pinapp_singer_bytes_shipped_total{stream=app}"] > 0
    singer.stop()
    assert (pipeline.tmp / "singer" / "app.watermark.json").exists()
