"""Writing cuts to S3 so that a crash at any moment leaves nothing doubled.

One *cut* is a run of consecutive offsets ``[first, last]`` of one partition. Writing a cut:

1. put its *intent*, ``PREFIX/_cuts/TOPIC/pPPPP/<first>-<last>`` (empty);
2. put one object per hour folder its records fall in (deterministic names and bytes);
3. the caller then acks the offsets, and faust commits them.

A crash before 1 leaves nothing. A crash after 1 leaves an intent and some of the objects: the
next owner of the partition reads the intents at or after the committed offset
(:meth:`ArchiveWriter.pending_cuts`) and re-cuts exactly there, so every re-upload overwrites
an object with identical bytes. Intents below the committed offset are housekeeping
(:meth:`ArchiveWriter.forget_cuts`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import orjson
from botocore.exceptions import ClientError

from pinapp.archive.layout import ObjectKey, event_time_ms, hour_folder
from pinapp.archive.records import ArchivedRecord, encode_jsonl_gz
from pinapp.errors import ConfigError

__all__ = ["ArchiveWriter", "record_folder"]

logger = logging.getLogger(__name__)


def record_folder(record: ArchivedRecord) -> str:
    """The hour folder of a record: its ``ts`` field if usable, else its Kafka timestamp."""
    ts: object = None
    if record.value:
        try:
            doc = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict):
            ts = doc.get("ts")
    return hour_folder(event_time_ms(ts, record.timestamp_ms))


class ArchiveWriter:
    """Puts cuts and their intents into one bucket under one prefix."""

    def __init__(self, s3: Any, bucket: str, prefix: str = "") -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def _intent_dir(self, topic: str, partition: int) -> str:
        head = f"{self.prefix}/" if self.prefix else ""
        return f"{head}_cuts/{topic}/p{partition:04d}/"

    async def check_bucket(self) -> None:
        """Fail at start-up, clearly, on a missing bucket or credentials S3 refuses."""
        try:
            await self.s3.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket"):
                raise ConfigError(f"s3.bucket: bucket {self.bucket!r} does not exist; create it or set "
                                  "PINAPP_S3__BUCKET") from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise ConfigError(f"s3: access to bucket {self.bucket!r} denied ({code}); check "
                                  "PINAPP_S3__ACCESS_KEY_ID and PINAPP_S3__SECRET_ACCESS_KEY") from None
            raise

    async def write_cut(self, topic: str, partition: int, records: Sequence[ArchivedRecord]) -> list[ObjectKey]:
        """Put the intent, then one object per hour folder. Records must be consecutive offsets."""
        if not records:
            return []
        first, last = records[0].offset, records[-1].offset
        await self.s3.put_object(Bucket=self.bucket, Key=f"{self._intent_dir(topic, partition)}{first:020d}-{last:020d}",
                                 Body=b"")
        by_folder: dict[str, list[ArchivedRecord]] = defaultdict(list)
        for record in records:
            by_folder[record_folder(record)].append(record)
        keys = []
        for folder, folder_records in sorted(by_folder.items()):
            key = ObjectKey(topic, partition, first, last, folder, prefix=self.prefix)
            await self.s3.put_object(Bucket=self.bucket, Key=str(key), Body=encode_jsonl_gz(folder_records))
            keys.append(key)
        return keys

    async def pending_cuts(self, topic: str, partition: int, committed: int) -> list[tuple[int, int]]:
        """Cuts whose intent exists and that end at or after ``committed``, in offset order."""
        cuts = []
        async for first, last in self._intents(topic, partition):
            if last >= committed:
                cuts.append((first, last))
        return sorted(cuts)

    async def forget_cuts(self, topic: str, partition: int, committed: int) -> int:
        """Delete intents wholly below ``committed`` (their offsets are safely committed)."""
        doomed = [(f, la) async for f, la in self._intents(topic, partition) if la < committed]
        directory = self._intent_dir(topic, partition)
        for first, last in doomed:
            await self.s3.delete_object(Bucket=self.bucket, Key=f"{directory}{first:020d}-{last:020d}")
        return len(doomed)

    async def _intents(self, topic: str, partition: int) -> Any:
        directory = self._intent_dir(topic, partition)
        paginator = self.s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=directory):
            for obj in page.get("Contents", []):
                first, _, last = obj["Key"].removeprefix(directory).partition("-")
                yield int(first), int(last)
