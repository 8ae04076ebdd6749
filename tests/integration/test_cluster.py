"""pinapp on a three-node Kafka cluster, every process on a host of its own (the short suite).

Replication factor 3, ``min.insync.replicas`` 2, each broker, worker, archiver and Singer in its
own network namespace (:mod:`pinapp.tools.stack.cluster`; the database and S3 stay on this
host, through the relay). Two workers and an archiver run under load while a broker fails;
then ``pinapp audit`` compares every table and the archive with the generator's truth: nothing
lost, nothing doubled. Needs root (CI runs as root); a cluster that cannot start fails
the tests with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from config import Settings
from pinapp.adapters.kafka import ensure_topics
from pinapp.domain.geo import GeoLocator
from pinapp.errors import PinappError
from pinapp.tools.generator import GeneratedRecord, GeneratorConfig, TrafficGenerator
from pinapp.tools.harness import Pipeline, WorkerProcess
from pinapp.tools.stack.cluster import HOST_SIDE, KafkaCluster, Node
from pinapp.tools.stack.services import MariaDBService
from pinapp.tools.stack.stack import Stack
from tests.integration.proxy import BlackHoleProxy

RATE = 600  # events/s offered: three brokers, two workers and the database share 2 cores


@pytest.fixture(scope="module")
def cluster(test_stack: Settings) -> Iterator[KafkaCluster]:
    kafka = KafkaCluster.of(test_stack)
    try:
        kafka.up()
    except PinappError as exc:
        kafka.down()
        pytest.fail(f"the three-node Kafka cluster could not start:\n{exc}", pytrace=False)
    try:
        yield kafka
    finally:
        kafka.down()


@pytest.fixture
async def on_cluster(cluster: KafkaCluster, tmp_path: Path) -> AsyncIterator[Pipeline]:
    slots = {"worker": 0, "archiver": 10, "singer": 20}  # worker1 on pinapp-h1, archiver0 on pinapp-h10

    def place(role: str, index: int) -> tuple[str, dict[str, str]]:
        return cluster.host(slots[role] + index), cluster.client_env()

    pipeline = Pipeline(
        tmp_path,
        extra_env={"PINAPP_KAFKA__BOOTSTRAP": cluster.bootstrap, "PINAPP_KAFKA__REPLICATION_FACTOR": "3"},
        place=place,
    )
    try:
        yield pipeline
    finally:
        pipeline.stop_all()
        for node in cluster.nodes:  # whatever a failed test left broken
            cluster.resume(node)
            cluster.heal(node)
            if node.process.pid() is None:
                cluster.start(node)
                cluster.wait_healthy(node)
        await pipeline.drop()


async def _leader_of(pipeline: Pipeline, cluster: KafkaCluster, partition: int = 0) -> Node:
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([pipeline.settings.kafka.events_topic])
    finally:
        await admin.close()
    leader = next(p["leader"] for p in described["partitions"] if p["partition"] == partition)
    return cluster.node(leader)


async def _longest_stall(pipeline: Pipeline, since: datetime) -> float:
    """The longest time with no new row in any table, from ``since`` to the last row."""
    times = [since]
    for table in ("pins", "repins", "likes", "comments", "logins"):
        times += [
            t for (t,) in await pipeline.sql(f"SELECT ingested_at FROM {table} WHERE ingested_at >= %s", (since,))
        ]
    times.sort()
    return max((b - a).total_seconds() for a, b in itertools.pairwise(times))


def _host_of(process: WorkerProcess) -> str:
    assert process.netns is not None, "on_cluster puts every process on a host of its own"
    return process.netns


def _owned(worker: WorkerProcess, topic: str) -> set[str]:
    with contextlib.suppress(OSError):
        return {p for p in worker.health()[1]["partitions"] if p.startswith(f"{topic}:")}
    return set()


async def _wait_for_partitions(workers: list[WorkerProcess], topic: str, timeout: float = 120) -> None:
    """Until each worker owns partitions."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all([_owned(w, topic) for w in workers]):
            return
        await asyncio.sleep(0.5)
    raise AssertionError("the workers never both owned partitions:\n" + "\n".join(w.log_tail(20) for w in workers))


class Outcome(NamedTuple):
    stall: float  # the longest time with no new row, from the fault's start (s)
    recovery: float  # from the fault's start until rows were back to under 5 s behind their log lines (s)
    audit: str  # the audit's output (asserted clean)


async def _write_log(path: Path, records: list[GeneratedRecord], rate: float, written: dict[str, datetime]) -> None:
    """Append ``records`` to the application's log file at ``rate`` lines a second: Singer ships
    them. ``written`` gets the time each event's line was first written (UTC, as the rows')."""
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    done = 0
    with path.open("ab") as out:
        while done < len(records):
            due = min(len(records), int((time.monotonic() - started) * rate) + 1)
            if due > done:
                out.write(b"".join(r.value + b"\n" for r in records[done:due]))
                out.flush()
                now = datetime.now(UTC).replace(tzinfo=None)
                for r in records[done:due]:
                    if r.event_id is not None:
                        written.setdefault(r.event_id, now)
                done = due
            await asyncio.sleep(0.05)


async def _caught_up(pipeline: Pipeline, written: dict[str, datetime], since: datetime) -> float:
    """Seconds from ``since`` to the last row that arrived 5 s or more after its line was
    written to the log: when the pipeline was back to under 5 s behind, end to end."""
    late = since
    for table in ("pins", "repins", "likes", "comments", "logins"):
        rows = await pipeline.sql(f"SELECT event_id, ingested_at FROM {table} WHERE ingested_at >= %s", (since,))
        for event_id, at in rows:
            line_at = written.get(event_id)
            if line_at is not None and (at - line_at).total_seconds() >= 5:
                late = max(late, at)
    return (late - since).total_seconds()


def _report(what: str, outcome: Outcome) -> None:
    """One line of results per scenario (``make chaos`` prints them; docs/reliability.md keeps them)."""
    stall, recovery = outcome.stall, outcome.recovery
    print(f"{what}: longest time with no new row {stall:.1f} s; back under 5 s behind after {recovery:.1f} s")


async def _under_load(
    pipeline: Pipeline,
    fault: object,
    seed: int,
    count: int = 15_000,
    workers: list[WorkerProcess] | None = None,
    archivers: list[WorkerProcess] | None = None,
) -> Outcome:
    """Singer ships ``count`` events that the test appends to a log file at :data:`RATE`, two
    workers (``workers``, else two on this host) and archivers (else one) take them, while
    ``await fault()`` runs (after both workers own partitions). Returns the longest time with no
    new row and the time until rows were under 5 s behind their log lines again, both from the
    fault's start, and the audit's output (asserted clean: every table, every rollup, every bad
    input dead-lettered, and the archive with every offset once)."""
    gen = TrafficGenerator(GeneratorConfig(seed=seed, duplicate_ratio=0.03, malformed_ratio=0.01), GeoLocator())
    records = [next(gen) for _ in range(count)]
    truth = pipeline.tmp / "truth.json"
    gen.truth.write(truth)
    topic = pipeline.settings.kafka.events_topic
    await pipeline.create_bucket()
    # The topics first: a group that joins before its topic exists waits for a metadata refresh.
    await ensure_topics(pipeline.settings.kafka)
    workers = workers or [pipeline.worker(0), pipeline.worker(1)]
    archivers = archivers or [pipeline.archiver()]
    singer = pipeline.singer()
    for w in (*workers, *archivers, singer):
        w.start()
    for w in (*workers, *archivers, singer):
        await w.wait_ready(180)
    written: dict[str, datetime] = {}
    writing = asyncio.create_task(_write_log(pipeline.logs / "app.log", records, RATE, written))
    try:
        await _wait_for_partitions(workers, topic)
        await asyncio.sleep(4)
        started = datetime.now(UTC).replace(tzinfo=None)
        await fault()  # type: ignore[operator]
    finally:
        await writing
    audit = await asyncio.to_thread(pipeline.audit, truth)  # the loop keeps serving any proxy meanwhile
    logs = "\n".join(w.log_tail(30) for w in (*workers, *archivers, singer))
    assert audit.returncode == 0, f"{audit.stdout}{audit.stderr}\n{logs}"
    assert "audit: CLEAN" in audit.stdout
    stall, recovery = await _longest_stall(pipeline, started), await _caught_up(pipeline, written, started)
    return Outcome(stall, recovery, audit.stdout)


async def test_the_leader_killed_mid_stream_and_restarted_loses_and_doubles_nothing(
    cluster: KafkaCluster, on_cluster: Pipeline
) -> None:
    leaders: list[Node] = []

    async def kill_and_restart() -> None:
        leaders.append(leader := await _leader_of(on_cluster, cluster))
        cluster.kill(leader)
        await asyncio.sleep(10)
        cluster.start(leader)
        cluster.wait_healthy(leader)

    outcome = await _under_load(on_cluster, kill_and_restart, seed=71)
    _report(f"leader node {leaders[0].node_id} SIGKILLed", outcome)
    assert outcome.stall < 60, f"rows stopped for {outcome.stall:.1f}s after the leader was killed"


@pytest.mark.chaos
async def test_a_leader_hung_for_two_minutes_stalls_the_pipeline_at_most_30_s(
    cluster: KafkaCluster, on_cluster: Pipeline
) -> None:
    leaders: list[Node] = []

    async def hang() -> None:
        leaders.append(leader := await _leader_of(on_cluster, cluster))
        cluster.hang(leader)  # SIGSTOP: its sockets stay open, nothing answers
        await asyncio.sleep(120)
        cluster.resume(leader)

    outcome = await _under_load(on_cluster, hang, seed=72, count=RATE * 150)
    _report(f"leader node {leaders[0].node_id} hung 120 s", outcome)
    assert outcome.stall <= 30, f"rows stopped for {outcome.stall:.1f}s while the leader hung (Kafka fences it in ~9 s)"


async def test_a_worker_host_cut_off_from_the_brokers_past_its_session_loses_and_doubles_nothing(
    cluster: KafkaCluster, on_cluster: Pipeline
) -> None:
    """A worker stops hearing the brokers for 30 s (three session timeouts) while it still
    reaches the database and S3: a zombie. Its partitions move to the other worker;
    whatever it writes late is fenced (its generation is older) or already written; healed, it
    rejoins."""
    pipeline = on_cluster
    stack = pipeline.settings
    s3_port = int(stack.s3.endpoint_url.rsplit(":", 1)[1]) if stack.s3.endpoint_url else 0
    async with (
        BlackHoleProxy("127.0.0.1", stack.db.port, listen=HOST_SIDE) as db,
        BlackHoleProxy("127.0.0.1", s3_port, listen=HOST_SIDE) as s3,
    ):
        here = pipeline.worker(0)
        there = pipeline.worker(
            1,
            PINAPP_DB__HOST=HOST_SIDE,
            PINAPP_DB__PORT=str(db.port),
            PINAPP_S3__ENDPOINT_URL=f"http://{HOST_SIDE}:{s3.port}",
        )
        topic = pipeline.settings.kafka.events_topic
        every = {f"{topic}:{p}" for p in range(pipeline.settings.kafka.partitions)}
        took_over: list[set[str]] = []

        async def cut_off_and_heal() -> None:
            cluster.cut_from_brokers(_host_of(there))
            await asyncio.sleep(30)
            took_over.append(_owned(here, topic))
            cluster.reconnect_to_brokers(_host_of(there))

        outcome = await _under_load(pipeline, cut_off_and_heal, seed=73, count=RATE * 60, workers=[here, there])
    _report("a worker host cut off from the brokers for 30 s", outcome)
    assert took_over == [every], f"the other worker did not take every partition over: {took_over}"
    assert outcome.stall < 30, f"rows stopped for {outcome.stall:.1f}s while a worker was cut off"


@pytest.mark.chaos
async def test_the_leaders_host_cut_off_for_a_minute_loses_and_doubles_nothing(
    cluster: KafkaCluster, on_cluster: Pipeline
) -> None:
    leaders: list[Node] = []

    async def cut_off() -> None:
        leaders.append(leader := await _leader_of(on_cluster, cluster))
        cluster.cut_off(leader)  # its link down: it runs on, alone
        await asyncio.sleep(60)
        cluster.heal(leader)

    outcome = await _under_load(on_cluster, cut_off, seed=74, count=RATE * 90)
    _report(f"leader node {leaders[0].node_id} cut off 60 s", outcome)
    assert outcome.stall <= 30, f"rows stopped for {outcome.stall:.1f}s while the leader was cut off"


@pytest.mark.chaos
async def test_a_rolling_restart_of_the_brokers_loses_and_doubles_nothing(
    cluster: KafkaCluster, on_cluster: Pipeline
) -> None:
    async def bounce_each() -> None:
        for node in cluster.nodes:
            await asyncio.to_thread(cluster.restart, node)
            await asyncio.sleep(5)  # its replicas catch up before the next goes

    outcome = await _under_load(on_cluster, bounce_each, seed=75, count=RATE * 90)
    _report("rolling restart of the three brokers", outcome)
    assert outcome.stall <= 30, f"rows stopped for {outcome.stall:.1f}s during the brokers' rolling restart"


@pytest.mark.chaos
@pytest.mark.parametrize("membership", ["static", "dynamic"])
async def test_a_rolling_restart_of_the_workers_loses_and_doubles_nothing(
    cluster: KafkaCluster, on_cluster: Pipeline, membership: str
) -> None:
    """Each worker stopped and started in turn; with static membership the group never rebalances."""
    pipeline = on_cluster
    static = membership == "static"
    workers = [
        pipeline.worker(i, **({"PINAPP_WORKER__GROUP_INSTANCE_ID": f"pinapp-worker-{i}"} if static else {}))
        for i in range(2)
    ]
    generations: list[int] = []

    async def restart_each() -> None:
        generations.append(_generation(workers))
        for w in workers:
            w.stop()
            w.start()
            await w.wait_ready(180)
            await asyncio.sleep(5)
        generations.append(_generation(workers))

    outcome = await _under_load(pipeline, restart_each, seed=76, count=RATE * 90, workers=workers)
    rebalances = generations[1] - generations[0]
    _report(f"rolling restart of the workers, {membership} membership ({rebalances} rebalances)", outcome)
    if static:
        assert rebalances == 0, "a static member's restart made the group rebalance"
    assert outcome.stall < pipeline.settings.worker.session_timeout_s + 20, f"rows stopped for {outcome.stall:.1f}s"


async def _until(check: object, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if check():  # type: ignore[operator]
                return
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _sink_states(worker: WorkerProcess) -> tuple[int, dict[str, str]]:
    """``/health``'s status and each sink's state."""
    status, doc = worker.health()
    return status, {name: sink["state"] for name, sink in doc.get("sinks", {}).items()}


@pytest.mark.chaos
async def test_a_database_restart_under_load_loses_and_doubles_nothing(
    cluster: KafkaCluster, on_cluster: Pipeline
) -> None:
    """MariaDB stopped for 20 s, then started again: the workers stall and retry, their
    ``/health`` names the database (not Kafka) as the sink that is down, and they catch up."""
    pipeline = on_cluster
    workers = [pipeline.worker(0), pipeline.worker(1)]
    mariadb = MariaDBService(pipeline.settings)
    during: list[tuple[int, dict[str, str]]] = []

    async def restart_the_database() -> None:
        assert mariadb.process.stop(), "the test database should have been running"
        try:
            await _until(lambda: all(_sink_states(w)[0] == 503 for w in workers), "/health to report the outage")
            await asyncio.sleep(20)
            during.extend(_sink_states(w) for w in workers)
        finally:
            await asyncio.to_thread(Stack(pipeline.settings).up)  # the database; the rest is running
        await _until(lambda: all(_sink_states(w)[0] == 200 for w in workers), "the sinks to recover", 120)

    outcome = await _under_load(pipeline, restart_the_database, seed=78, count=RATE * 60, workers=workers)
    _report("the database restarted (down 20 s)", outcome)
    for status, sinks in during:
        assert status == 503 and sinks.get("singlestore") == "retrying", sinks
        assert sinks.get("kafka") != "retrying" and sinks.get("brokers") == "ok", f"reported as Kafka's: {sinks}"
    assert outcome.stall < 20 + 60, f"rows stopped for {outcome.stall:.1f}s after the database came back"


@pytest.mark.chaos
async def test_s3_hanging_under_load_pauses_the_archive_and_loses_nothing(
    cluster: KafkaCluster, on_cluster: Pipeline
) -> None:
    """The S3 server stops answering (connections open, nothing back: the hardest case) until the
    archiver has reported it for 20 s:
    the archiver pauses and retries, ``/health`` names S3, the workers' rows flow on, and the
    archive catches up with every offset once."""
    pipeline = on_cluster
    stack = pipeline.settings
    s3_port = int(stack.s3.endpoint_url.rsplit(":", 1)[1]) if stack.s3.endpoint_url else 0
    async with BlackHoleProxy("127.0.0.1", s3_port, listen=HOST_SIDE) as s3:
        # Cuts every 5 s, so an upload meets the hang at once, and gives up on it after 15 s.
        archiver = pipeline.archiver(
            0,
            PINAPP_S3__ENDPOINT_URL=f"http://{HOST_SIDE}:{s3.port}",
            PINAPP_ARCHIVE__MAX_AGE_S="5",
            PINAPP_ARCHIVE__REQUEST_TIMEOUT_S="15",
        )
        during: list[tuple[int, dict[str, str]]] = []

        async def hang_s3() -> None:
            s3.pause()
            try:
                await _until(lambda: _sink_states(archiver)[0] == 503, "the archiver's /health to report S3", 90)
                await asyncio.sleep(20)
                during.append(_sink_states(archiver))
            finally:
                s3.resume()
            await _until(lambda: _sink_states(archiver)[0] == 200, "the archive to recover", 120)

        outcome = await _under_load(pipeline, hang_s3, seed=79, count=RATE * 60, archivers=[archiver])
    _report("S3 hung (reported for 20 s)", outcome)
    assert during and during[0][1].get("s3") == "retrying" and during[0][1].get("brokers") == "ok", during
    assert outcome.stall < 30, f"rows stopped for {outcome.stall:.1f}s though only S3 was down"


def _generation(workers: list[WorkerProcess]) -> int:
    """The newest group generation any worker joined."""
    return max((g for w in workers for g in w.generations()), default=0)


@pytest.mark.chaos
async def test_an_archiver_cut_off_while_it_still_reaches_s3_is_fenced_by_the_next_owner(
    cluster: KafkaCluster, on_cluster: Pipeline
) -> None:
    """Two archivers. One's host stops hearing the brokers while its upload to S3 hangs; the
    other archiver takes its partitions over and cuts them. Then the upload goes through, late:
    its intent is refused (an S3 conditional write), and the archive still has every offset once."""
    pipeline = on_cluster
    stack = pipeline.settings
    s3_port = int(stack.s3.endpoint_url.rsplit(":", 1)[1]) if stack.s3.endpoint_url else 0
    async with BlackHoleProxy("127.0.0.1", s3_port, listen=HOST_SIDE) as s3:
        here = pipeline.archiver(0)
        there = pipeline.archiver(1, PINAPP_S3__ENDPOINT_URL=f"http://{HOST_SIDE}:{s3.port}")

        async def cut_off_mid_upload() -> None:
            s3.pause()  # its next upload hangs, unanswered
            cluster.cut_from_brokers(_host_of(there))
            await asyncio.sleep(3 * pipeline.settings.worker.session_timeout_s)  # taken over, re-cut
            s3.resume()  # the zombie's upload goes through now
            await asyncio.sleep(10)
            cluster.reconnect_to_brokers(_host_of(there))

        outcome = await _under_load(pipeline, cut_off_mid_upload, seed=77, count=RATE * 60, archivers=[here, there])
    _report("an archiver cut off mid-upload", outcome)
    refused = there.log_path.read_text(errors="replace").count("is in S3 already")
    print(f"an archiver cut off mid-upload: {refused} late cut(s) refused by the new owner's intents")
    assert refused, "the cut-off archiver's late upload was never refused:\n" + there.log_tail(40)
