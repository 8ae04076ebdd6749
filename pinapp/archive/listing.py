"""What the S3 archive holds: its objects by topic and day, and its hour folders summarized.

Every reader of the archive lists it here (``archive ls``, ``archive replay``, ``archive
verify`` and the audit): the layout's prefixes (:mod:`pinapp.archive.layout`) in one place,
over one paginated listing. ``s3`` is an aiobotocore S3 client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from pinapp.archive.layout import ObjectKey

__all__ = ["FolderSummary", "archived_keys", "folder_summaries", "keys_between", "topic_prefix"]


def topic_prefix(prefix: str, topic: str, day: date | None = None) -> str:
    """The S3 prefix of ``topic``'s archive (``archive.prefix``), or of one day of it."""
    head = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    return f"{head}{topic}/" + (f"dt={day.isoformat()}/" if day is not None else "")


async def _listed(s3: Any, bucket: str, prefix: str) -> AsyncIterator[dict[str, Any]]:
    async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            yield obj


async def archived_keys(
    s3: Any, bucket: str, prefix: str, topic: str, day: date | None = None
) -> AsyncIterator[ObjectKey]:
    """The archive objects of ``topic`` (of one day, or all), in S3's key order."""
    async for obj in _listed(s3, bucket, topic_prefix(prefix, topic, day)):
        key = ObjectKey.parse(obj["Key"])
        if key is not None and key.topic == topic:
            yield key


async def keys_between(
    s3: Any, bucket: str, prefix: str, topic: str, first_day: date, last_day: date
) -> list[ObjectKey]:
    """The archive objects of ``topic`` in the days ``first_day``..``last_day``, in replay order
    (by partition, then offset)."""
    keys: list[ObjectKey] = []
    day = first_day
    while day <= last_day:
        keys += [key async for key in archived_keys(s3, bucket, prefix, topic, day)]
        day += timedelta(days=1)
    return sorted(keys, key=lambda k: (k.partition, k.first, k.folder))


@dataclass(frozen=True, slots=True)
class FolderSummary:
    """One hour folder of the archive: ``url`` is its ``s3://`` address."""

    url: str
    objects: int
    bytes: int
    complete: bool  # its _SUCCESS marker is written: every partition has passed the hour


async def folder_summaries(
    s3: Any, bucket: str, prefix: str, topic: str, day: date | None = None
) -> list[FolderSummary]:
    """Every hour folder of ``topic`` (of one day, or all), in order, with its objects' count and size."""
    base = topic_prefix(prefix, topic)
    sizes: dict[str, list[int]] = {}
    complete: set[str] = set()
    async for obj in _listed(s3, bucket, topic_prefix(prefix, topic, day)):
        if obj["Key"].endswith("/_SUCCESS"):
            complete.add(obj["Key"].removeprefix(base).rsplit("/", 1)[0])
        elif (key := ObjectKey.parse(obj["Key"])) is not None and key.topic == topic:
            stats = sizes.setdefault(key.folder, [0, 0])
            stats[0] += 1
            stats[1] += obj["Size"]
    return [
        FolderSummary(f"s3://{bucket}/{base}{folder}/", n, size, folder in complete)
        for folder, (n, size) in sorted(sizes.items())
    ]
