"""OverlappedBatches: batch N+1 is prepared while batch N commits, and nothing is acked early.

The batcher here is a recorder with the three methods the overlap calls; the real
EngagementStages' rules are tests/unit/engagement/test_stages.py, its stages on the real stack
tests/integration/test_pipeline.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pinapp.engagement.overlap import OverlappedBatches


@dataclass
class _Msg:
    partition: int
    offset: int
    event_id: str


@dataclass
class _Prepared:
    batch: Sequence[_Msg]
    accepted: list[Any]


@dataclass
class _Accepted:
    source: _Msg
    event: Any


@dataclass
class _Event:
    event_id: str


@dataclass
class Recorder:
    """Logs prepare/commit starts and ends; a commit waits for its gate to open."""

    log: list[str] = field(default_factory=list)
    gates: dict[int, asyncio.Event] = field(default_factory=dict)
    in_flight_seen: dict[int, dict[str, tuple[int, int]]] = field(default_factory=dict)
    fail_prepare: set[int] = field(default_factory=set)
    fail_commit: set[int] = field(default_factory=set)

    def gate(self, n: int) -> asyncio.Event:
        return self.gates.setdefault(n, asyncio.Event())

    async def prepare(self, batch: Sequence[_Msg], *, in_flight: Mapping[str, tuple[int, int]]) -> _Prepared:
        n = batch[0].offset
        self.log.append(f"prepare {n}")
        self.in_flight_seen[n] = dict(in_flight)
        if n in self.fail_prepare:
            raise ValueError(f"prepare {n}")
        return _Prepared(batch, [_Accepted(m, _Event(m.event_id)) for m in batch])

    async def commit(self, prepared: _Prepared) -> None:
        n = prepared.batch[0].offset
        self.log.append(f"commit {n}")
        await self.gate(n).wait()
        if n in self.fail_commit:
            raise ValueError(f"commit {n}")
        self.log.append(f"committed {n}")

    async def process_one_by_one(self, batch: Sequence[_Msg]) -> None:
        self.log.append(f"one by one {batch[0].offset}")


def _batch(n: int) -> list[_Msg]:
    return [_Msg(0, n, f"e{n}"), _Msg(0, n + 1, f"e{n + 1}")]


def _overlapped(recorder: Recorder) -> tuple[OverlappedBatches, list[int], list[int]]:
    acked: list[int] = []
    done: list[int] = []
    overlapped = OverlappedBatches(
        recorder,
        lambda b: acked.append(b[0].offset),  # type: ignore[arg-type]
        lambda b: done.append(b[0].offset),
    )
    return overlapped, acked, done


async def test_next_batch_is_prepared_while_one_commits_and_acked_only_once_committed() -> None:
    recorder = Recorder()
    overlapped, acked, done = _overlapped(recorder)
    await overlapped.submit(_batch(0))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert recorder.log == ["prepare 0", "commit 0"]
    submitted = asyncio.ensure_future(overlapped.submit(_batch(10)))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    # batch 10 is prepared while 0 commits, and waits for it before its own commit starts
    assert recorder.log == ["prepare 0", "commit 0", "prepare 10"]
    assert recorder.in_flight_seen[10] == {"e0": (0, 0), "e1": (0, 1)}
    assert acked == [] and not submitted.done()
    recorder.gate(0).set()
    await submitted
    await asyncio.sleep(0)
    assert recorder.log == ["prepare 0", "commit 0", "prepare 10", "committed 0", "commit 10"]
    assert acked == [0] and done == [0]
    recorder.gate(10).set()
    await overlapped.drain()
    assert acked == [0, 10] and done == [0, 10]
    assert recorder.in_flight_seen[0] == {}


async def test_a_committed_batch_is_no_longer_in_flight() -> None:
    """Once committed, a batch's ids are the dedup table's to judge (past the horizon a resend
    is accepted again): the next batch must not see them as in flight, however late it comes."""
    recorder = Recorder()
    overlapped, acked, _ = _overlapped(recorder)
    recorder.gate(0).set()
    await overlapped.submit(_batch(0))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)  # batch 0 commits; nothing else arrives for a while
    assert acked == [0]
    await overlapped.submit(_batch(10))  # type: ignore[arg-type]
    assert recorder.in_flight_seen[10] == {}


async def test_a_failing_commit_is_processed_one_by_one_before_the_next_commit() -> None:
    recorder = Recorder(fail_commit={0})
    overlapped, acked, _ = _overlapped(recorder)
    await overlapped.submit(_batch(0))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    recorder.gate(0).set()
    recorder.gate(10).set()
    await overlapped.submit(_batch(10))  # type: ignore[arg-type]
    await overlapped.drain()
    assert recorder.log == ["prepare 0", "commit 0", "prepare 10", "one by one 0", "commit 10", "committed 10"]
    assert acked == [0, 10]


async def test_a_failing_preparation_waits_for_the_commit_then_goes_one_by_one() -> None:
    recorder = Recorder(fail_prepare={10})
    overlapped, acked, _ = _overlapped(recorder)
    await overlapped.submit(_batch(0))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    recorder.gate(0).set()
    await overlapped.submit(_batch(10))  # type: ignore[arg-type]
    assert recorder.log == ["prepare 0", "commit 0", "prepare 10", "committed 0", "one by one 10"]
    assert acked == [0, 10]


async def test_a_cancelled_commit_is_never_acked() -> None:
    recorder = Recorder()
    overlapped, acked, done = _overlapped(recorder)
    await overlapped.submit(_batch(0))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    await overlapped.cancel()
    assert recorder.log == ["prepare 0", "commit 0"]
    assert acked == [] and done == []
