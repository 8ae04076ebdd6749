"""The recovery race (faust #596), deterministically, on pinapp's real consumer and fetch loop.

A scripted aiokafka consumer thread stands in for the broker (a fetch returns a batch from the
partition's position, a seek moves it); everything else is faust's and pinapp's own code:
faust's ``getmany``, ``perform_seek``, ``ack`` and commit bookkeeping, pinapp's fetch loop and
commit rule. The scenario is faust's ``on_recovery_completed`` order: the stream partition is
sought to its committed offset *while flow is on* and the fetch loop is still handing over the
batch it fetched before; then ``flow_control.resume()`` clears the stream's queue.

Before the fix (the same loop without seek epochs, guards off) the records handed over after
the seek moved faust's read offset past the ones the seek fetched again, which were then
dropped as already read: in the faust-order case 6 offsets (152-157) were never processed and
the commit stuck at 152, under pinapp's commit rule and under faust's alike.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from faust.types import TP
from prometheus_client import REGISTRY

from pinapp.topology.faust_ext import PinApp, PinConsumer
from pinapp.topology.faust_ext.batches import BatchInbox, FetchedRun
from pinapp.topology.faust_ext.recovery import SeekFirstRecovery

TOPIC = "events-race"
TP0 = TP(TOPIC, 0)
END = 400
COMMITTED = 100
FETCH = 100  # records per fetch


class ScriptedThread:
    """aiokafka's consumer thread, scripted: one partition whose fetches return the next
    ``FETCH`` records from its position, and whose seeks move that position."""

    def __init__(self, consumer: PinConsumer) -> None:
        self.consumer = consumer
        self.position = COMMITTED
        self.seek_gate = asyncio.Event()  # clear: the committed offsets' request is in flight
        self.seek_gate.set()
        self.assigned = {TP0}

    async def _round_trip(self) -> None:
        for _ in range(3):
            await asyncio.sleep(0)

    async def getmany(self, active_partitions: Any, timeout: float) -> Any:
        await self._round_trip()
        start, self.position = self.position, min(END, self.position + FETCH)
        if start >= END:
            await asyncio.sleep(0.01)
            return {}
        return {
            TP0: [
                ConsumerRecord(TOPIC, 0, off, 0, 0, b"k", b"v", None, 1, 1, ()) for off in range(start, self.position)
            ]
        }

    async def seek_to_committed(self) -> dict[TP, int]:
        await self.seek_gate.wait()
        committed = self.consumer._committed_offset.get(TP0) or 0
        self.position = committed
        return {TP0: committed}

    def seek(self, partition: TP, offset: int) -> None:
        self.position = offset

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    def highwater(self, tp: TP) -> int:
        return END

    async def earliest_offsets(self, *partitions: TP) -> dict[TP, int]:
        return {tp: 0 for tp in partitions}

    def _ensure_consumer(self) -> Any:  # the aiokafka consumer, for pinapp's own seeks
        return self

    async def call_thread(self, fn: Any) -> Any:
        await self._round_trip()
        return await fn()


class ScriptedConsumer(PinConsumer):
    """pinapp's consumer (faust's, with pinapp's fetch loop and commit rule) on the script."""

    def __init__(self, app: PinApp, queue: asyncio.Queue[Any]) -> None:
        super().__init__(
            app.transport, callback=self._on_message, on_partitions_revoked=_noop, on_partitions_assigned=_noop
        )
        self.queue = queue
        self.script = ScriptedThread(self)
        self._thread.thread_loop.close()  # the real consumer thread's loop: never started here
        self._thread = self.script  # type: ignore[assignment]
        self.commits: list[int] = []

    async def _on_message(self, message: Any) -> None:  # what faust's conductor does
        self.track_message(message)
        await self.queue.put(message)

    def commit_now(self) -> None:
        """faust's commit bookkeeping, without a broker."""
        for tp, offset in self._filter_committable_offsets({TP0}).items():
            self._committed_offset[tp] = offset
            self.commits.append(offset)


async def _noop(*args: Any) -> None:
    return None


class _Fetcher:
    def __init__(self) -> None:
        self._stopped = asyncio.Event()


async def _run_race(*, stop_flow_first: bool, in_runs: bool = False) -> tuple[ScriptedConsumer, set[int]]:
    """The scenario; ``in_runs``: the topic is read in runs (the batch hand-off of
    pinapp.topology.faust_ext.batches, through a small inbox so that its hand-off blocks too)."""
    app = PinApp("race-test", broker="kafka://127.0.0.1:1", commit_guards=False)
    app.topics._acking_topics.add(TOPIC)
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=8)  # a stream buffer: the hand-off blocks
    consumer = ScriptedConsumer(app, queue)
    consumer._committed_offset[TP0] = COMMITTED
    consumer._read_offset[TP0] = COMMITTED
    consumer.resume_partitions({TP0})
    consumer.resume_flow()
    processed: set[int] = set()
    inbox = BatchInbox(TOPIC, app=app, consumer=consumer, max_events=16, run_events=8)
    if in_runs:
        consumer.batch_inboxes[TOPIC] = inbox
        app.flow_control.resume()  # a worker's is resumed after recovery; the inbox drops runs until then

    async def take_batches() -> None:  # the agent, in batches: slower than the hand-off
        while True:
            batch = await inbox.take(8, 0.001)
            for _ in range(4):
                await asyncio.sleep(0)
            processed.update(m.offset for m in batch)
            for message in batch:
                consumer.ack(message)

    async def stream() -> None:  # the agent: takes records one by one, slower than the hand-off
        while True:
            message = await queue.get()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            processed.add(message.offset)
            consumer.ack(message)

    fetcher = _Fetcher()
    drain = asyncio.create_task(consumer._drain_messages(fetcher))
    agent = asyncio.create_task(take_batches() if in_runs else stream())
    try:
        for _ in range(10_000):
            if len(processed) >= 20 or drain.done():
                break
            await asyncio.sleep(0)
        assert not drain.done(), drain.exception() or "the fetch loop ended"
        # faust's on_recovery_completed: resume the stream partition, seek it, clear the queues.
        if stop_flow_first:
            consumer.stop_flow()  # pinapp's SeekFirstRecovery
        consumer.resume_partitions({TP0})
        consumer.script.seek_gate.clear()
        seek = asyncio.create_task(consumer.perform_seek())
        for _ in range(60):  # the fetch loop runs on while the seek waits
            await asyncio.sleep(0)
        consumer.script.seek_gate.set()
        await seek
        while not queue.empty():  # app.flow_control.resume() clears every stream queue
            queue.get_nowait()
        inbox.clear()
        consumer.resume_flow()
        for _ in range(200):
            await asyncio.sleep(0.005)
            consumer.commit_now()
            if consumer.commits and consumer.commits[-1] == END:
                break
    finally:
        fetcher._stopped.set()
        agent.cancel()
        drain.cancel()
        await asyncio.gather(agent, drain, return_exceptions=True)
    return consumer, processed


@pytest.mark.parametrize("in_runs", [False, True], ids=["per-record", "in-runs"])
@pytest.mark.parametrize("stop_flow_first", [False, True], ids=["faust-order", "seek-first-order"])
async def test_a_seek_under_a_running_batch_loses_nothing(stop_flow_first: bool, in_runs: bool) -> None:
    consumer, processed = await _run_race(stop_flow_first=stop_flow_first, in_runs=in_runs)
    missing = sorted(set(range(COMMITTED, END)) - processed)
    assert not missing, f"{len(missing)} offsets never processed: {missing[:10]}..."
    assert consumer.commits[-1] == END, f"commit stuck at {consumer.commits[-1:]}"


@pytest.mark.parametrize("in_runs", [False, True], ids=["per-record", "in-runs"])
async def test_the_race_is_there_to_catch(in_runs: bool) -> None:
    """The scenario really overlaps a seek with a batch in hand (else the test above proves nothing)."""
    consumer, _ = await _run_race(stop_flow_first=False, in_runs=in_runs)
    assert consumer.stale_dropped > 0


async def test_seek_first_recovery_stops_flow_before_faust_seeks(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []

    async def faust_on_recovery_completed(self: Any, generation_id: int = 0) -> None:
        seen.append(self.app.consumer.flow_active)

    monkeypatch.setattr("faust.tables.recovery.Recovery.on_recovery_completed", faust_on_recovery_completed)
    app = PinApp("race-test-recovery", broker="kafka://127.0.0.1:1")
    app.consumer._thread.thread_loop.close()
    app.consumer.resume_flow()
    recovery = app.tables.recovery
    assert isinstance(recovery, SeekFirstRecovery)
    await recovery.on_recovery_completed(0)
    assert seen == [False]


class _Acked:
    def __init__(self, offset: int) -> None:
        self.tp, self.offset, self.topic, self.acked = TP0, offset, TOPIC, False


async def test_a_partition_never_committed_commits_from_its_log_start_only() -> None:
    """faust makes no head check for a partition committed at 0 or never: pinapp's consumer
    starts its commit at the log start (learned after the seek), so offset 0 unacked holds it."""
    app = PinApp("race-test-base", broker="kafka://127.0.0.1:1", commit_guards=False)
    app.topics._acking_topics.add(TOPIC)
    consumer = ScriptedConsumer(app, asyncio.Queue())
    consumer.script.position = 0
    await consumer.perform_seek()  # nothing committed: the log start (0) becomes the base
    assert consumer.committed(TP0) is None and consumer.commit_base(TP0) == 0
    for offset in (1, 2):
        consumer.ack(_Acked(offset))  # type: ignore[arg-type]
    consumer.commit_now()
    assert consumer.commits == []  # faust's own rule would commit 3 here
    consumer.ack(_Acked(0))  # type: ignore[arg-type]
    consumer.commit_now()
    assert consumer.commits == [3]


async def test_a_partition_without_a_commit_in_fausts_view_starts_where_it_was_first_read() -> None:
    """aiokafka starts at the group's commit when another worker made one after faust's seek
    read none: the first offset handed over is then the base, not the log start."""
    app = PinApp("race-test-first", broker="kafka://127.0.0.1:1", commit_guards=False)
    app.topics._acking_topics.add(TOPIC)
    consumer = ScriptedConsumer(app, asyncio.Queue())
    await consumer.perform_seek()
    consumer._first_delivered[TP0] = 3106
    for offset in (3106, 3107):
        consumer.ack(_Acked(offset))  # type: ignore[arg-type]
    consumer.commit_now()
    assert consumer.commits == [3108]


async def test_acks_after_a_partition_was_revoked_commit_nothing_and_raise_no_hole() -> None:
    """faust clears a revoked partition's bookkeeping, then its streams ack what they still
    held: a commit from those acks, or a hole measured from a base faust forgot, is wrong.
    (Found by make soak: the hole guard fired every 8 s for a partition another worker owned.)"""
    app = PinApp("race-test-revoked", broker="kafka://127.0.0.1:1")
    app.topics._acking_topics.add(TOPIC)
    consumer = ScriptedConsumer(app, asyncio.Queue())
    consumer.commit_interval = 0.0  # any hole would be overdue at once
    holes_before = _holes_reported()
    await consumer.perform_seek()
    consumer.script.assigned = set()
    await consumer.on_partitions_revoked({TP0})
    for offset in (3760, 3761):
        consumer.ack(_Acked(offset))  # type: ignore[arg-type]
    for _ in range(3):
        consumer.commit_now()
    assert consumer.commits == []
    assert not consumer._acked.get(TP0)
    assert _holes_reported() == holes_before
    await consumer.refetch(TP0, 3760)  # a refetch racing the revocation is a no-op


def _holes_reported() -> float:
    return REGISTRY.get_sample_value("pinapp_commit_holes_total", {"topic": TOPIC, "partition": "0"}) or 0.0


def _records(consumer: ScriptedConsumer, offsets: range) -> list[Any]:
    return [
        consumer._to_message(TP0, ConsumerRecord(TOPIC, 0, off, 0, 0, b"k", b"v", None, 1, 1, ())) for off in offsets
    ]


async def test_a_run_sought_before_its_hand_off_is_dropped_and_fetched_again() -> None:
    """A partition sought while its run waited for the end of the fetch: the run is not handed
    over (the seek owns the read offset) and the partition is fetched again from the lower of
    the run's first record and where the seek left it."""
    app = PinApp("race-test-run", broker="kafka://127.0.0.1:1")
    consumer = ScriptedConsumer(app, asyncio.Queue())
    inbox = BatchInbox(TOPIC, app=app, consumer=consumer, max_events=100, run_events=10)
    consumer.batch_inboxes[TOPIC] = inbox
    consumer._fetched_at = (consumer.seek_epoch, consumer.tp_seek_epochs.copy())
    runs = {TP0: FetchedRun(TP0, _records(consumer, range(150, 158)), 0)}
    await consumer.seek(TP0, 140)  # meanwhile: faust's read offset and aiokafka's position go to 140
    await consumer._flush_run(runs, TP0)
    assert len(inbox) == 0 and consumer.stale_dropped == 8
    assert consumer.script.position == 140 and consumer._read_offset[TP0] == 140

    consumer._fetched_at = (consumer.seek_epoch, consumer.tp_seek_epochs.copy())
    runs = {TP0: FetchedRun(TP0, _records(consumer, range(140, 148)), 0)}
    await consumer._flush_run(runs, TP0)
    assert len(inbox) == 1 and inbox.events == 8


async def test_the_inbox_hands_over_runs_in_batches_and_drops_those_of_an_older_generation() -> None:
    app = PinApp("race-test-inbox", broker="kafka://127.0.0.1:1")
    consumer = ScriptedConsumer(app, asyncio.Queue())
    app.flow_control.resume()
    inbox = BatchInbox(TOPIC, app=app, consumer=consumer, max_events=20, run_events=10)
    inbox.put_nowait(FetchedRun(TP0, _records(consumer, range(10)), app.consumer_generation_id - 1))
    inbox.put_nowait(FetchedRun(TP0, _records(consumer, range(10, 20)), app.consumer_generation_id))
    assert inbox.full()
    inbox.put_nowait(FetchedRun(TP0, _records(consumer, range(20, 25)), app.consumer_generation_id))
    batch = await inbox.take(12, within=0.01)  # the older run is dropped, unacked and untracked
    assert [m.offset for m in batch] == list(range(10, 22))
    # Acked whole, the batch is in flight by the last record of each run it took (19, and 21
    # of the split run) while all are unacked.
    assert [m.offset for m in batch.in_flight] == [19, 21] and set(consumer.unacked) == set(batch.in_flight)
    assert not inbox.full() and inbox.events == 3
    batch = await inbox.take(12, within=0.01, per_record=True)  # waits `within`, hands over what it has
    assert [m.offset for m in batch] == [22, 23, 24] and inbox.events == 0
    assert all(m.tracked for m in batch) and set(batch) <= set(consumer.unacked)  # an agent acking each record
    app.flow_control.suspend()  # a rebalance: what is taken now is fetched again after it
    inbox.put_nowait(FetchedRun(TP0, _records(consumer, range(25, 30)), app.consumer_generation_id))
    waiting = asyncio.ensure_future(inbox.take(12, within=0.01))
    await asyncio.sleep(0.05)
    assert not waiting.done() and inbox.events == 0
    waiting.cancel()


def test_a_batch_acked_whole_is_booked_as_faust_books_each_ack() -> None:
    """ack_batch books what faust's per-record ack books (and nothing below the committed
    offset or twice), takes the batch's in-flight records out of the unacked set, and counts
    the acks toward faust's commit_every."""
    app = PinApp("race-test-ack-batch", broker="kafka://127.0.0.1:1")
    app.topics.acks_enabled_for = lambda topic: True  # type: ignore[method-assign]
    per_record, whole = ScriptedConsumer(app, asyncio.Queue()), ScriptedConsumer(app, asyncio.Queue())
    results = []
    for consumer in (per_record, whole):
        consumer._committed_offset[TP0] = 5
        messages = _records(consumer, range(3, 12)) + _records(consumer, range(8, 10))  # 8, 9 twice
        messages[-1].acked = True  # acked already: not booked again
        consumer.unacked.update([messages[4], messages[-3]])
        if consumer is per_record:
            for message in messages:
                consumer.ack(message)
        else:
            consumer.ack_batch(messages, [messages[4], messages[-3]])
        results.append(
            (
                sorted(consumer._acked[TP0]),
                sorted(consumer._acked_index[TP0]),
                consumer._n_acked,
                all(m.acked for m in messages),
            )
        )
        assert not consumer.unacked
    assert results[0] == results[1] == ([5, 6, 7, 8, 9, 10, 11], [5, 6, 7, 8, 9, 10, 11], 7, True)
