"""The log reader on real files: rotation, partial lines, truncation, inode reuse, over-long lines."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from config import SingerStream
from pinapp.singer.reader import Batch, Line, StreamReader
from pinapp.singer.watermark import Watermark


def _reader(tmp_path: Path, **kw: object) -> StreamReader:
    spec = SingerStream(name="app", paths=(str(tmp_path / "app.log*"),))
    opts = {"max_line_bytes": 100, "keep": 20, "partial_line_grace_s": 3600.0, **kw}
    return StreamReader(spec, Watermark.load(tmp_path / "wm" / "app.watermark.json"), **opts)  # type: ignore[arg-type]


def _lines(batch: Batch) -> list[Line]:
    """Every line of ``batch`` in file order, over-long ones as the shipper gets them (cut, with offsets)."""
    out: list[Line] = []
    for item in batch.items:
        if isinstance(item, Line):
            out.append(item)
            continue
        kept, over_long = item.split(max_line_bytes=100, keep=20)
        every = item.lines
        assert kept == [data for data in every if len(data) <= 100]
        over = {line.offset: line for line in over_long}
        assert len(over) == len(every) - len(kept)
        offset = item.offset
        for data in every:
            out.append(over.get(offset) or Line(item.file, item.path, offset, offset + len(data) + 1, data, len(data)))
            offset += len(data) + 1
    return out


def _ship(reader: StreamReader, n: int = 1000) -> list[bytes]:
    batch = reader.read_batch(n, 1 << 30)
    reader.advance(batch)
    return [line.data for line in _lines(batch)]


def test_lines_are_read_once_and_a_partial_line_waits_for_its_newline(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"a\nb\nhalf")
    reader = _reader(tmp_path)
    assert _ship(reader) == [b"a", b"b"]
    assert _ship(reader) == []
    with log.open("ab") as f:
        f.write(b"-done\nc\n")
    assert _ship(reader) == [b"half-done", b"c"]


def test_the_watermark_survives_a_restart(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_bytes(b"1\n2\n3\n")
    first = _reader(tmp_path)
    first.advance(first.read_batch(2, 1 << 30))
    again = _reader(tmp_path)  # a new process: reads the saved watermark
    assert _ship(again) == [b"3"]


def test_rename_rotation_loses_nothing_even_lines_written_to_the_old_file_after_it(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"1\n2\n")
    reader = _reader(tmp_path)
    assert _ship(reader) == [b"1", b"2"]
    with log.open("ab") as old:  # the application still holds the old file open
        log.rename(tmp_path / "app.log.1")
        old.write(b"3\n")  # a late write to the renamed file
        old.flush()
        log.write_bytes(b"4\n")
    assert sorted(_ship(reader)) == [b"3", b"4"]
    assert _ship(reader) == []


def test_copytruncate_is_detected_and_read_again_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"one\ntwo\n")
    reader = _reader(tmp_path)
    assert _ship(reader) == [b"one", b"two"]
    (tmp_path / "app.log.1").write_bytes(log.read_bytes())  # copy ...
    with log.open("r+b") as f:  # ... then truncate in place
        f.truncate(0)
    with log.open("ab") as f:
        f.write(b"x\n")
    assert sorted(_ship(reader)) == [b"one", b"two", b"x"]  # the copy: documented duplicates
    assert reader.resets == 1


def test_a_reused_inode_is_a_new_file(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"first file, long line\n")
    reader = _reader(tmp_path)
    _ship(reader)
    old = next(iter(reader.watermark.files))
    log.unlink()
    log.write_bytes(b"second file, different head\nmore\n")
    st = os.stat(log)
    # tmpfs/ext4 usually hand the freed inode straight out again; the fingerprint tells them apart.
    assert _ship(reader) == [b"second file, different head", b"more"], (old, (st.st_dev, st.st_ino))


@pytest.mark.parametrize("read_size", [1 << 20, 1024])  # the line within one read, and longer than one
def test_over_long_lines_are_reported_with_their_length_and_cut(tmp_path: Path, read_size: int) -> None:
    log = tmp_path / "app.log"
    big = b"x" * 5000
    log.write_bytes(b"ok\n" + big + b"\nafter\n")
    batch = _reader(tmp_path, read_size=read_size).read_batch(10, 1 << 30)
    lines = _lines(batch)
    assert [(line.length, len(line.data)) for line in lines] == [(2, 2), (5000, 20), (5, 5)]
    assert lines[1].offset == 3 and lines[1].end == 3 + 5001
    assert lines[2].offset == 3 + 5001 and batch.size == log.stat().st_size and batch.lines == 3


def test_identical_over_long_lines_in_one_chunk_keep_their_own_offsets(tmp_path: Path) -> None:
    big = b"y" * 500
    (tmp_path / "app.log").write_bytes(b"ok\n" + big + b"\n" + big + b"\nafter\n")
    lines = _lines(_reader(tmp_path).read_batch(10, 1 << 30))
    assert [(line.offset, line.length, len(line.data)) for line in lines] == [
        (0, 2, 2),
        (3, 500, 20),
        (504, 500, 20),
        (1005, 5, 5),
    ]


def test_a_batch_keeps_to_its_limits_and_the_next_goes_on_from_there(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(b"line %04d\n" % i for i in range(1000)))  # 10 bytes a line
    reader = _reader(tmp_path, read_size=1000)
    first = reader.read_batch(150, 1 << 30)
    assert (first.lines, first.size) == (150, 1500)  # cut inside the second read
    reader.advance(first)
    second = reader.read_batch(10_000, 2505)
    assert (second.lines, second.size) == (250, 2500)  # whole lines only
    reader.advance(second)
    rest = _ship(reader)
    assert [line.data for line in _lines(first) + _lines(second)] + rest == [b"line %04d" % i for i in range(1000)]


def test_a_line_longer_than_the_byte_limit_still_ships_alone(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_bytes(b"x" * 50 + b"\nshort\n")
    reader = _reader(tmp_path)
    first = reader.read_batch(1000, 20)
    assert [line.data for line in _lines(first)] == [b"x" * 50]
    reader.advance(first)
    assert _ship(reader) == [b"short"]


def test_an_unterminated_tail_of_an_idle_rotated_file_is_taken_flagged(tmp_path: Path) -> None:
    rotated = tmp_path / "app.log.1"
    rotated.write_bytes(b"a\nwriter died mid-li")
    past = time.time() - 10
    os.utime(rotated, (past, past))
    (tmp_path / "app.log").write_bytes(b"b\n")
    lines = _lines(_reader(tmp_path, partial_line_grace_s=5.0).read_batch(10, 1 << 30))
    assert [(line.data, line.unterminated) for line in lines] == [
        (b"a", False),
        (b"writer died mid-li", True),
        (b"b", False),
    ]


def test_retention_deletes_only_shipped_rotated_files_past_their_age(tmp_path: Path) -> None:
    old, shipped_young, live = tmp_path / "app.log.2", tmp_path / "app.log.1", tmp_path / "app.log"
    for path, age in ((old, 100), (shipped_young, 1), (live, 0)):
        path.write_bytes(b"line\n")
        os.utime(path, (time.time() - age, time.time() - age))
    reader = _reader(tmp_path)
    assert len(_ship(reader)) == 3
    unshipped = tmp_path / "app.log.3"
    unshipped.write_bytes(b"not yet\n")
    os.utime(unshipped, (time.time() - 200, time.time() - 200))
    assert reader.delete_shipped(older_than_s=50) == [str(old)]
    assert not old.exists() and shipped_young.exists() and live.exists() and unshipped.exists()


def test_a_batch_read_ahead_goes_on_where_the_last_ends_and_is_next_only_once_it_is_acknowledged(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(b"line %04d\n" % i for i in range(100)))
    reader = _reader(tmp_path, read_size=64)
    first = reader.read_batch(30, 1 << 30)
    ahead = reader.read_batch(30, 1 << 30, after=first)
    assert [line.data for line in _lines(ahead)] == [b"line %04d" % i for i in range(30, 60)]
    assert not reader.follows(ahead)  # the first is not acknowledged yet: a failure resends it, then this
    reader.advance(first)
    assert reader.follows(ahead)
    reader.advance(ahead)
    assert _ship(reader)[:1] == [b"line 0060"]


def test_a_batch_read_ahead_is_dropped_when_its_file_was_truncated_meanwhile(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(b"line %04d\n" % i for i in range(100)))
    reader = _reader(tmp_path)
    first = reader.read_batch(30, 1 << 30)
    ahead = reader.read_batch(30, 1 << 30, after=first)
    log.write_bytes(b"new 1\nnew 2\n")  # copytruncate, and new lines, while the first is in flight
    reader.read_batch(10, 1 << 30)  # any read finds it truncated and starts it over
    reader.advance(first)  # the old watermark is gone: nothing moves
    assert not reader.follows(ahead)
    assert _ship(reader) == [b"new 1", b"new 2"]
