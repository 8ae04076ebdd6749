"""Complete lines from a stream's files, through rotation, truncation and inode reuse.

Every file that matches the stream's globs is tracked by device + inode, so a rename
(``app.log`` -> ``app.log.1``) changes nothing: the renamed file keeps its offset, and lines
written to it after the rename are read like any others; the new ``app.log`` is a new inode
and starts at 0. Files are read oldest first (modification time, then name).

* **Partial lines** wait for their newline. Only when a file is no longer the stream's newest
  and has not changed for ``partial_line_grace_s`` is its unterminated tail taken, flagged, for
  the dead-letter topic: a writer died mid-line.
* **copytruncate** is detected: a file shorter than its watermark, or whose first bytes no
  longer match the fingerprint, is read again from 0. The copy (``app.log.1``) is a new file
  and is read from 0 too. Both re-send lines already shipped: duplicates that the topology's
  dedup removes, never losses.
* **Over-long lines** are not held in memory beyond ``keep`` bytes; the line is reported with
  its full length so the shipper dead-letters it.

Reading does not advance the watermark: :meth:`StreamReader.advance` does, after the broker
acknowledged the batch.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import time
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

from config import SingerStream
from pinapp.singer.watermark import FP_BYTES, FileKey, FileMark, Watermark, fingerprint

__all__ = ["Line", "StreamReader", "TrackedFile"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_FORGET_AFTER_S = 60.0


class Line(NamedTuple):
    """One line of a log file (a tuple: one is built per line, ~3x cheaper than a frozen dataclass)."""

    file: FileKey
    path: str
    offset: int  # where the line starts in its file
    end: int  # just after its newline (or the end of an unterminated tail)
    data: bytes  # the line without its newline, cut to ``keep`` bytes when over-long
    length: int  # the line's full length without its newline
    unterminated: bool = False


@dataclass(frozen=True, slots=True)
class TrackedFile:
    key: FileKey
    path: str
    size: int
    mtime: float


class StreamReader:
    """Reads one stream's files from its watermark; :meth:`advance` moves the watermark."""

    def __init__(self, spec: SingerStream, watermark: Watermark, *, max_line_bytes: int, keep: int,
                 partial_line_grace_s: float) -> None:
        self.spec = spec
        self.watermark = watermark
        self.max_line_bytes = max_line_bytes
        self.keep = keep
        self.partial_line_grace_s = partial_line_grace_s
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
                logger.warning("singer %s: %s was truncated or replaced (size %d, watermark %d); "
                               "reading it again from the start (copytruncate: duplicates follow)",
                               self.spec.name, f.path, f.size, mark.offset)
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

    def read_batch(self, max_lines: int, max_bytes: int) -> list[Line]:
        """Up to ``max_lines`` complete lines (or ``max_bytes``), oldest file first."""
        present = self.files()
        self.forget_missing(present)
        newest = present[-1].key if present else None
        now = time.time()
        out: list[Line] = []
        budget = max_bytes
        for f in present:
            if len(out) >= max_lines or budget <= 0:
                break
            handle = _open_same(f)
            if handle is None:
                continue  # renamed or deleted since the listing: found under its new name next time
            with handle:
                mark = self._mark(f, handle)
                if mark.offset >= f.size:
                    continue
                idle_rotated = f.key != newest and now - f.mtime >= self.partial_line_grace_s
                got = self._read_file(f, handle, mark.offset, max_lines - len(out), budget, take_tail=idle_rotated)
            out.extend(got)
            budget -= sum(line.end - line.offset for line in got)
        return out

    def _read_file(self, f: TrackedFile, handle: BinaryIO, start: int, max_lines: int, max_bytes: int,
                   *, take_tail: bool) -> list[Line]:
        lines: list[Line] = []
        used = 0
        handle.seek(start)
        pos = start  # file offset of buf[0]
        buf = b""
        skipping: tuple[int, bytes, int] | None = None  # an over-long line: (offset, kept, length)
        while len(lines) < max_lines and used < max_bytes:
            chunk = handle.read(_CHUNK)
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
                lines.append(Line(f.key, f.path, offset, end, kept, length + nl))
                used += end - offset
                skipping = None
                pos = end
                chunk = chunk[nl + 1:]
            buf += chunk
            cursor = 0
            while len(lines) < max_lines and used < max_bytes:
                nl = buf.find(b"\n", cursor)
                if nl < 0:
                    break
                length = nl - cursor
                data = buf[cursor:nl] if length <= self.max_line_bytes else buf[cursor:cursor + self.keep]
                lines.append(Line(f.key, f.path, pos + cursor, pos + nl + 1, data, length))
                used += length + 1
                cursor = nl + 1
            pos += cursor
            buf = buf[cursor:]
            if len(lines) >= max_lines or used >= max_bytes:
                return lines
            if len(buf) > self.max_line_bytes:  # an over-long line still without its newline
                skipping = (pos, buf[:self.keep], len(buf))
                pos += len(buf)
                buf = b""
        if take_tail and len(lines) < max_lines:
            if skipping is not None:
                offset, kept, length = skipping
                lines.append(Line(f.key, f.path, offset, offset + length, kept, length, unterminated=True))
            elif buf:
                data = buf if len(buf) <= self.max_line_bytes else buf[:self.keep]
                lines.append(Line(f.key, f.path, pos, pos + len(buf), data, len(buf), unterminated=True))
        return lines

    # -- progress -----------------------------------------------------------------------------

    def advance(self, lines: list[Line]) -> None:
        """Move each file's watermark past ``lines`` (acknowledged by the broker), and save it."""
        for line in lines:
            mark = self.watermark.files.get(line.file)
            if mark is not None and line.end > mark.offset:
                mark.offset = line.end
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
