"""A pipeline of its own on the shared stack: its app id, topics, database and bucket, its processes.

Each test (and each bench run) gets its own, so none sees another's data even on one stack.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from config import Settings, load_settings
from pinapp.adapters.db import create_pool
from pinapp.adapters.kafka import client_options, ensure_topics, make_producer, read_topic
from pinapp.adapters.rollup_check import check_rollups
from pinapp.adapters.s3 import s3_client
from pinapp.archive.layout import ObjectKey
from pinapp.archive.records import ArchivedRecord
from pinapp.archive.verify import archived_objects, archiver_group, committed_offsets
from pinapp.tools.generator import GeneratedRecord
from pinapp.tools.harness.processes import REPO, WorkerProcess, cli_entry, free_port

__all__ = ["TABLE_OF", "Pipeline"]

TABLE_OF = {"pin": "pins", "repin": "repins", "comment": "comments", "like": "likes", "login": "logins"}


@dataclass
class Pipeline:
    """One isolated pinapp deployment on the shared test stack."""

    tmp: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    name: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    workers: list[WorkerProcess] = field(default_factory=list)
    #: the checkout whose pinapp the workers and CLI run (its cwd wins over the editable install)
    repo: Path = REPO
    #: where a process runs, by its role ("worker", "archiver", "singer") and index: its network
    #: namespace and the settings it needs there (the cluster tests: each on a host of its own)
    place: Callable[[str, int], tuple[str, dict[str, str]]] | None = None

    def __post_init__(self) -> None:
        self.env = {
            **os.environ,
            "PINAPP_PROFILE": "test",
            "PINAPP_WORKER__APP_ID": f"pinapp-it-{self.name}",
            "PINAPP_KAFKA__EVENTS_TOPIC": f"events-{self.name}",
            "PINAPP_KAFKA__DLQ_TOPIC": f"events-dlq-{self.name}",
            "PINAPP_KAFKA__LIVE_TOPIC": f"repins-live-{self.name}",
            "PINAPP_DB__DATABASE": f"pinapp_it_{self.name}",
            "PINAPP_S3__BUCKET": f"pinapp-it-{self.name}",
            "PINAPP_SINGER__STATUS_TOPIC": f"pinapp-it-{self.name}-singer-status",
            "PINAPP_WORKER__LOG_LEVEL": "info",
            **self.extra_env,
        }
        overrides = {k: v for k, v in self.env.items() if k.startswith("PINAPP_") and k != "PINAPP_PROFILE"}
        saved = {k: os.environ.get(k) for k in overrides}
        os.environ.update(overrides)
        try:
            self.settings: Settings = load_settings("test")
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    # -- workers ------------------------------------------------------------------------

    def worker(self, index: int = 0, **env: str) -> WorkerProcess:
        """A worker with its own data folder and web port (not started)."""
        port = free_port()
        netns, there = self._placed("worker", index)
        env = {
            **self.env,
            "PINAPP_WORKER__DATA_DIR": str(self.tmp / f"worker{index}"),
            "PINAPP_WORKER__WEB_PORT": str(port),
            **there,
            **env,
        }
        w = WorkerProcess(env, self.tmp / f"worker{index}.log", port, repo=self.repo, netns=netns)
        self.workers.append(w)
        return w

    def _placed(self, role: str, index: int) -> tuple[str | None, dict[str, str]]:
        return self.place(role, index) if self.place else (None, {})

    def archiver(self, index: int = 0, **env: str) -> WorkerProcess:
        """An archiver worker (its own consumer group) with its own data folder and web port."""
        port = free_port()
        netns, there = self._placed("archiver", index)
        merged = {
            **self.env,
            "PINAPP_WORKER__DATA_DIR": str(self.tmp / f"archiver{index}"),
            "PINAPP_ARCHIVE__WEB_PORT": str(port),
            **there,
            **env,
        }
        w = WorkerProcess(
            merged, self.tmp / f"archiver{index}.log", port, command="archiver", repo=self.repo, netns=netns
        )
        self.workers.append(w)
        return w

    def singer(self, index: int = 0, **env: str) -> WorkerProcess:
        """``pinapp singer`` shipping ``<tmp>/logs/app.log*`` (its own watermark folder)."""
        netns, there = self._placed("singer", index)
        merged = {
            **self.env,
            "PINAPP_SINGER__DATA_DIR": str(self.tmp / "singer"),
            "PINAPP_SINGER__STREAMS": f'[{{"name": "app", "paths": ["{self.logs}/app.log*"]}}]',
            **there,
            **env,
        }
        w = WorkerProcess(
            merged,
            self.tmp / f"singer{index}.log",
            0,
            command="singer",
            ready_marker="singer: shipping",
            repo=self.repo,
            netns=netns,
        )
        self.workers.append(w)
        return w

    @property
    def logs(self) -> Path:
        """Where this deployment's application log files go."""
        return self.tmp / "logs"

    def stop_all(self) -> None:
        for w in self.workers:
            w.stop(signal.SIGKILL)

    async def drop(self) -> None:
        """Delete this deployment's topics and database, so a test stack does not grow."""
        kafka = self.settings.kafka
        ours = {kafka.events_topic, kafka.dlq_topic, kafka.live_topic}
        prefix = f"{self.settings.worker.app_id}-"
        admin = AIOKafkaAdminClient(**client_options(kafka))
        await admin.start()
        try:
            doomed = [t for t in await admin.list_topics() if t in ours or t.startswith(prefix)]
            if doomed:
                await admin.delete_topics(doomed)
        finally:
            await admin.close()
        pool = await create_pool(self.settings.db, with_database=False, size=1)
        try:
            async with pool.acquire() as conn, conn.cursor() as cur:
                # Only when it exists: "IF EXISTS" on a missing one logs a server warning.
                await cur.execute(
                    "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (self.settings.db.database,)
                )
                if await cur.fetchone():
                    await cur.execute(f"DROP DATABASE `{self.settings.db.database}`")
        finally:
            pool.close()
            await pool.wait_closed()

    # -- S3 archive -------------------------------------------------------------------------

    async def create_bucket(self) -> None:
        async with s3_client(self.settings.s3) as s3:
            await s3.create_bucket(Bucket=self.settings.s3.bucket)

    async def group_position(self, topic: str, group: str) -> tuple[dict[int, int], dict[int, int]]:
        """``(committed by group, end offset)`` per partition of ``topic``."""
        _, committed = await committed_offsets(self.settings, topic, group)
        consumer = AIOKafkaConsumer(**client_options(self.settings.kafka))
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in committed]
            ends = {tp.partition: off for tp, off in (await consumer.end_offsets(tps)).items()}
        finally:
            await consumer.stop()
        return committed, ends

    async def archive_position(self, topic: str) -> tuple[dict[int, int], dict[int, int]]:
        """``(committed by the archiver, end offset)`` per partition of ``topic``."""
        return await self.group_position(topic, archiver_group(self.settings))

    async def wait_committed(self, topic: str, group: str, timeout: float = 120.0) -> dict[int, int]:
        """Poll until ``group`` has committed every partition of ``topic`` to its end."""
        deadline = time.monotonic() + timeout
        committed: dict[int, int] = {}
        ends: dict[int, int] = {}
        while time.monotonic() < deadline:
            committed, ends = await self.group_position(topic, group)
            if committed and committed == ends:
                return ends
            await asyncio.sleep(0.5)
        logs = "\n".join(w.log_tail(30) for w in self.workers)
        raise AssertionError(
            f"{group} has not committed all of {topic} after {timeout}s: committed {committed}, end {ends}\n{logs}"
        )

    async def wait_archived(self, topic: str, timeout: float = 120.0) -> dict[int, int]:
        """Poll until the archiver has committed every partition of ``topic`` to its end."""
        return await self.wait_committed(topic, archiver_group(self.settings), timeout)

    async def archived_objects(self, topic: str) -> list[tuple[ObjectKey, list[ArchivedRecord]]]:
        """Every archive object of ``topic`` with its records."""
        async with s3_client(self.settings.s3) as s3:
            return [
                obj async for obj in archived_objects(s3, self.settings.s3.bucket, self.settings.archive.prefix, topic)
            ]

    async def archived_records(self, topic: str) -> list[ArchivedRecord]:
        """Every record in every archive object of ``topic``, duplicates included."""
        return [rec for _, recs in await self.archived_objects(topic) for rec in recs]

    async def archive_keys(self, topic: str) -> list[str]:
        prefix = self.settings.archive.prefix.strip("/")
        async with s3_client(self.settings.s3) as s3:
            paginator = s3.get_paginator("list_objects_v2")
            return [
                obj["Key"]
                async for page in paginator.paginate(Bucket=self.settings.s3.bucket, Prefix=f"{prefix}/{topic}/")
                for obj in page.get("Contents", [])
            ]

    def generate_args(self, count: int, seed: int) -> list[str]:
        """``pinapp generate`` arguments: ``count`` events from ``seed`` into this deployment's log file."""
        return [
            "generate",
            "--to",
            "file",
            "--file",
            str(self.logs / "app.log"),
            "--count",
            str(count),
            "--seed",
            str(seed),
        ]

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``pinapp --profile test ARGS`` in this deployment's environment."""
        return subprocess.run(
            [sys.executable, "-c", cli_entry(self.repo), "--profile", "test", *args],
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def audit(self, truth: Path, *, wait_s: float = 180) -> subprocess.CompletedProcess[str]:
        """``pinapp audit --truth`` until clean or ``wait_s`` (the pipeline may still be catching up)."""
        return self.cli("audit", "--truth", str(truth), "--wait", str(wait_s), timeout=wait_s + 300)

    # -- Kafka ----------------------------------------------------------------------------

    async def produce(
        self,
        records: Iterable[GeneratedRecord | tuple[Any, ...]],
        *,
        rate: float | None = None,
        topic: str | None = None,
    ) -> int:
        """Produce records: generated ones, ``(key, value)`` or ``(key, value, timestamp_ms)``."""
        target = topic or self.settings.kafka.events_topic
        await ensure_topics(self.settings.kafka)
        await self.keep_forever(target, self.settings.kafka.dlq_topic)
        producer = make_producer(self.settings.kafka)
        await producer.start()
        sent = 0
        started = time.monotonic()
        try:
            futures = []
            for rec in records:
                parts = (rec.key, rec.value) if isinstance(rec, GeneratedRecord) else tuple(rec)
                key, value, timestamp_ms = (*parts, None)[:3]
                futures.append(await producer.send(target, value, key=key, timestamp_ms=timestamp_ms))
                sent += 1
                if rate is not None and sent % 50 == 0:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        return sent

    async def keep_forever(self, *topics: str) -> None:
        """Turn off time retention on ``topics``.

        Tests produce records stamped in 2024 (event-time layout, historical days). Under the
        broker's default 7-day retention, its next retention check (every 5 minutes) deletes
        them, at a moment that depends on when the broker started: the archive would be
        complete and the topic suddenly empty.
        """
        await ensure_topics(self.settings.kafka, topics)
        admin = AIOKafkaAdminClient(**client_options(self.settings.kafka))
        await admin.start()
        try:
            await admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name, {"retention.ms": "-1"}) for name in topics]
            )
        finally:
            await admin.close()

    async def read_topic(self, topic: str) -> list[Any]:
        """Every record of ``topic`` from the beginning to its end offsets at the start of the read
        (:func:`pinapp.adapters.kafka.read_topic`). A topic whose log start has moved (retention deleted
        records) fails with the log starts in the message."""
        starts: dict[int, int] = {}
        out = [rec async for rec in read_topic(self.settings.kafka, topic, log_starts=starts)]
        assert all(offset == 0 for offset in starts.values()), f"{topic}: records deleted, log starts at {starts}"
        return out

    # -- database ---------------------------------------------------------------------------

    async def sql(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        pool = await create_pool(self.settings.db, size=1)
        try:
            async with pool.acquire() as conn:
                async with conn.cursor() as cur:
                    await cur.execute(statement, params)
                    rows = list(await cur.fetchall())
                await conn.commit()
            return rows
        finally:
            pool.close()
            await pool.wait_closed()

    async def assert_rollups_exact(self) -> None:
        """Every rollup equals the GROUP BY over the raw rows, and the pin rollup holds the true top
        pins (what ``pinapp audit`` checks: pinapp.adapters.rollup_check)."""
        pool = await create_pool(self.settings.db, size=1)
        try:
            check = await check_rollups(pool)
        finally:
            pool.close()
            await pool.wait_closed()
        assert check.clean, check.mismatches
        assert check.minutes > 0, "no events to check"

    async def ids_by_type(self) -> dict[str, list[str]]:
        """Every event_id in each event table (duplicates would show twice)."""
        out = {}
        for event_type, table in TABLE_OF.items():
            rows = await self.sql(f"SELECT event_id FROM {table}")
            out[event_type] = [r[0] for r in rows]
        return out

    async def row_counts(self) -> dict[str, int]:
        """Each event table's rows, counted by the database (a poll that fetched every id would
        take the CPU of the workers it waits for)."""
        union = " UNION ALL ".join(f"SELECT '{t}', COUNT(*) FROM {table}" for t, table in TABLE_OF.items())
        return {t: int(n) for t, n in await self.sql(union)}

    async def wait_for_rows(
        self, expected: dict[str, int], timeout: float = 120.0, *, poll_s: float = 0.5
    ) -> dict[str, int]:
        """Poll every ``poll_s`` until each table has at least its expected row count; returns the counts."""
        deadline = time.monotonic() + timeout
        counts: dict[str, int] = {}
        while time.monotonic() < deadline:
            try:
                counts = await self.row_counts()
            except Exception:  # noqa: BLE001 - the worker may not have created the tables yet
                counts = {}
            if counts and all(counts[t] >= n for t, n in expected.items()):
                return counts
            await asyncio.sleep(poll_s)
        logs = "\n".join(f"{w.log_tail(30)}\n{w.diagnose()}" for w in self.workers)
        raise AssertionError(f"rows did not arrive in {timeout}s: have {counts}, want {expected}\n{logs}")
