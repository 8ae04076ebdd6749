"""Helpers to run pinapp for real in tests: a worker process, Kafka I/O, database reads.

Each test gets its own app id, topics and database (see :class:`Pipeline`), so tests
never see each other's data even on one shared stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from prometheus_client.parser import text_string_to_metric_families

from config import Settings, load_settings
from pinapp.adapters.db import create_pool
from pinapp.adapters.kafka import client_options, ensure_topics, make_producer, read_topic
from pinapp.adapters.rollup_check import check_rollups
from pinapp.adapters.s3 import s3_client
from pinapp.archive.layout import ObjectKey
from pinapp.archive.records import ArchivedRecord
from pinapp.archive.verify import archived_objects, archiver_group, committed_offsets
from pinapp.domain.geo import GeoLocator
from pinapp.tools.generator import GeneratedRecord, GeneratorConfig, TrafficGenerator

__all__ = ["Pipeline", "WorkerProcess", "free_port"]

REPO = Path(__file__).resolve().parents[2]
_T = TypeVar("_T")
_CLONE_NEWNET = 0x40000000


def in_netns(namespace: str | None, call: Callable[[], _T]) -> _T:
    """``call()`` with its sockets in network namespace ``namespace`` (``None``: this one).

    setns(2) moves only the calling thread, so ``call`` runs on a thread of its own that ends
    with it: a worker on a host of its own serves ``/health`` on that host's loopback.
    """
    if namespace is None:
        return call()
    outcome: list[Any] = []

    def enter_and_call() -> None:
        try:
            fd = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({namespace}) failed")
            finally:
                os.close(fd)
            outcome.append((True, call()))
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            outcome.append((False, exc))

    thread = threading.Thread(target=enter_and_call, name=f"netns-{namespace}")
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


TABLE_OF = {"pin": "pins", "repin": "repins", "comment": "comments", "like": "likes", "login": "logins"}


def placeable_repins(records: Iterable[GeneratedRecord], geo: GeoLocator) -> set[str]:
    """Event ids of the valid repins among ``records`` that the geo database locates: the ones
    the globe can place (and so the ones its feed carries)."""
    return {
        doc["event_id"]
        for r in records
        if r.kind == "valid" and r.event_type == "repin"
        for doc in [json.loads(r.value)]
        if geo.lookup(doc["ip"]).latitude is not None
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_entry(repo: Path) -> str:
    """``python -c`` code running the CLI of the checkout ``repo``.

    ``pinapp.cli``, but a baseline checkout (``make bench BASELINE=...``) between the layouts of
    issues 17 and 31 has it at ``pinapp/tools/cli.py``.
    """
    module = "pinapp.tools.cli" if (repo / "pinapp" / "tools" / "cli.py").exists() else "pinapp.cli"
    return f"from {module} import main; main()"


@dataclass
class WorkerProcess:
    """``pinapp worker`` (or ``pinapp archiver``) as a child process with its own environment."""

    env: dict[str, str]
    log_path: Path
    web_port: int
    command: str = "worker"
    ready_marker: str = "Worker ready"
    repo: Path = REPO  # the checkout whose code runs (bench: a baseline commit's worktree)
    netns: str | None = None  # run on this network namespace's host (the cluster tests)
    proc: subprocess.Popen[bytes] | None = None
    _ready_seen: int = 0  # "Worker ready" lines already waited for (restarts append to the log)

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            on_host = ["ip", "netns", "exec", self.netns] if self.netns else []
            self.proc = subprocess.Popen(
                [*on_host, sys.executable, "-c", cli_entry(self.repo), "--profile", "test", self.command],
                cwd=self.repo,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait for the ready line (faust's 'Worker ready': partitions assigned, tables recovered)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.log_path.read_text(errors="replace").count(self.ready_marker) > self._ready_seen:
                self._ready_seen += 1
                return
            await asyncio.sleep(0.3)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            raise AssertionError(f"worker ignored {sig!r} for {timeout}s:\n{self.log_tail()}") from None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no commit."""
        self.stop(signal.SIGKILL)

    def metrics(self) -> dict[str, float]:
        """This worker's Prometheus samples, by name plus labels."""
        _, _, body = self.fetch("/metrics")
        text = body.decode()
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return samples

    def health(self) -> tuple[int, dict[str, Any]]:
        """``GET /health``: the status code and the JSON document."""
        status, _, body = self.fetch("/health", timeout=5)
        return status, json.loads(body)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        """``GET path`` on this worker's web server: status code and JSON body."""
        status, _, body = self.fetch(path, headers)
        return status, json.loads(body)

    def fetch(
        self, path: str, headers: dict[str, str] | None = None, timeout: float = 10
    ) -> tuple[int, dict[str, str], bytes]:
        """``GET path``: status, headers and the raw body, whatever the content type (from the
        process's host, when it runs on one of its own)."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.web_port}{path}", headers=headers or {})

        def get() -> tuple[int, dict[str, str], bytes]:
            try:
                with urllib.request.urlopen(request, timeout=timeout) as resp:
                    return resp.status, dict(resp.headers), resp.read()
            except urllib.error.HTTPError as err:
                with err:
                    return err.code, dict(err.headers), err.read()

        return in_netns(self.netns, get)

    @contextlib.asynccontextmanager
    async def globe_stream(self) -> AsyncIterator[list[dict[str, Any]]]:
        """Collect what ``/globe/stream`` sends from its ``ready`` event on; each point gets
        ``received_ms``, the wall-clock time it arrived."""
        received: list[dict[str, Any]] = []
        ready = asyncio.Event()

        async def read() -> None:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{self.web_port}/globe/stream") as response,
            ):
                assert response.status == 200 and response.content_type == "text/event-stream"
                event = None
                async for raw in response.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "ready":
                        ready.set()
                    elif line.startswith("data: "):
                        now_ms = time.time() * 1000
                        received.extend({**p, "received_ms": now_ms} for p in json.loads(line[6:]))
                    elif not line:
                        event = None

        task = asyncio.create_task(read())
        waiting = asyncio.create_task(ready.wait())
        try:
            await asyncio.wait({task, waiting}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()  # the stream failed: raise its error
            assert ready.is_set(), "/globe/stream sent no ready event within 30 s"
            yield received
        finally:
            waiting.cancel()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def rss_mb(self) -> float:
        """Resident memory of the worker process, in MiB (from /proc)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def generations(self) -> list[int]:
        """The consumer group generations this process's log says it joined, in order."""
        log = self.log_path.read_text(errors="replace")
        return [int(g) for g in re.findall(r"Joined group '[^']+' \(generation (\d+)\)", log)]

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def diagnose(self, max_lines: int = 200) -> str:
        """What a stuck worker is doing: its ``/health`` and where each asyncio task waits.

        mode's worker prints every thread and task stack on SIGUSR1 (to the log); only the
        task names and their frames are kept here, without the local variables.
        """
        if not self.alive:
            return f"{self.command} (exited {self.proc.returncode if self.proc else None}):\n{self.log_tail()}"
        try:
            status, doc = self.health()
            health = f"/health {status}: {json.dumps(doc)[:2000]}"
        except Exception as exc:  # noqa: BLE001 - a stuck web server is itself the finding
            health = f"/health failed: {exc!r}"
        before = len(self.log_path.read_text(errors="replace"))
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGUSR1)
        time.sleep(3)
        dump = self.log_path.read_text(errors="replace")[before:].splitlines()
        frames = [
            re.sub(r'File ".*/(site-packages|lib/python3[.0-9]*)/', 'File "', line)
            for line in dump
            if line.lstrip().startswith(("TASK ", "File ", "THREAD "))
        ]
        return "\n".join([health, f"task stacks (SIGUSR1, {len(frames)} lines):", *frames[-max_lines:]])


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

    async def wait_for_rows(self, expected: dict[str, int], timeout: float = 120.0) -> dict[str, int]:
        """Poll until each table has at least its expected row count; returns the counts."""
        deadline = time.monotonic() + timeout
        counts: dict[str, int] = {}
        while time.monotonic() < deadline:
            try:
                counts = {t: len(ids) for t, ids in (await self.ids_by_type()).items()}
            except Exception:  # noqa: BLE001 - the worker may not have created the tables yet
                counts = {}
            if counts and all(counts[t] >= n for t, n in expected.items()):
                return counts
            await asyncio.sleep(0.5)
        logs = "\n".join(f"{w.log_tail(30)}\n{w.diagnose()}" for w in self.workers)
        raise AssertionError(f"rows did not arrive in {timeout}s: have {counts}, want {expected}\n{logs}")


def traffic(pipeline: Pipeline, seed: int, count: int) -> tuple[list[GeneratedRecord], Path, dict[str, list[str]]]:
    """``count`` generated records and their ground-truth file."""
    gen = TrafficGenerator(GeneratorConfig(seed=seed, duplicate_ratio=0.03, malformed_ratio=0.01), GeoLocator())
    records = [next(gen) for _ in range(count)]
    truth = pipeline.tmp / "truth.json"
    gen.truth.write(truth)
    return records, truth, gen.truth.event_ids


def assert_clean(pipeline: Pipeline, truth: Path, *workers: WorkerProcess) -> str:
    """``pinapp audit`` against ``truth`` is clean (else the workers' log tails say why); its report."""
    audit = pipeline.audit(truth)
    logs = "\n".join(w.log_tail(30) for w in workers)
    assert audit.returncode == 0, f"{audit.stdout}{audit.stderr}\n{logs}"
    assert "audit: CLEAN" in audit.stdout
    return audit.stdout


async def wait_for(check: object, what: str, timeout: float = 90.0) -> None:
    """Until ``check()`` is true, or fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


async def start(*workers: WorkerProcess) -> None:
    """Start ``workers``, then wait until each is ready."""
    for w in workers:
        w.start()
    for w in workers:
        await w.wait_ready(180)
