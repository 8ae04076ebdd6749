"""The archived form of one Kafka record: a JSON line that keeps the record exactly.

``{"topic", "partition", "offset", "timestamp" (ms), "key", "value"}``, where ``key`` and
``value`` are the original bytes as UTF-8 text, or, when they are not valid UTF-8, base64
under ``key_b64`` / ``value_b64``. Malformed inputs (the DLQ's whole point) survive intact,
and replay produces byte-identical records.
"""

from __future__ import annotations

import base64
import gzip
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import orjson

__all__ = ["ArchivedRecord", "decode_jsonl_gz", "encode_jsonl_gz"]


@dataclass(frozen=True, slots=True)
class ArchivedRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


def _field(doc: dict[str, object], name: str, raw: bytes | None) -> None:
    if raw is None:
        doc[name] = None
        return
    try:
        doc[name] = raw.decode("utf-8")
    except UnicodeDecodeError:
        doc[f"{name}_b64"] = base64.b64encode(raw).decode("ascii")


def _read(doc: dict[str, object], name: str) -> bytes | None:
    if f"{name}_b64" in doc:
        return base64.b64decode(str(doc[f"{name}_b64"]))
    text = doc.get(name)
    return None if text is None else str(text).encode("utf-8")


def encode_jsonl_gz(records: Iterable[ArchivedRecord], *, level: int = 6) -> bytes:
    """Gzip-compressed JSON lines, one per record, in the order given."""
    lines = []
    for r in records:
        doc: dict[str, object] = {"topic": r.topic, "partition": r.partition, "offset": r.offset,
                                  "timestamp": r.timestamp_ms}
        _field(doc, "key", r.key)
        _field(doc, "value", r.value)
        lines.append(orjson.dumps(doc))
    body = b"\n".join(lines) + (b"\n" if lines else b"")
    # mtime=0: the same records always give the same bytes, so a re-upload is identical.
    return gzip.compress(body, compresslevel=level, mtime=0)


def decode_jsonl_gz(data: bytes) -> Iterator[ArchivedRecord]:
    """The records of an object written by :func:`encode_jsonl_gz`."""
    for line in gzip.decompress(data).splitlines():
        doc = orjson.loads(line)
        yield ArchivedRecord(doc["topic"], doc["partition"], doc["offset"], doc["timestamp"],
                             _read(doc, "key"), _read(doc, "value"))
