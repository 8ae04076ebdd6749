"""The archiver's hand-over rules, with an in-memory writer standing in for S3.

What these pin down is coordination, not S3: on revocation everything that can be written is
written and acked; what cannot (S3 failing) is *released* (neither acked nor awaited) before the
deadline; a rewound partition is re-adopted. The same paths run against the real S3 server in
tests/integration/test_archiver.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

from botocore.exceptions import EndpointConnectionError

from config import ArchiveSettings
from pinapp.archive.archiver import Archiver, CutAbandoned
from pinapp.archive.buffer import Delivery
from pinapp.archive.records import ArchivedRecord
from pinapp.archive.writer import Adoption, CutResult


class _Writer:
    """Keeps cuts in memory; can be made to fail like an unreachable endpoint."""

    def __init__(self, pending: list[tuple[int, int, str]] | None = None, archived_to: int | None = None) -> None:
        self.cuts: list[tuple[int, int]] = []
        self.failing = False
        self.pending = pending or []
        self.archived_to = archived_to  # where the cuts before the committed offset end

    async def write_cut(
        self,
        topic: str,
        partition: int,
        records: list[ArchivedRecord],
        fmt: str,
        on_step: Any = None,
        horizon_ms: int | None = None,
        intent_last: int | None = None,
    ) -> CutResult:
        if self.failing:
            raise EndpointConnectionError(endpoint_url="http://s3.invalid")
        self.cuts.append((records[0].offset, records[-1].offset))
        return CutResult([], 1, 0)

    async def adoption(self, topic: str, partition: int, committed: int) -> Adoption:
        return Adoption([p for p in self.pending if p[1] >= committed], self.archived_to)


class _Control:
    def __init__(self, committed: int | None = None, log_start: int = 0) -> None:
        self.paused: set[int] = set()
        self.released: list[int] = []
        self.committed_offset, self.log_start = committed, log_start
        self.refetched: list[int] = []

    def committed(self, topic: str, partition: int) -> int | None:
        return self.committed_offset

    async def refetch(self, topic: str, partition: int, offset: int) -> int:
        self.refetched.append(offset)
        return max(offset, self.log_start)

    async def pause(self, topic: str, partition: int) -> None:
        self.paused.add(partition)

    async def resume(self, topic: str, partition: int) -> None:
        self.paused.discard(partition)

    def release(self, deliveries: Iterable[Delivery]) -> None:
        self.released.extend(d.offset for d in deliveries)  # type: ignore[attr-defined]


class _Delivery:
    def __init__(self, offset: int, acked: list[int]) -> None:
        self.offset, self.acked = offset, acked

    def ack(self) -> None:
        self.acked.append(self.offset)


def _rec(offset: int) -> ArchivedRecord:
    return ArchivedRecord("events", 0, offset, 1_709_251_200_000, b"k", b"{}")


SETTINGS = ArchiveSettings(max_events=4, max_age_s=3600, retry_max_s=0.05, revoke_flush_timeout_s=0.3)


async def test_revocation_writes_and_acks_everything_when_s3_is_fine() -> None:
    writer, control, acked = _Writer(), _Control(), []
    archiver = Archiver(writer, SETTINGS, control)  # type: ignore[arg-type]
    for o in range(6):
        await archiver.add(_rec(o), _Delivery(o, acked))
    await archiver.flush_all()
    assert writer.cuts == [(0, 3), (4, 5)]
    assert acked == list(range(6)) and control.released == []
    assert archiver.buffered == 0


async def test_revocation_with_s3_down_releases_everything_unacked_before_the_deadline() -> None:
    writer, control, acked = _Writer(), _Control(), []
    archiver = Archiver(writer, SETTINGS, control)  # type: ignore[arg-type]
    await archiver.add(_rec(0), _Delivery(0, acked))
    writer.failing = True
    # The agent's write of 1..4 retries in the background while S3 is down.
    agent = asyncio.create_task(_add_all(archiver, range(1, 6), acked))
    await asyncio.sleep(0.2)
    assert control.paused == {0}
    await asyncio.wait_for(archiver.flush_all(), 2)
    await asyncio.wait_for(asyncio.gather(agent, return_exceptions=True), 2)  # it gives up too
    assert acked == []
    assert sorted(control.released) == [0, 1, 2, 3]  # 4 and 5 never reached the buffer: the agent gave up
    assert control.paused == set(), "a given-up partition is resumed for the next owner"


async def _add_all(archiver: Archiver, offsets: range, acked: list[int]) -> None:
    for o in offsets:
        await archiver.add(_rec(o), _Delivery(o, acked))


async def test_a_rewound_partition_is_re_adopted_and_its_old_buffer_released() -> None:
    writer, control, acked = _Writer(pending=[(2, 5, "jsonl.gz")]), _Control(), []
    archiver = Archiver(writer, SETTINGS, control)  # type: ignore[arg-type]
    for o in (6, 7):
        await archiver.add(_rec(o), _Delivery(o, acked))
    for o in range(2, 6):  # the consumer seeks back to the committed offset 2
        await archiver.add(_rec(o), _Delivery(o, acked))
    assert control.released == [6, 7]
    assert writer.cuts == [(2, 5)], "the adopted intent decides the cut, not max_events"
    assert acked == [2, 3, 4, 5]


async def test_memory_is_bounded_across_partitions_by_uploading_the_largest_buffer() -> None:
    writer, control, acked = _Writer(), _Control(), []
    settings = ArchiveSettings(max_events=1000, max_age_s=3600, max_buffered_events=5)
    archiver = Archiver(writer, settings, control)  # type: ignore[arg-type]
    for partition, offsets in ((0, range(4)), (1, range(2))):
        for o in offsets:
            await archiver.add(
                ArchivedRecord("events", partition, o, 1_709_251_200_000, b"k", b"{}"), _Delivery(o, acked)
            )
    assert writer.cuts == [(0, 3)], "6 buffered > 5: partition 0, the largest, went early"
    assert archiver.buffered == 2


async def test_a_batch_cut_short_by_a_rebalance_releases_its_rest_unbuffered_and_unacked() -> None:
    """The agent takes fetched records a batch at a time; a rebalance beginning mid-batch (after
    the hand-over flush) must not buffer the rest, which would then wait for an age cut while
    faust waits for its acks: it is released, for the partition's next owner to read again."""
    writer, control, acked = _Writer(), _Control(), []
    archiver = Archiver(writer, SETTINGS, control)  # type: ignore[arg-type]
    rebalancing = False

    def items() -> Iterable[tuple[ArchivedRecord, Delivery]]:
        nonlocal rebalancing
        for o in range(6):
            if o == 2:
                rebalancing = True  # between two records of the batch
            yield _rec(o), _Delivery(o, acked)

    await archiver.add_all(items(), current=lambda: not rebalancing)
    assert archiver.buffered == 2
    assert control.released == [2, 3, 4, 5]
    await archiver.flush_all()
    assert writer.cuts == [(0, 1)] and acked == [0, 1]


async def test_a_whole_batch_is_added_in_order_while_no_rebalance_begins() -> None:
    writer, control, acked = _Writer(), _Control(), []
    archiver = Archiver(writer, SETTINGS, control)  # type: ignore[arg-type]
    await archiver.add_all(((_rec(o), _Delivery(o, acked)) for o in range(6)), current=lambda: True)
    assert writer.cuts == [(0, 3)] and acked == [0, 1, 2, 3] and archiver.buffered == 2
    assert control.released == []


async def test_a_committed_offset_past_the_archives_end_fetches_the_hole_again() -> None:
    """The archive's cuts end at 99, the commit says 500: 100..499 were never archived."""
    writer, control, acked = _Writer(archived_to=100), _Control(committed=500), []
    archiver = Archiver(writer, SETTINGS, control)  # type: ignore[arg-type]
    for o in (500, 501):  # what the consumer delivered from the commit, before the refetch
        await archiver.add(_rec(o), _Delivery(o, acked))
    assert control.refetched == [100]
    assert control.released == [500, 501] and writer.cuts == []
    for o in range(100, 108):  # the refetch
        await archiver.add(_rec(o), _Delivery(o, acked))
    assert writer.cuts == [(100, 103), (104, 107)] and acked == list(range(100, 108))


async def test_a_hole_retention_deleted_in_part_is_fetched_from_the_log_start_once() -> None:
    writer, control, acked = _Writer(archived_to=100), _Control(committed=500, log_start=300), []
    archiver = Archiver(writer, SETTINGS, control)  # type: ignore[arg-type]
    await archiver.add(_rec(500), _Delivery(500, acked))
    for o in range(300, 304):
        await archiver.add(_rec(o), _Delivery(o, acked))
    assert control.refetched == [100], "the refetch from the log start is not taken for another hole"
    assert writer.cuts == [(300, 303)]


async def test_an_archive_that_ends_at_the_committed_offset_is_adopted_as_it_is() -> None:
    writer, control, acked = _Writer(archived_to=500), _Control(committed=500), []
    archiver = Archiver(writer, SETTINGS, control)  # type: ignore[arg-type]
    for o in range(500, 504):
        await archiver.add(_rec(o), _Delivery(o, acked))
    assert control.refetched == [] and writer.cuts == [(500, 503)]


async def test_a_hole_found_as_the_partition_is_revoked_leaves_no_refetch_pending() -> None:
    writer, acked = _Writer(archived_to=100), []
    control = _Control(committed=500)
    archiver = Archiver(writer, SETTINGS, control)  # type: ignore[arg-type]
    refetch = control.refetch

    async def revoked_meanwhile(topic: str, partition: int, offset: int) -> int:
        await archiver.flush_all()  # the rebalance, while the refetch is under way
        return await refetch(topic, partition, offset)

    control.refetch = revoked_meanwhile  # type: ignore[method-assign]
    with contextlib.suppress(CutAbandoned):
        await archiver.add(_rec(500), _Delivery(500, acked))
    assert control.released == [500]
    control.refetch = refetch  # type: ignore[method-assign]
    control.committed_offset = 500
    writer.archived_to = 500  # the next assignment: the new owner archived the hole meanwhile
    for o in range(500, 504):
        await archiver.add(_rec(o), _Delivery(o, acked))
    assert writer.cuts == [(500, 503)], "nothing of the new assignment is held back"
