"""The archive's write path, its zombie fence and the verifier on the real S3 API server.

A crash between any two puts of a cut must leave an archive that, once the next owner re-cuts
at the adopted intents, holds every offset exactly once; so must an archiver that lost its
partition and still writes (a zombie). The verifier must catch what secor #600 produced (a
re-cut beside a stale object) and any gap.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable

import orjson
import pytest

from config import ArchiveSettings, Settings
from pinapp.adapters.s3 import s3_client
from pinapp.archive.archiver import Archiver
from pinapp.archive.buffer import Delivery
from pinapp.archive.layout import ObjectKey
from pinapp.archive.records import ArchivedRecord
from pinapp.archive.verify import verify_topic
from pinapp.archive.writer import Adoption, ArchiveConflict, ArchiveWriter, CutConflict
from pinapp.errors import ConfigError

HOUR_MS = 3_600_000
T0 = 1_704_106_800_000  # 2024-01-01T11:00:00Z


def _records(partition: int, first: int, count: int) -> list[ArchivedRecord]:
    """Consecutive offsets whose event times walk across hours (and one has no usable ts)."""
    out = []
    for offset in range(first, first + count):
        ts: object = T0 + offset * HOUR_MS // 40  # ~40 records an hour
        if offset % 17 == 0:
            ts = (T0 + offset * HOUR_MS // 40) // 1000  # seconds, not ms
        value = orjson.dumps({"event_id": f"e{offset}", "ts": ts}) if offset % 23 else b"\xffnot json"
        out.append(ArchivedRecord("events", partition, offset, T0, f"k{offset}".encode(), value))
    return out


@pytest.fixture
async def s3_bucket(test_stack: Settings) -> AsyncIterator[tuple[object, str]]:
    bucket = f"pinapp-it-{uuid.uuid4().hex[:10]}"
    async with s3_client(test_stack.s3) as s3:
        await s3.create_bucket(Bucket=bucket)
        yield s3, bucket


async def test_a_cut_interrupted_anywhere_is_adopted_and_rewritten_without_duplicates(s3_bucket: tuple) -> None:
    s3, bucket = s3_bucket
    writer = ArchiveWriter(s3, bucket, prefix="raw")
    await writer.check_bucket()
    done = (await writer.write_cut("events", 0, _records(0, 0, 100))).keys  # committed: 0..99
    assert len({k.folder for k in done}) >= 3  # one cut, several hour folders

    # A crash mid-cut: the intent and only the first hour's object of 100..179 made it.
    interrupted = _records(0, 100, 80)
    real_put = s3.put_object
    puts = 0

    async def crash_after_two_puts(**kwargs: object) -> object:
        nonlocal puts
        puts += 1
        if puts > 2:
            raise ConnectionError("worker killed")
        return await real_put(**kwargs)

    s3.put_object = crash_after_two_puts
    with pytest.raises(ConnectionError):
        await writer.write_cut("events", 0, interrupted)
    s3.put_object = real_put

    # The next owner starts at the committed offset, adopts the cut and re-cuts exactly there.
    assert (await writer.adoption("events", 0, committed=100)).pending == [(100, 179, "jsonl.gz")]
    await writer.write_cut("events", 0, interrupted)
    await writer.write_cut("events", 0, _records(0, 180, 20))
    report = await verify_topic(s3, bucket, "raw", "events", start={0: 0}, committed={0: 200})
    assert report.ok, (report.gaps, report.duplicates)
    assert report.records == 200
    assert await writer.forget_cuts("events", 0, committed=200) == 2  # the latest stays: the archive's end
    assert await writer.adoption("events", 0, committed=200) == Adoption([], archived_to=200)


async def test_verify_reports_a_secor_600_re_cut_and_a_gap(s3_bucket: tuple) -> None:
    s3, bucket = s3_bucket
    writer = ArchiveWriter(s3, bucket)
    await writer.write_cut("events", 1, _records(1, 0, 60))
    # secor #600: a retry cut differently (0..49) and landed beside the first object (S3 without
    # conditional writes lets it; with them the intent refuses it, see the zombie tests below).
    await ArchiveWriter(s3, bucket, conditional_writes=False).write_cut("events", 1, _records(1, 0, 50))
    # and partition 2 lost 10..19 (never archived).
    await writer.write_cut("events", 2, _records(2, 0, 10))
    await writer.write_cut("events", 2, _records(2, 20, 10))
    report = await verify_topic(s3, bucket, "", "events", start={1: 0, 2: 0}, committed={1: 60, 2: 30})
    assert not report.ok
    assert report.duplicates == {1: [(0, 49)]}
    assert report.gaps == {2: [(10, 19)]}


async def test_a_missing_bucket_is_a_clear_error(test_stack: Settings) -> None:
    async with s3_client(test_stack.s3) as s3:
        with pytest.raises(ConfigError, match="does not exist"):
            await ArchiveWriter(s3, "no-such-bucket-pinapp").check_bucket()


async def _objects(s3: object, bucket: str) -> set[tuple[int, int]]:
    """The offset ranges of the archive's objects."""
    page = await s3.list_objects_v2(Bucket=bucket, Prefix="raw/events/")  # type: ignore[attr-defined]
    return {(k.first, k.last) for o in page.get("Contents", []) if (k := ObjectKey.parse(o["Key"]))}


@pytest.mark.parametrize("fenced", [True, False], ids=["fenced", "unfenced"])
async def test_a_zombie_writers_cut_is_refused_once_the_new_owner_cut_there(s3_bucket: tuple, fenced: bool) -> None:
    s3, bucket = s3_bucket
    new_owner = ArchiveWriter(s3, bucket, prefix="raw", conditional_writes=fenced)
    zombie = ArchiveWriter(s3, bucket, prefix="raw", conditional_writes=fenced)
    await new_owner.write_cut("events", 0, _records(0, 0, 50))  # took over at the committed offset 0
    if fenced:
        with pytest.raises(CutConflict) as refused:
            await zombie.write_cut("events", 0, _records(0, 0, 80))  # its buffer, flushed late
        assert (refused.value.first, refused.value.last, refused.value.fmt) == (0, 49, "jsonl.gz")
        # The same cut again (a crash's re-cut, or the zombie cutting where the intent says) is accepted.
        await zombie.write_cut("events", 0, _records(0, 0, 50))
    else:
        await zombie.write_cut("events", 0, _records(0, 0, 80))
    await new_owner.write_cut("events", 0, _records(0, 50, 30))
    report = await verify_topic(s3, bucket, "raw", "events", start={0: 0}, committed={0: 80})
    if fenced:
        assert report.ok, (report.gaps, report.duplicates)
        assert await _objects(s3, bucket) == {(0, 49), (50, 79)}
    else:  # what the fence prevents: the zombie's object beside the new owner's
        assert report.duplicates == {0: [(0, 79)]}


async def test_an_object_with_other_records_under_a_cuts_name_is_never_overwritten(s3_bucket: tuple) -> None:
    s3, bucket = s3_bucket
    writer = ArchiveWriter(s3, bucket)
    records = _records(0, 0, 10)
    key = ObjectKey("events", 0, 0, 9, "dt=2024-01-01/hr=11")
    await s3.put_object(Bucket=bucket, Key=str(key), Body=b"not these records")
    with pytest.raises(ArchiveConflict, match="holds other records"):
        await writer.write_cut("events", 0, records)
    body = await (await s3.get_object(Bucket=bucket, Key=str(key)))["Body"].read()
    assert body == b"not these records"


class _Partition:
    """The consumer's side for one archiver (one partition, nothing committed yet)."""

    def __init__(self) -> None:
        self.released: list[int] = []

    async def pause(self, topic: str, partition: int) -> None: ...
    async def resume(self, topic: str, partition: int) -> None: ...

    def highwater(self, topic: str, partition: int) -> int | None:
        return None

    def committed(self, topic: str, partition: int) -> int | None:
        return None

    def assigned(self) -> Iterable[tuple[str, int]]:
        return [("events", 0)]

    def partition_count(self, topic: str) -> int | None:
        return 1

    def release(self, deliveries: Iterable[Delivery]) -> None:
        self.released.extend(d.offset for d in deliveries)  # type: ignore[attr-defined]


class _Ack:
    def __init__(self, offset: int, acked: list[int]) -> None:
        self.offset, self.acked = offset, acked

    def ack(self) -> None:
        self.acked.append(self.offset)


@pytest.mark.parametrize("fenced", [True, False], ids=["fenced", "unfenced"])
async def test_a_zombie_archiver_and_the_new_owner_interleaved_archive_each_offset_once(
    s3_bucket: tuple, fenced: bool
) -> None:
    """The order a cut-off archiver and its successor can write in, made explicit (moto checks a
    condition without a lock, so the fence is proven by ordering, never by racing two writers)."""
    s3, bucket = s3_bucket
    settings = ArchiveSettings(max_events=50, max_age_s=3600, retry_max_s=0.05, conditional_writes=fenced)
    zombie_control, owner_control = _Partition(), _Partition()
    zombie = Archiver(ArchiveWriter(s3, bucket, "raw", conditional_writes=fenced), settings, zombie_control)
    owner = Archiver(ArchiveWriter(s3, bucket, "raw", conditional_writes=fenced), settings, owner_control)
    zombie_acks: list[int] = []
    owner_acks: list[int] = []
    records = _records(0, 0, 100)
    # The zombie buffered 0..29 when it was cut off from the group; the partition moved.
    for r in records[:30]:
        await zombie.add(r, _Ack(r.offset, zombie_acks))
    # The new owner reads from the committed offset (0) and cuts 0..49.
    for r in records[:50]:
        await owner.add(r, _Ack(r.offset, owner_acks))
    # The zombie, still reaching S3, flushes what it holds: 0..29 is refused (the intent at 0 says
    # 0..49), and it lacks 30..49 to cut there, so it writes nothing and acks nothing.
    await zombie.flush_all()
    # The new owner goes on.
    for r in records[50:]:
        await owner.add(r, _Ack(r.offset, owner_acks))
    await owner.flush_all()
    report = await verify_topic(s3, bucket, "raw", "events", start={0: 0}, committed={0: 100})
    if fenced:
        assert report.ok, (report.gaps, report.duplicates)
        assert zombie_acks == [] and zombie_control.released == list(range(30))
        assert owner_acks == list(range(100))
        assert await _objects(s3, bucket) == {(0, 49), (50, 99)}
    else:  # without the fence the zombie's cut lands beside the new owner's
        assert report.duplicates == {0: [(0, 29)]}


async def test_a_zombie_that_cuts_first_makes_the_new_owner_cut_where_it_did(s3_bucket: tuple) -> None:
    s3, bucket = s3_bucket
    settings = ArchiveSettings(max_events=60, max_age_s=3600, retry_max_s=0.05)
    zombie = Archiver(ArchiveWriter(s3, bucket, "raw"), settings, _Partition())
    owner = Archiver(ArchiveWriter(s3, bucket, "raw"), settings, _Partition())
    acks: list[int] = []
    records = _records(0, 0, 100)
    for r in records[:50]:  # the new owner buffers 0..49 below its threshold (60) ...
        await owner.add(r, _Ack(r.offset, acks))
    for r in records[:30]:  # ... while the zombie flushes 0..29 first
        await zombie.add(r, _Ack(r.offset, []))
    await zombie.flush_all()
    for r in records[50:]:  # the owner's cut 0..59 is refused: it cuts 0..29, then goes on
        await owner.add(r, _Ack(r.offset, acks))
    await owner.flush_all()
    report = await verify_topic(s3, bucket, "raw", "events", start={0: 0}, committed={0: 100})
    assert report.ok, (report.gaps, report.duplicates)
    assert acks == list(range(100))
    assert await _objects(s3, bucket) == {(0, 29), (30, 89), (90, 99)}


async def test_a_server_without_conditional_writes_is_a_clear_error(s3_bucket: tuple) -> None:
    s3, bucket = s3_bucket
    real_put = s3.put_object

    async def put_ignoring_conditions(**kwargs: object) -> object:
        kwargs.pop("IfNoneMatch", None)  # what an S3 API without conditional writes does
        return await real_put(**kwargs)

    s3.put_object = put_ignoring_conditions
    try:
        with pytest.raises(ConfigError, match="PINAPP_ARCHIVE__CONDITIONAL_WRITES=false"):
            await ArchiveWriter(s3, bucket, "raw").check_bucket()
        await ArchiveWriter(s3, bucket, "raw", conditional_writes=False).check_bucket()
    finally:
        s3.put_object = real_put


async def test_archivers_starting_together_each_check_conditional_writes(s3_bucket: tuple) -> None:
    s3, bucket = s3_bucket
    await asyncio.gather(*(ArchiveWriter(s3, bucket, "raw").check_bucket() for _ in range(4)))
    page = await s3.list_objects_v2(Bucket=bucket, Prefix="raw/_probe/")
    assert page.get("KeyCount", 0) == 0  # each removed its own probe


async def test_a_committed_cuts_intent_fences_a_zombie_until_it_is_forgotten(s3_bucket: tuple) -> None:
    """The hole the cluster test found: housekeeping deleted the new owner's intent once its cut
    was committed, and a zombie's upload held up until then landed beside it."""
    s3, bucket = s3_bucket
    owner, zombie = ArchiveWriter(s3, bucket, "raw"), ArchiveWriter(s3, bucket, "raw")
    await owner.write_cut("events", 0, _records(0, 0, 50))
    await owner.write_cut("events", 0, _records(0, 50, 50))
    assert await owner.forget_cuts("events", 0, committed=100, older_than_s=3600) == 0  # kept: fences
    with pytest.raises(CutConflict):
        await zombie.write_cut("events", 0, _records(0, 0, 30))
    assert (await owner.adoption("events", 0, committed=100)).pending == []
    assert (await owner.adoption("events", 0, committed=50)).pending == [(50, 99, "jsonl.gz")]
    assert await owner.forget_cuts("events", 0, committed=100) == 1  # past the retention: gone, but the latest
    report = await verify_topic(s3, bucket, "raw", "events", start={0: 0}, committed={0: 100})
    assert report.ok, (report.gaps, report.duplicates)
