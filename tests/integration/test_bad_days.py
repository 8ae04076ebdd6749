"""Bad days on the real stack: faults that must end in a stall or a clear error, never in loss.

Each test breaks one thing a running worker depends on, checks that nothing is dead-lettered or
lost while it is broken (the partitions wait, ``/health`` says why), and that everything arrives
once it is mended.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import subprocess
import time
from typing import Any

import orjson
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pinapp.adapters.db import migrate
from pinapp.adapters.kafka import client_options, ensure_topics
from pinapp.domain.dead_letters import HEADER_PREFIX, KEPT_BYTES
from pinapp.singer.keys import line_key
from pinapp.tools.harness import Pipeline
from tests.integration.proxy import BlackHoleProxy


def _like(n: int, **extra: object) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"e{n}",
            "event_type": "like",
            "ts": int(time.time() * 1000),
            "user_id": f"u{n % 7}",
            "ip": "81.2.69.160",
            "pin_id": f"p{n % 5}",
            **extra,
        }
    )


async def test_a_missing_table_stalls_the_sink_and_dead_letters_nothing(pipeline: Pipeline) -> None:
    """A table gone (a failover to a cluster without it, a rename during maintenance) is an outage
    like a server down: every batch would fail alike, so none is to blame. Only the events that
    carry experiments touch ``experiment_exposures``, so "refused while others pass" would wrongly
    dead-letter exactly those; they must wait, and arrive once the table is back."""
    worker = pipeline.worker()
    worker.start()
    await worker.wait_ready()
    await pipeline.sql("DROP TABLE experiment_exposures")
    lines = [_like(n, experiments={"exp": "a"}) if n % 2 else _like(n) for n in range(20)]
    await pipeline.produce([(line_key(line), line) for line in lines])

    deadline = time.monotonic() + 60
    while (status := worker.health())[0] != 503 and time.monotonic() < deadline:
        await asyncio.sleep(1)
    assert status[0] == 503, f"the sink's outage shows on /health: {status}"
    assert "experiment_exposures" in worker.log_path.read_text(), "the log names the missing table"
    assert await pipeline.read_topic(pipeline.settings.kafka.dlq_topic) == [], "nothing is dead-lettered"
    assert await pipeline.sql("SELECT COUNT(*) FROM likes") == [(0,)], "the batch waits whole"

    await migrate(pipeline.settings.db)  # the table is back
    await pipeline.wait_for_rows({"like": 20})
    assert await pipeline.sql("SELECT COUNT(*) FROM experiment_exposures") == [(10,)]
    assert await pipeline.read_topic(pipeline.settings.kafka.dlq_topic) == []
    deadline = time.monotonic() + 30
    while worker.health()[0] != 200 and time.monotonic() < deadline:
        await asyncio.sleep(1)
    assert worker.health()[0] == 200
    await pipeline.assert_rollups_exact()


async def test_a_black_holed_database_is_an_outage_within_the_read_timeout(pipeline: Pipeline) -> None:
    """A server that stops answering (a hung host, a failover that black-holes the old address)
    keeps the connection open: without a read timeout a write waits for hours with /health at
    200. With ``db.read_timeout_s`` the write fails, is retried as an outage (503), and
    everything arrives once the server answers again, nothing dead-lettered or doubled."""
    async with BlackHoleProxy(pipeline.settings.db.host, pipeline.settings.db.port) as proxy:
        worker = pipeline.worker(PINAPP_DB__PORT=str(proxy.port), PINAPP_DB__READ_TIMEOUT_S="3")
        worker.start()
        await worker.wait_ready()
        first = [_like(n) for n in range(10)]
        await pipeline.produce([(line_key(line), line) for line in first])
        await pipeline.wait_for_rows({"like": 10})

        proxy.pause()
        more = [_like(n) for n in range(10, 30)]
        await pipeline.produce([(line_key(line), line) for line in more])
        deadline = time.monotonic() + 60
        while (status := worker.health())[0] != 503 and time.monotonic() < deadline:
            await asyncio.sleep(1)
        assert status[0] == 503, f"the hung database shows on /health within the timeout: {status}"
        assert "read timeout" in worker.log_path.read_text()

        proxy.resume()
        await pipeline.wait_for_rows({"like": 30})
        await asyncio.sleep(2)
        assert await pipeline.sql("SELECT COUNT(*) FROM likes") == [(30,)]
        assert await pipeline.read_topic(pipeline.settings.kafka.dlq_topic) == []
        await pipeline.assert_rollups_exact()


async def _topic_configs(pipeline: Pipeline, names: list[str]) -> dict[str, dict[str, tuple[str, int]]]:
    """Each topic's configuration: name -> (value, source); source 1 is the topic's own setting."""
    admin = AIOKafkaAdminClient(**client_options(pipeline.settings.kafka))
    await admin.start()
    try:
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    finally:
        await admin.close()
    return {name: {e[0]: (e[1], e[3]) for e in entries} for r in described for _, _, _, name, entries in r.resources}


async def test_topics_get_min_insync_replicas_and_keep_their_own_settings(pipeline: Pipeline) -> None:
    """With the broker's default of 1, ``acks=all`` can mean one copy. pinapp's topics carry
    ``min.insync.replicas`` themselves: new ones from creation, faust's changelogs too, and one an
    earlier version made is altered without losing its own settings (a changelog's compaction)."""
    kafka = pipeline.settings.kafka
    old, new = f"{pipeline.settings.worker.app_id}-old", f"{pipeline.settings.worker.app_id}-new"
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        own = {"cleanup.policy": "compact", "retention.ms": "3600000"}
        await admin.create_topics([NewTopic(old, num_partitions=1, replication_factor=1, topic_configs=own)])
    finally:
        await admin.close()
    assert (await _topic_configs(pipeline, [old]))[old]["min.insync.replicas"][1] != 1, "the broker's default"

    assert await ensure_topics(kafka, [old, new]) == [new]
    configs = await _topic_configs(pipeline, [old, new])
    for name in (old, new):
        assert configs[name]["min.insync.replicas"] == (str(kafka.insync_replicas), 1), name
    assert configs[old]["cleanup.policy"] == ("compact", 1) and configs[old]["retention.ms"] == ("3600000", 1)

    worker = pipeline.worker()
    worker.start()
    await worker.wait_ready()
    changelog = f"{pipeline.settings.worker.app_id}-seen_event_ids-changelog"
    configs = await _topic_configs(pipeline, [changelog, kafka.events_topic])
    assert configs[changelog]["min.insync.replicas"] == (str(kafka.insync_replicas), 1)
    assert configs[changelog]["cleanup.policy"] == ("compact", 1)
    assert configs[kafka.events_topic]["min.insync.replicas"] == (str(kafka.insync_replicas), 1)


async def test_a_record_too_large_to_dead_letter_whole_does_not_jam_its_partition(pipeline: Pipeline) -> None:
    """A 1,000,500-byte record fits the broker's limit but not faust's producer's (1,000,000): sent
    whole to the dead-letter topic it would fail, the batch stay unacked, and the record be
    fetched again forever. It goes cut, with its size and hash, and the partition moves on."""
    worker = pipeline.worker()
    worker.start()
    await worker.wait_ready()
    huge = b'{"event_id": "' + b"x" * 1_000_480 + b'"}'
    after = _like(1)
    await pipeline.produce([(b"p1", huge), (b"p1", after)])
    await pipeline.wait_for_rows({"like": 1})
    [letter] = await pipeline.read_topic(pipeline.settings.kafka.dlq_topic)
    headers = {name.removeprefix(HEADER_PREFIX): value.decode() for name, value in letter.headers}
    assert headers["kind"] == "too_large" and headers["truncated"] == "true"
    assert headers["original_bytes"] == str(len(huge)) and headers["sha256"] == hashlib.sha256(huge).hexdigest()
    assert letter.value == huge[:KEPT_BYTES]
    assert worker.proc.poll() is None


async def test_a_full_disk_under_the_tables_stalls_and_loses_nothing(pipeline: Pipeline, tmp_path: Any) -> None:
    """The worker's data dir fills up (a small tmpfs): RocksDB refuses the tables' writes. That is
    an outage like the database's: the partitions wait (503), nothing is dead-lettered as poison.
    If the store does not come back within ``pipeline.state_retry_max_s`` the worker stops, saying
    where; started again once there is room, it writes every event once."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], check=True)
    try:
        env = {
            "PINAPP_WORKER__DATA_DIR": str(disk / "worker"),
            "PINAPP_PIPELINE__STATE_RETRY_MAX_S": "20",
            "PINAPP_WORKER__ROCKSDB_WRITE_BUFFER_MB": "1",  # RocksDB preallocates a memtable's WAL: fill it soon
        }
        worker = pipeline.worker(**env)
        worker.start()
        await worker.wait_ready()
        await pipeline.produce([(line_key(line), line) for line in (_like(n) for n in range(20))])
        await pipeline.wait_for_rows({"like": 20})

        filler = disk / "filler"
        with filler.open("wb") as f, contextlib.suppress(OSError):  # every byte left
            while True:
                f.write(b"\0" * 1_048_576)
                f.flush()
        total = 100_020  # enough dedup entries to fill the preallocated WAL and flush a memtable
        await pipeline.produce([(line_key(line), line) for line in (_like(n) for n in range(20, total))])
        deadline = time.monotonic() + 60
        while (status := worker.health())[0] != 503 and worker.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert status[0] == 503 or worker.proc.poll() is not None, f"the full disk shows: {status}"
        assert await pipeline.read_topic(pipeline.settings.kafka.dlq_topic) == [], "nothing is dead-lettered"

        filler.unlink()  # room again
        deadline = time.monotonic() + 60
        while worker.proc.poll() is None and len((await pipeline.ids_by_type())["like"]) < total:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        if worker.proc.poll() is not None:  # it stopped: say where, then start again
            assert "the local table store under" in worker.log_path.read_text()
            worker.start()
            await worker.wait_ready()
        await pipeline.wait_for_rows({"like": total}, timeout=300)
        assert await pipeline.sql("SELECT COUNT(*) FROM likes") == [(total,)]
        assert await pipeline.read_topic(pipeline.settings.kafka.dlq_topic) == []
        await pipeline.assert_rollups_exact()
    finally:
        pipeline.stop_all()
        subprocess.run(["umount", "-l", str(disk)], check=False)


async def _own_configs(pipeline: Pipeline, topic: str) -> dict[str, str]:
    """``topic``'s own settings (not the broker's defaults)."""
    return {k: v for k, (v, source) in (await _topic_configs(pipeline, [topic]))[topic].items() if source == 1}


async def _set_topic_configs(pipeline: Pipeline, topic: str, configs: dict[str, str]) -> None:
    """Replace ``topic``'s own settings with ``configs`` (AlterConfigs replaces them all)."""
    admin = AIOKafkaAdminClient(**client_options(pipeline.settings.kafka))
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)])
    finally:
        await admin.close()


async def test_kafka_refusing_the_changelog_holds_the_commit_until_it_takes_every_record(pipeline: Pipeline) -> None:
    """A changelog send that fails after it was handed to the producer (here: the topic takes no
    record over 64 bytes, so Kafka refuses every batch) must hold the batch's commit, with
    ``/health`` naming Kafka; faust's own commit would go ahead, and a worker restarted then
    would miss those table entries. Once Kafka takes them, everything is there."""
    settings = pipeline.settings
    changelog = f"{settings.worker.app_id}-seen_event_ids-changelog"
    topic, group = settings.kafka.events_topic, settings.worker.app_id
    worker = pipeline.worker()
    worker.start()
    await worker.wait_ready()
    first = [_like(n) for n in range(200)]
    await pipeline.produce([(line_key(line), line) for line in first])
    await pipeline.wait_committed(topic, group)

    own = await _own_configs(pipeline, changelog)
    await _set_topic_configs(pipeline, changelog, own | {"max.message.bytes": "64"})
    try:
        more = [_like(n) for n in range(200, 400)]
        await pipeline.produce([(line_key(line), line) for line in more])
        deadline = time.monotonic() + 90
        while (health := worker.health())[1].get("sinks", {}).get("kafka", {}).get("state") != "retrying":
            assert time.monotonic() < deadline, f"/health never named Kafka: {health}"
            await asyncio.sleep(1)
        held, ends = await pipeline.group_position(topic, group)
        await asyncio.sleep(5)
        assert (await pipeline.group_position(topic, group))[0] == held != ends, "the commit must wait for Kafka"
        assert health[0] == 503 and "Kafka did not take" in worker.log_path.read_text()
    finally:
        await _set_topic_configs(pipeline, changelog, own)
    await pipeline.wait_committed(topic, group)
    await pipeline.wait_for_rows({"like": 400})
    deadline = time.monotonic() + 30
    while worker.health()[0] != 200:
        assert time.monotonic() < deadline, worker.health()
        await asyncio.sleep(1)
    assert await pipeline.read_topic(settings.kafka.dlq_topic) == []
    entries = {rec.key for rec in await pipeline.read_topic(changelog)}
    assert len(entries) >= 400, f"every event's dedup entry reached the changelog: {len(entries)}"
