"""Writing cuts to S3 so that a crash at any moment leaves nothing doubled.

One *cut* is a run of consecutive offsets ``[first, last]`` of one partition. Writing a cut:

1. put its *intent*, ``PREFIX/_cuts/TOPIC/pPPPP/<first>-<last>`` (its body names the format);
2. put one object per hour folder its records fall in (deterministic names and bytes);
3. the caller then acks the offsets, and faust commits them.

A crash before 1 leaves nothing. A crash after 1 leaves an intent and some of the objects: the
next owner of the partition reads the intents at or after the committed offset
(:meth:`ArchiveWriter.pending_cuts`) and re-cuts exactly there, in the intent's format, so
every re-upload overwrites an object with identical bytes. Intents below the committed
offset are housekeeping (:meth:`ArchiveWriter.forget_cuts`).

Beside the cuts, each partition's *progress* (``PREFIX/_progress/TOPIC/pPPPP``: next offset
and event-time watermark) is what the ``_SUCCESS`` finalizer reads, so any worker can
finalize an hour folder for partitions that other workers own.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from botocore.exceptions import ClientError

from pinapp.archive.layout import ObjectKey, event_time_ms, hour_folder
from pinapp.archive.records import FORMATS, ArchivedRecord, encode
from pinapp.errors import ConfigError

__all__ = ["ArchiveWriter", "CutResult", "PartitionProgress", "Step", "record_time_ms"]

logger = logging.getLogger(__name__)

#: Points of a cut's upload, named for fault injection (see ``archive.crash_at``).
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


@dataclass(frozen=True)
class CutResult:
    keys: list[ObjectKey]
    bytes_written: int
    max_event_ms: int  # the latest event time up to the cut's horizon (0: none)
    future: int = 0  # records dated past the horizon: archived in their hour, but no progress


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

    def __init__(self, s3: Any, bucket: str, prefix: str = "") -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix.strip("/")

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

    async def write_cut(
        self,
        topic: str,
        partition: int,
        records: Sequence[ArchivedRecord],
        fmt: str = "jsonl.gz",
        *,
        on_step: Callable[[Step], Awaitable[None]] | None = None,
        horizon_ms: int | None = None,
    ) -> CutResult:
        """Put the intent, then one object per hour folder. Records must be consecutive offsets.

        ``on_step`` is awaited at each point of the cycle (fault tests kill the process there).
        ``horizon_ms``: records dated later (a client's clock running fast) are archived in their
        hour but left out of ``max_event_ms``, which drives ``_SUCCESS``.
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
        await self.s3.put_object(
            Bucket=self.bucket, Key=f"{self._intent_dir(topic, partition)}{first:020d}-{last:020d}", Body=fmt.encode()
        )
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
            await self.s3.put_object(Bucket=self.bucket, Key=str(key), Body=body)
            keys.append(key)
            written += len(body)
        await step("after_upload")
        return CutResult(keys, written, max_ms, future)

    async def pending_cuts(self, topic: str, partition: int, committed: int) -> list[tuple[int, int, str]]:
        """Cuts ``(first, last, format)`` whose intent exists and that end at or after ``committed``."""
        cuts = []
        async for first, last, key in self._intents(topic, partition):
            if last >= committed:
                body = await (await self.s3.get_object(Bucket=self.bucket, Key=key))["Body"].read()
                fmt = body.decode() if body.decode() in FORMATS else "jsonl.gz"  # empty: written before formats
                cuts.append((first, last, fmt))
        return sorted(cuts)

    async def forget_cuts(self, topic: str, partition: int, committed: int) -> int:
        """Delete intents wholly below ``committed`` (their offsets are safely committed)."""
        doomed = [key async for _, last, key in self._intents(topic, partition) if last < committed]
        for start in range(0, len(doomed), 1000):
            chunk = doomed[start : start + 1000]
            await self.s3.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
            )
        return len(doomed)

    async def _intents(self, topic: str, partition: int) -> AsyncIterator[tuple[int, int, str]]:
        directory = self._intent_dir(topic, partition)
        paginator = self.s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=directory):
            for obj in page.get("Contents", []):
                first, _, last = obj["Key"].removeprefix(directory).partition("-")
                yield int(first), int(last), obj["Key"]

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
