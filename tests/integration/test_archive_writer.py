"""The archive's write path and verifier on the real S3 API server (the agent comes next).

A crash between any two puts of a cut must leave an archive that, once the next owner re-cuts
at the adopted intents, holds every offset exactly once. The verifier must catch what
secor #600 produced (a re-cut beside a stale object) and any gap.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import orjson
import pytest

from config import Settings
from pinapp.adapters.s3 import s3_client
from pinapp.archive.records import ArchivedRecord
from pinapp.archive.verify import verify_topic
from pinapp.archive.writer import ArchiveWriter
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
    assert await writer.pending_cuts("events", 0, committed=100) == [(100, 179, "jsonl.gz")]
    await writer.write_cut("events", 0, interrupted)
    await writer.write_cut("events", 0, _records(0, 180, 20))
    report = await verify_topic(s3, bucket, "raw", "events", start={0: 0}, committed={0: 200})
    assert report.ok, (report.gaps, report.duplicates)
    assert report.records == 200
    assert await writer.forget_cuts("events", 0, committed=200) == 3
    assert await writer.pending_cuts("events", 0, committed=0) == []


async def test_verify_reports_a_secor_600_re_cut_and_a_gap(s3_bucket: tuple) -> None:
    s3, bucket = s3_bucket
    writer = ArchiveWriter(s3, bucket)
    await writer.write_cut("events", 1, _records(1, 0, 60))
    # secor #600: a retry cut differently (0..49) and landed beside the first object.
    await writer.write_cut("events", 1, _records(1, 0, 50))
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
