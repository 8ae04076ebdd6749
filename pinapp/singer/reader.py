"""Complete lines from a stream's files, through rotation, truncation and inode reuse.

Design notes: docs/architecture.md, "pinapp/singer/reader.py".
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate, compress, count
from typing import BinaryIO, NamedTuple

from config import SingerStream
from pinapp.singer.watermark import FP_BYTES, FileKey, FileMark, Watermark, fingerprint

__all__ = ["Batch", "Chunk", "Line", "StreamReader", "TrackedFile"]

logger = logging.getLogger(__name__)

READ_SIZE = 1 << 20
_FORGET_AFTER_S = 60.0


class Line(NamedTuple):
    """One line on its own, for the DLQ: longer than a read, an unterminated tail, or an
    over-long line taken out of its :class:`Chunk` (:meth:`Chunk.split`)."""

    file: FileKey
    path: str
    offset: int  # where the line starts in its file
    end: int  # just after its newline (or the end of an unterminated tail)
    data: bytes  # the line without its newline, cut to ``keep`` bytes when over-long
    length: int  # the line's full length without its newline
    unterminated: bool = False


class Chunk(NamedTuple):
    """Complete lines of one file, as one read returned them, split once (``bytes.split``)."""

    file: FileKey
    path: str
    offset: int  # where the first line starts in its file
    size: int  # bytes the lines cover in the file, newlines included
    lines: list[bytes]  # without their newlines

    @property
    def end(self) -> int:
        return self.offset + self.size

    def split(self, max_line_bytes: int, keep: int) -> tuple[list[bytes], list[Line]]:
        """The lines within ``max_line_bytes``, and those longer (with their file offsets, cut to ``keep`` bytes).

        At C speed (``map``, ``compress``, ``sum``): this runs for every chunk, and an over-long
        line's offset is the lengths of the lines before it, not a search.
        """
        lines = self.lines
        if max(map(len, lines)) <= max_line_bytes:  # the usual case
            return lines, []
        lengths = list(map(len, lines))
        over: list[Line] = []
        offset, done = self.offset, 0  # ``offset`` is where line ``done`` starts
        for i in compress(count(), map(max_line_bytes.__lt__, lengths)):
            offset += sum(lengths[done:i]) + i - done  # each line and its newline
            over.append(Line(self.file, self.path, offset, offset + lengths[i] + 1, lines[i][:keep], lengths[i]))
            offset += lengths[i] + 1
            done = i + 1
        return list(compress(lines, map(max_line_bytes.__ge__, lengths))), over


@dataclass
class Batch:
    """What one shipping round sends: chunks of complete lines, and the odd single line.

    Lines are kept in the chunks they were read in, each just its ``bytes``, with no record of
    its own: at a million lines a second, a tuple per line would cost more than shipping it.
    """

    items: list[Chunk | Line] = field(default_factory=list)
    lines: int = 0
    size: int = 0  # bytes of the files covered, newlines included
    marks: dict[FileKey, FileMark] = field(default_factory=dict)  # the watermarks it was read against
    starts: dict[FileKey, int] = field(default_factory=dict)  # where it starts in each file

    def __bool__(self) -> bool:
        return bool(self.items)

    def add_chunk(self, chunk: Chunk) -> None:
        self.items.append(chunk)
        self.lines += len(chunk.lines)
        self.size += chunk.size

    def add_line(self, line: Line) -> None:
        self.items.append(line)
        self.lines += 1
        self.size += line.end - line.offset

    def end_in(self, file: FileKey) -> int | None:
        """Where the batch ends in ``file`` (None if it holds nothing of it)."""
        ends = [item.end for item in self.items if item.file == file]
        return max(ends) if ends else None


@dataclass(frozen=True, slots=True)
class TrackedFile:
    key: FileKey
    path: str
    size: int
    mtime: float


class StreamReader:
    """Reads one stream's files from its watermark; :meth:`advance` moves the watermark."""

    def __init__(
        self,
        spec: SingerStream,
        watermark: Watermark,
        *,
        max_line_bytes: int,
        keep: int,
        partial_line_grace_s: float,
        read_size: int = READ_SIZE,
    ) -> None:
        self.spec = spec
        self.watermark = watermark
        self.max_line_bytes = max_line_bytes
        self.keep = keep
        self.partial_line_grace_s = partial_line_grace_s
        self.read_size = read_size  # bytes per read; lines longer than this are never held whole
        self.resets = 0  # truncations / replaced files detected
        self._missing_since: dict[FileKey, float] = {}

    # -- files --------------------------------------------------------------------------------

    def files(self) -> list[TrackedFile]:
        """The stream's files now, oldest first, each once (several globs may match one)."""
        seen: dict[FileKey, TrackedFile] = {}
        for pattern in self.spec.paths:
            for path in glob.glob(pattern):
                try:
                    st = os.stat(path)
                except FileNotFoundError:  # rotated away or deleted meanwhile
                    continue
                if not os.path.isfile(path):
                    continue
                key = (st.st_dev, st.st_ino)
                seen.setdefault(key, TrackedFile(key, path, st.st_size, st.st_mtime))
        return sorted(seen.values(), key=lambda f: (f.mtime, f.path))

    def _mark(self, f: TrackedFile, handle: BinaryIO) -> FileMark:
        """The file's watermark, checked against truncation and inode reuse (via the open handle)."""
        mark = self.watermark.files.get(f.key)
        if mark is not None:
            head = _head(handle, mark.fp_len)
            if f.size < mark.offset or fingerprint(head) != mark.fp:
                logger.warning(
                    "singer %s: %s was truncated or replaced (size %d, watermark %d); "
                    "reading it again from the start (copytruncate: duplicates follow)",
                    self.spec.name,
                    f.path,
                    f.size,
                    mark.offset,
                )
                self.resets += 1
                mark = None
        if mark is None:
            head = _head(handle, FP_BYTES)
            mark = FileMark(0, fingerprint(head), len(head), f.path)
            self.watermark.files[f.key] = mark
        elif mark.fp_len < FP_BYTES and f.size > mark.fp_len:
            # The file was shorter than FP_BYTES when first seen; fingerprint more of it now.
            head = _head(handle, FP_BYTES)
            mark.fp, mark.fp_len = fingerprint(head), len(head)
        mark.path = f.path
        return mark

    def forget_missing(self, present: list[TrackedFile]) -> None:
        """Drop the marks of files gone for a while (deleted by retention or by the application).

        Not at the first miss: a rename racing the listing can hide a file from one scan, and
        forgetting its mark would re-send it whole.
        """
        now = time.monotonic()
        keys = {f.key for f in present}
        for key in list(self._missing_since):
            if key in keys:
                del self._missing_since[key]
        for key in [k for k in self.watermark.files if k not in keys]:
            since = self._missing_since.setdefault(key, now)
            if now - since >= _FORGET_AFTER_S:
                del self.watermark.files[key]
                del self._missing_since[key]

    # -- reading ------------------------------------------------------------------------------

    def read_batch(self, max_lines: int, max_bytes: int, *, after: Batch | None = None) -> Batch:
        """Complete lines, oldest file first, up to ``max_lines`` and ``max_bytes``.

        Lines come in chunks (:class:`Chunk`) of up to ``read_size`` bytes, as read, split by
        one ``bytes.split`` that also counts them against ``max_lines``. A line longer than
        ``max_bytes`` still makes a batch of its own.

        ``after`` (a batch read but not yet acknowledged) reads ahead: from where ``after``
        ends, in each file whose watermark ``after`` was read against. Such a batch is the next
        one only if :meth:`follows` says so once ``after`` is acknowledged and advanced.
        """
        present = self.files()
        self.forget_missing(present)
        newest = present[-1].key if present else None
        now = time.time()
        batch = Batch()
        for f in present:
            if batch.lines >= max_lines or batch.size >= max_bytes:
                break
            handle = _open_same(f)
            if handle is None:
                continue  # renamed or deleted since the listing: found under its new name next time
            with handle:
                mark = self._mark(f, handle)
                start = mark.offset
                if after is not None and after.marks.get(f.key) is mark:
                    start = max(start, after.end_in(f.key) or 0)
                if start >= f.size:
                    continue
                batch.marks[f.key] = mark
                batch.starts[f.key] = start
                idle_rotated = f.key != newest and now - f.mtime >= self.partial_line_grace_s
                self._read_file(f, handle, start, batch, max_lines, max_bytes, take_tail=idle_rotated)
        return batch

    def follows(self, batch: Batch) -> bool:
        """Whether ``batch`` starts at the watermark in every file it reads: a batch read ahead
        is the next one, unless the one before failed or a file was truncated meanwhile."""
        return all(
            self.watermark.files.get(key) is mark and mark.offset == batch.starts[key]
            for key, mark in batch.marks.items()
        )

    def _read_file(
        self,
        f: TrackedFile,
        handle: BinaryIO,
        start: int,
        batch: Batch,
        max_lines: int,
        max_bytes: int,
        *,
        take_tail: bool,
    ) -> None:
        handle.seek(start)
        pos = start  # file offset of buf[0]
        buf = b""
        skipping: tuple[int, bytes, int] | None = None  # an over-long line: (offset, kept, length)
        while True:
            if batch.lines >= max_lines or batch.size >= max_bytes:
                return  # the rest of the file goes in the next batch
            chunk = handle.read(self.read_size)
            if not chunk:
                break
            if skipping is not None:
                nl = chunk.find(b"\n")
                offset, kept, length = skipping
                if nl < 0:
                    skipping = (offset, kept, length + len(chunk))
                    pos += len(chunk)
                    continue
                end = pos + nl + 1
                batch.add_line(Line(f.key, f.path, offset, end, kept, length + nl))
                skipping = None
                pos = end
                chunk = chunk[nl + 1 :]
            buf += chunk
            room = max_lines - batch.lines
            lines = buf.split(b"\n", room)  # at most ``room`` lines, then the rest unsplit
            rest = lines.pop()
            full = len(lines) == room
            size = len(buf) - len(rest)
            if size > max_bytes - batch.size:
                lines, size = _within(lines, max_bytes - batch.size, at_least_one=not batch)
                full = True
            if lines:
                batch.add_chunk(Chunk(f.key, f.path, pos, size, lines))
            if full:
                return  # the lines after these go in the next batch, read again from the watermark
            pos += size
            buf = rest
            if len(buf) > self.max_line_bytes:  # an over-long line still without its newline
                skipping = (pos, buf[: self.keep], len(buf))
                pos += len(buf)
                buf = b""
        if take_tail:
            if skipping is not None:
                offset, kept, length = skipping
                batch.add_line(Line(f.key, f.path, offset, offset + length, kept, length, unterminated=True))
            elif buf:
                data = buf if len(buf) <= self.max_line_bytes else buf[: self.keep]
                batch.add_line(Line(f.key, f.path, pos, pos + len(buf), data, len(buf), unterminated=True))

    # -- progress -----------------------------------------------------------------------------

    def advance(self, batch: Batch, *, save: bool = True) -> None:
        """Move each file's watermark past ``batch`` (acknowledged by the broker), and save it.

        Only a watermark that is still the one the batch was read against moves: a file found
        truncated meanwhile has a new one, starting at 0, which the old batch says nothing about.
        """
        for item in batch.items:
            mark = self.watermark.files.get(item.file)
            if mark is not None and mark is batch.marks.get(item.file) and item.end > mark.offset:
                mark.offset = item.end
        if save:
            self.watermark.save()

    def bytes_behind(self, files: list[TrackedFile] | None = None) -> int:
        """Bytes in the stream's files (``files``, else listed now) not shipped yet."""
        behind = 0
        for f in self.files() if files is None else files:
            mark = self.watermark.files.get(f.key)
            behind += f.size - (mark.offset if mark is not None and mark.offset <= f.size else 0)
        return behind

    def delete_shipped(self, older_than_s: float) -> list[str]:
        """Delete rotated files that are fully shipped and older than ``older_than_s``."""
        present = self.files()
        now = time.time()
        deleted = []
        for f in present[:-1]:  # never the newest file
            mark = self.watermark.files.get(f.key)
            if mark is not None and mark.offset >= f.size and now - f.mtime >= older_than_s:
                handle = _open_same(f)  # still that file under that name? (rotation renames)
                if handle is None:
                    continue
                handle.close()
                with contextlib.suppress(FileNotFoundError):
                    os.remove(f.path)
                del self.watermark.files[f.key]
                deleted.append(f.path)
        if deleted:
            self.watermark.save()
        return deleted


def _within(lines: list[bytes], max_bytes: int, *, at_least_one: bool) -> tuple[list[bytes], int]:
    """The first of ``lines`` that fit in ``max_bytes`` with their newlines, and their size.

    Only for the chunk that fills a batch by bytes. ``at_least_one`` (an empty batch) takes the
    first line however long, so shipping moves on.
    """
    ends = list(accumulate(len(line) + 1 for line in lines))
    n = bisect_right(ends, max_bytes)
    if n == 0 and at_least_one:
        n = 1
    return lines[:n], (ends[n - 1] if n else 0)


def _head(handle: BinaryIO, n: int) -> bytes:
    handle.seek(0)
    return handle.read(n)


def _open_same(f: TrackedFile) -> BinaryIO | None:
    """``f.path`` opened, if it is still the file (device + inode) that was listed.

    Rotation renames files between the listing and the open: ``app.log.8`` may by now be the
    file that was ``app.log.7``. Reading by path would then attribute one file's bytes to
    another's watermark; the open handle's own identity is what counts.
    """
    try:
        handle = open(f.path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    except FileNotFoundError:
        return None
    st = os.fstat(handle.fileno())
    if (st.st_dev, st.st_ino) != f.key:
        handle.close()
        return None
    return handle
