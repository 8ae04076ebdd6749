"""Writing cuts to S3 so that a crash or a zombie at any moment leaves nothing doubled.

Design notes: docs/architecture.md, "pinapp/archive/writer.py".
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from botocore.exceptions import ClientError

from pinapp.archive.layout import ObjectKey, event_time_ms, hour_folder
from pinapp.archive.records import FORMATS, ArchivedRecord, decode, encode
from pinapp.errors import ConfigError, PinappError

__all__ = [
    "Adoption",
    "ArchiveConflict",
    "ArchiveWriter",
    "CutConflict",
    "CutResult",
    "PartitionProgress",
    "Step",
    "record_time_ms",
]

logger = logging.getLogger(__name__)

#: Points of a cut's upload, named for fault injection (see ``testing.archive_crash_at``).
Step = Literal["before_intent", "after_intent", "mid_upload", "after_upload"]


def record_time_ms(record: ArchivedRecord) -> int:
    """The event time of a record: its ``ts`` field if usable, else its Kafka timestamp."""
    ts: object = None
    if record.value:
        try:
            doc = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict):
            ts = doc.get("ts")
    return event_time_ms(ts, record.timestamp_ms)


class CutConflict(PinappError):
    """Another writer's intent names a different cut at this first offset: cut exactly there."""

    def __init__(self, topic: str, partition: int, first: int, last: int, fmt: str) -> None:
        super().__init__(
            f"{topic}[{partition}]: an intent for offsets {first}-{last} ({fmt}) is in S3 already "
            "(another archiver's: the partition's new owner, or one that lost it); re-cutting there"
        )
        self.first, self.last, self.fmt = first, last, fmt


class ArchiveConflict(PinappError):
    """An object in S3 holds other records than a re-cut of its offsets: nothing is overwritten."""


@dataclass(frozen=True)
class CutResult:
    keys: list[ObjectKey]
    bytes_written: int
    max_event_ms: int  # the latest event time up to the cut's horizon (0: none)
    future: int = 0  # records dated past the horizon: archived in their hour, but no progress


@dataclass(frozen=True)
class Adoption:
    """What a partition's next owner finds in S3 at the committed offset."""

    pending: list[tuple[int, int, str]]  # cuts ``(first, last, format)`` to re-cut exactly
    #: one past the last offset of the latest cut starting below the committed offset (``None``:
    #: no intent there). Below the committed offset means a hole: offsets committed, never archived.
    archived_to: int | None


@dataclass(frozen=True)
class PartitionProgress:
    """How far one partition's archive has got: the finalizer's input."""

    partition: int
    next_offset: int
    #: The highest event time archived so far; or, when the partition is caught up and idle,
    #: the wall-clock time it was last seen so (an idle partition must not hold folders open).
    watermark_ms: int


class ArchiveWriter:
    """Puts cuts, their intents and partition progress into one bucket under one prefix."""

    def __init__(self, s3: Any, bucket: str, prefix: str = "", *, conditional_writes: bool = True) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        #: put intents and objects only where none is yet (the zombie fence; see the module)
        self.conditional_writes = conditional_writes

    def _path(self, *parts: str) -> str:
        head = f"{self.prefix}/" if self.prefix else ""
        return head + "/".join(parts)

    def _intent_dir(self, topic: str, partition: int) -> str:
        return self._path("_cuts", topic, f"p{partition:04d}") + "/"

    async def check_bucket(self) -> None:
        """Fail at start-up, clearly, on a missing bucket or credentials S3 refuses."""
        try:
            await self.s3.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket"):
                raise ConfigError(
                    f"s3.bucket: bucket {self.bucket!r} does not exist; create it or set PINAPP_S3__BUCKET"
                ) from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise ConfigError(
                    f"s3: access to bucket {self.bucket!r} denied ({code}); check "
                    "PINAPP_S3__ACCESS_KEY_ID and PINAPP_S3__SECRET_ACCESS_KEY"
                ) from None
            raise
        if self.conditional_writes:
            await self._check_conditional_writes()

    async def _check_conditional_writes(self) -> None:
        """Put a probe twice with ``If-None-Match``: a server that takes the second cannot fence."""
        key = self._path("_probe", f"conditional-writes-{uuid.uuid4().hex}")  # one per process: they start at once
        await self.s3.put_object(Bucket=self.bucket, Key=key, Body=b"1", IfNoneMatch="*")
        try:
            await self.s3.put_object(Bucket=self.bucket, Key=key, Body=b"2", IfNoneMatch="*")
        except ClientError as exc:
            if not _precondition_failed(exc):
                raise
        else:
            raise ConfigError(
                f"s3: the server at bucket {self.bucket!r} ignores conditional writes (If-None-Match), so an "
                "archiver that lost its partitions could double the new owner's cuts; use an S3 API with "
                "them, or set PINAPP_ARCHIVE__CONDITIONAL_WRITES=false to run unfenced"
            )
        finally:
            await self.s3.delete_object(Bucket=self.bucket, Key=key)

    async def write_cut(
        self,
        topic: str,
        partition: int,
        records: Sequence[ArchivedRecord],
        fmt: str = "jsonl.gz",
        *,
        on_step: Callable[[Step], Awaitable[None]] | None = None,
        horizon_ms: int | None = None,
        intent_last: int | None = None,
    ) -> CutResult:
        """Put the intent, then one object per hour folder. Records must be consecutive offsets.

        ``on_step`` is awaited at each point of the cycle (fault tests kill the process there).
        ``horizon_ms``: records dated later (a client's clock running fast) are archived in their
        hour but left out of ``max_event_ms``, which drives ``_SUCCESS``. ``intent_last``: the
        last offset the cut's intent names, when it is a re-cut closed short (offsets compacted).

        Raises:
            CutConflict: an intent at the first offset names another cut; nothing was written.
            ArchiveConflict: an object already there holds other records (nothing overwritten).
        """
        if not records:
            return CutResult([], 0, 0)
        if fmt not in FORMATS:
            raise ValueError(f"unknown archive format {fmt!r}")

        async def step(name: Step) -> None:
            if on_step is not None:
                await on_step(name)

        first, last = records[0].offset, records[-1].offset
        await step("before_intent")
        await self._put_intent(topic, partition, first, last if intent_last is None else intent_last, fmt)
        await step("after_intent")
        by_folder: dict[str, list[ArchivedRecord]] = defaultdict(list)
        max_ms = future = 0
        for record in records:
            ms = record_time_ms(record)
            if horizon_ms is not None and ms > horizon_ms:
                future += 1
            elif ms > max_ms:
                max_ms = ms
            by_folder[hour_folder(ms)].append(record)
        keys = []
        written = 0
        for i, (folder, folder_records) in enumerate(sorted(by_folder.items())):
            if i == 1:
                await step("mid_upload")
            key = ObjectKey(topic, partition, first, last, folder, fmt=fmt, prefix=self.prefix)
            body = encode(folder_records, fmt)
            await self._put_object(key, body, folder_records)
            keys.append(key)
            written += len(body)
        await step("after_upload")
        return CutResult(keys, written, max_ms, future)

    async def _put_intent(self, topic: str, partition: int, first: int, last: int, fmt: str) -> None:
        key = f"{self._intent_dir(topic, partition)}{first:020d}"
        body = orjson.dumps({"last": last, "format": fmt})
        if not self.conditional_writes:
            await self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
            return
        try:
            await self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
        except ClientError as exc:
            if not _precondition_failed(exc):
                raise
            theirs = _intent_body(await self._read(key), last=None)
            if theirs != (last, fmt):  # the same cut (a re-cut after a crash) goes on
                raise CutConflict(topic, partition, first, *theirs) from None

    async def _put_object(self, key: ObjectKey, body: bytes, records: Sequence[ArchivedRecord]) -> None:
        """Put an object where none is; one already there must hold the same records (a re-cut's)."""
        if not self.conditional_writes:
            await self.s3.put_object(Bucket=self.bucket, Key=str(key), Body=body)
            return
        try:
            await self.s3.put_object(Bucket=self.bucket, Key=str(key), Body=body, IfNoneMatch="*")
        except ClientError as exc:
            if not _precondition_failed(exc):
                raise
            there = await self._read(str(key))
            # The same bytes, or the same records encoded otherwise (a version with another encoder).
            if there != body and not _holds(there, key.fmt, records):
                raise ArchiveConflict(
                    f"s3://{self.bucket}/{key} holds other records than a re-cut of offsets {key.first}-{key.last}; "
                    "nothing was overwritten: run `pinapp archive verify` and inspect the object"
                ) from None

    async def _read(self, key: str) -> bytes:
        data: bytes = await (await self.s3.get_object(Bucket=self.bucket, Key=key))["Body"].read()
        return data

    async def adoption(self, topic: str, partition: int, committed: int) -> Adoption:
        """What the next owner of a partition finds at ``committed``: the cuts to re-cut, and
        where the cuts before it end.

        Cuts chain and commits fall between them, so of the intents that start below
        ``committed`` only the latest can reach past it: the others are not read.
        """
        cuts = []
        below: tuple[int, int | None, str] | None = None
        async for first, last, key, _ in self._intents(topic, partition):
            if first >= committed:
                cuts.append((first, *_intent_body(await self._read(key), last=last)))
            elif below is None or first > below[0]:
                below = (first, last, key)
        archived_to = None
        if below is not None:
            last, fmt = _intent_body(await self._read(below[2]), last=below[1])
            archived_to = last + 1
            if last >= committed:
                cuts.append((below[0], last, fmt))
        return Adoption(sorted(cuts), archived_to)

    async def forget_cuts(self, topic: str, partition: int, committed: int, *, older_than_s: float = 0) -> int:
        """Delete intents below ``committed`` (their offsets are safely committed) that are older
        than ``older_than_s`` (until then an intent fences a zombie out of its offsets), but the
        latest of them."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        below = sorted(
            [
                (first, last, key, written)
                async for first, last, key, written in self._intents(topic, partition)
                if first < committed
            ]
        )
        # The latest is kept: it may reach past ``committed``, and where it ends is where the
        # archive ends, which the next owner checks the committed offset against (:class:`Adoption`).
        doomed = [key for _, _, key, written in below[:-1] if written < cutoff]
        for start in range(0, len(doomed), 1000):
            chunk = doomed[start : start + 1000]
            await self.s3.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
            )
        return len(doomed)

    async def _intents(self, topic: str, partition: int) -> AsyncIterator[tuple[int, int | None, str, datetime]]:
        """``(first, last, key, written)`` of each intent; ``last`` is ``None`` where only the body
        names it (intents named ``<first>-<last>`` were written before the fence)."""
        directory = self._intent_dir(topic, partition)
        paginator = self.s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=directory):
            for obj in page.get("Contents", []):
                first, _, last = obj["Key"].removeprefix(directory).partition("-")
                yield int(first), int(last) if last else None, obj["Key"], obj["LastModified"]

    # -- progress and _SUCCESS ----------------------------------------------------------------

    async def put_progress(self, topic: str, progress: PartitionProgress) -> None:
        body = orjson.dumps({"next_offset": progress.next_offset, "watermark_ms": progress.watermark_ms})
        await self.s3.put_object(
            Bucket=self.bucket, Key=self._path("_progress", topic, f"p{progress.partition:04d}"), Body=body
        )

    async def progress(self, topic: str) -> dict[int, PartitionProgress]:
        """Every partition's last recorded progress for ``topic``."""
        directory = self._path("_progress", topic) + "/"
        out = {}
        paginator = self.s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=directory):
            for obj in page.get("Contents", []):
                partition = int(obj["Key"].removeprefix(directory).removeprefix("p"))
                doc = orjson.loads(await (await self.s3.get_object(Bucket=self.bucket, Key=obj["Key"]))["Body"].read())
                out[partition] = PartitionProgress(partition, doc["next_offset"], doc["watermark_ms"])
        return out

    async def hour_folders(self, topic: str) -> list[str]:
        """Every ``dt=YYYY-MM-DD/hr=HH`` folder of ``topic``, oldest first (delimiter listings only)."""
        base = self._path(topic) + "/"
        folders: list[str] = []
        paginator = self.s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=base, Delimiter="/"):
            for day in page.get("CommonPrefixes", []):
                async for hours in paginator.paginate(Bucket=self.bucket, Prefix=day["Prefix"], Delimiter="/"):
                    folders.extend(h["Prefix"].removeprefix(base).rstrip("/") for h in hours.get("CommonPrefixes", []))
        return sorted(folders)

    async def is_finalized(self, topic: str, folder: str) -> bool:
        page = await self.s3.list_objects_v2(
            Bucket=self.bucket, Prefix=self._path(topic, folder, "_SUCCESS"), MaxKeys=1
        )
        return bool(page.get("KeyCount", 0))

    async def finalize(self, topic: str, folder: str) -> None:
        await self.s3.put_object(Bucket=self.bucket, Key=self._path(topic, folder, "_SUCCESS"), Body=b"")


def _precondition_failed(exc: ClientError) -> bool:
    """S3 refused a conditional write: the key exists (412 PreconditionFailed)."""
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error.get("Code") == "PreconditionFailed" or status == 412


def _holds(data: bytes, fmt: str, records: Sequence[ArchivedRecord]) -> bool:
    try:
        return list(decode(data, fmt)) == list(records)
    except Exception:  # noqa: BLE001 - unreadable: not these records, whatever the decoder raised
        return False


def _intent_body(body: bytes, *, last: int | None) -> tuple[int, str]:
    """``(last, format)`` from an intent's body: JSON, or (before the fence) the bare format with
    ``last`` from the name (an empty body: written before formats, JSON lines)."""
    if body.startswith(b"{"):
        doc = orjson.loads(body)
        return int(doc["last"]), str(doc["format"])
    if last is None:
        raise ValueError(f"an intent without its last offset: {body[:80]!r}")
    text = body.decode()
    return last, text if text in FORMATS else "jsonl.gz"
