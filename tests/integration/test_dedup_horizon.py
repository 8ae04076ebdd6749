"""Dedup state is bounded by the horizon, locally and in the changelog, across recovery.

faust's windowed tables do not expire with RocksDB after recovery (faust #385); this
test proves pinapp's explicit expiry does: expired ids leave the worker's RocksDB,
tombstones reach the changelog, and a worker recovering from the changelog onto an empty
disk does not bring them back.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from rocksdict import AccessType, Rdict

from pinapp.tools.harness import Pipeline, WorkerProcess

HORIZON_S = 4


def _login(event_id: str) -> tuple[bytes, bytes]:
    doc = {"event_id": event_id, "event_type": "login", "ts": 1_700_000_000_000, "user_id": "u1", "ip": "81.2.69.160"}
    return b"u1", orjson.dumps(doc)


def _seen_keys(worker: WorkerProcess) -> set[str]:
    """event_ids in the worker's local RocksDB copy of seen_event_ids (worker stopped)."""
    data_dir = Path(worker.env["PINAPP_WORKER__DATA_DIR"])
    paths = sorted(data_dir.glob("v1/tables/seen_event_ids-*.db"))
    assert paths, f"no seen_event_ids store under {data_dir}"
    keys: set[str] = set()
    for path in paths:
        db = Rdict(str(path), access_type=AccessType.read_only())
        try:
            keys |= {k.decode() for k in db.keys() if not k.startswith(b"__faust")}  # noqa: SIM118 - Rdict, not a dict
        finally:
            db.close()
    return keys


async def test_expired_ids_leave_local_state_and_the_changelog_and_stay_gone_after_recovery(
    tmp_path: Path, test_stack: object
) -> None:
    pipeline = Pipeline(
        tmp_path,
        extra_env={
            "PINAPP_PIPELINE__DEDUP_HORIZON_S": str(HORIZON_S),
            "PINAPP_KAFKA__PARTITIONS": "1",
        },
    )
    try:
        first = pipeline.worker(0)
        first.start()
        await first.wait_ready()

        old = [f"a-{i:03d}" for i in range(300)]
        await pipeline.produce([_login(i) for i in old])
        await pipeline.wait_for_rows({"login": 300})
        await asyncio.sleep(HORIZON_S + 1)

        # Past the horizon: resends of old ids are accepted again (the idempotent sink keeps
        # one row each), and new traffic drives the sweep over the expired ids.
        resent = old[:50]
        new = [f"b-{i:03d}" for i in range(300)]
        await pipeline.produce([_login(i) for i in resent + new])
        await pipeline.wait_for_rows({"login": 600})
        # Within the horizon: resends of new ids are duplicates.
        await pipeline.produce([_login(i) for i in new[:10]])
        await asyncio.sleep(2)
        metrics = first.metrics()
        assert metrics["pinapp_duplicates_dropped_total"] == 10
        assert metrics["pinapp_events_in_total"] == 660
        assert [r[0] for r in await pipeline.sql("SELECT COUNT(*) FROM logins")] == [600]
        first.stop()

        expired = set(old) - set(resent)
        alive = set(resent) | set(new)
        assert _seen_keys(first) == alive

        changelog = f"{pipeline.settings.worker.app_id}-seen_event_ids-changelog"
        last_value: dict[str, bytes | None] = {}
        for rec in await pipeline.read_topic(changelog):
            last_value[rec.key.decode()] = rec.value
        assert {k for k, v in last_value.items() if v is None} == expired
        assert {k for k, v in last_value.items() if v is not None} == alive

        # A new worker on an empty disk recovers from the changelog: expired ids stay gone,
        # live ones come back; and it goes on deduplicating.
        second = pipeline.worker(1)
        second.start()
        await second.wait_ready()
        await pipeline.produce([_login("c-1"), _login("c-1")])
        await pipeline.wait_for_rows({"login": 601})
        await asyncio.sleep(1)
        assert second.metrics()["pinapp_duplicates_dropped_total"] == 1
        second.stop()
        assert _seen_keys(second) - {"c-1"} <= alive
        assert not _seen_keys(second) & expired
    finally:
        pipeline.stop_all()
        await pipeline.drop()


async def test_undecodable_dedup_state_never_stalls_or_loses_events(pipeline: Pipeline) -> None:
    """A corrupt (or older-format) changelog value is recovered into RocksDB; the event with
    that id must still land, and events after it too."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from pinapp.adapters.kafka import make_producer

    kafka = pipeline.settings.kafka
    changelog = f"{pipeline.settings.worker.app_id}-seen_event_ids-changelog"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    changelog,
                    num_partitions=kafka.partitions,
                    replication_factor=1,
                    topic_configs={"cleanup.policy": "compact"},
                )
            ]
        )
    finally:
        await admin.close()
    producer = make_producer(kafka)
    await producer.start()
    try:
        for partition in range(kafka.partitions):  # wherever the key lands, it is corrupt
            await producer.send_and_wait(changelog, b'{"old": "json"}', key=b"corrupt-1", partition=partition)
    finally:
        await producer.stop()

    worker = pipeline.worker()
    worker.start()
    await worker.wait_ready()
    await pipeline.produce([_login("corrupt-1"), _login("after-1"), _login("after-1")])
    await pipeline.wait_for_rows({"login": 2})
    await asyncio.sleep(1)
    assert sorted(r[0] for r in await pipeline.sql("SELECT event_id FROM logins")) == ["after-1", "corrupt-1"]
    metrics = worker.metrics()
    assert metrics["pinapp_duplicates_dropped_total"] == 1
    assert not [k for k, v in metrics.items() if k.startswith("pinapp_dead_lettered_total") and v]
