"""Checking the archive: every offset of a topic in exactly one object.

Reads every object of the topic (all hour folders), counts each (partition, offset), and
reports, per partition, the offsets in ``[start, committed)`` that are missing and any
offset found more than once (anywhere, committed or not).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pinapp.archive.layout import ObjectKey
from pinapp.archive.records import decode_jsonl_gz

__all__ = ["VerifyReport", "verify_topic"]


def _ranges(offsets: list[int]) -> list[tuple[int, int]]:
    """Sorted offsets -> inclusive runs, for readable reports."""
    runs: list[tuple[int, int]] = []
    for o in offsets:
        if runs and o == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], o)
        else:
            runs.append((o, o))
    return runs


@dataclass
class VerifyReport:
    topic: str
    objects: int = 0
    records: int = 0
    gaps: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    duplicates: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.gaps and not self.duplicates


async def verify_topic(s3: Any, bucket: str, prefix: str, topic: str,
                       start: Mapping[int, int], committed: Mapping[int, int]) -> VerifyReport:
    """Verify ``topic``'s archive against its log start and committed offsets per partition."""
    report = VerifyReport(topic)
    seen: dict[int, Counter[int]] = {p: Counter() for p in committed}
    head = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    paginator = s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=f"{head}{topic}/"):
        for obj in page.get("Contents", []):
            key = ObjectKey.parse(obj["Key"])
            if key is None or key.topic != topic:
                continue
            body = await (await s3.get_object(Bucket=bucket, Key=obj["Key"]))["Body"].read()
            report.objects += 1
            for record in decode_jsonl_gz(body):
                seen.setdefault(record.partition, Counter())[record.offset] += 1
                report.records += 1
    for partition, counts in sorted(seen.items()):
        lo, hi = start.get(partition, 0), committed.get(partition, 0)
        missing = [o for o in range(lo, hi) if o not in counts]
        doubled = sorted(o for o, n in counts.items() if n > 1)
        if missing:
            report.gaps[partition] = _ranges(missing)
        if doubled:
            report.duplicates[partition] = _ranges(doubled)
    return report
