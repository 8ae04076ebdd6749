"""The archived form of Kafka records: gzip JSON lines (default) or Parquet, both lossless.

Design notes: docs/architecture.md, "pinapp/archive/records.py".
"""

from __future__ import annotations

import base64
import gzip
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["FORMATS", "ArchivedRecord", "decode", "decode_jsonl_gz", "encode", "encode_jsonl_gz"]

#: Object formats, named by their file extension.
FORMATS: Final = ("jsonl.gz", "parquet")


Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class ArchivedRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()


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
        doc: dict[str, object] = {
            "topic": r.topic,
            "partition": r.partition,
            "offset": r.offset,
            "timestamp": r.timestamp_ms,
        }
        _field(doc, "key", r.key)
        _field(doc, "value", r.value)
        if r.headers:
            headers = []
            for name, raw in r.headers:
                header: dict[str, object] = {"key": name}
                _field(header, "value", raw)
                headers.append(header)
            doc["headers"] = headers
        lines.append(orjson.dumps(doc))
    body = b"\n".join(lines) + (b"\n" if lines else b"")
    # mtime=0: the same records always give the same bytes, so a re-upload is identical.
    return gzip.compress(body, compresslevel=level, mtime=0)


def decode_jsonl_gz(data: bytes) -> Iterator[ArchivedRecord]:
    """The records of an object written by :func:`encode_jsonl_gz`."""
    for line in gzip.decompress(data).splitlines():
        doc = orjson.loads(line)
        headers = tuple((h["key"], _read(h, "value") or b"") for h in doc.get("headers", ()))
        yield ArchivedRecord(
            doc["topic"],
            doc["partition"],
            doc["offset"],
            doc["timestamp"],
            _read(doc, "key"),
            _read(doc, "value"),
            headers,
        )


_PARQUET_SCHEMA: Final = pa.schema(
    [
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("key", pa.binary()),
        ("value", pa.binary()),
        ("headers", pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))),
    ]
)


def encode_parquet(records: Sequence[ArchivedRecord]) -> bytes:
    """One Parquet file (zstd, one row group) holding ``records`` in the order given."""
    table = pa.Table.from_pydict(
        {
            "topic": [r.topic for r in records],
            "partition": [r.partition for r in records],
            "offset": [r.offset for r in records],
            "timestamp": [r.timestamp_ms for r in records],
            "key": [r.key for r in records],
            "value": [r.value for r in records],
            "headers": [[{"key": k, "value": v} for k, v in r.headers] for r in records],
        },
        schema=_PARQUET_SCHEMA,
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", row_group_size=max(len(records), 1))
    return sink.getvalue()


def decode_parquet(data: bytes) -> Iterator[ArchivedRecord]:
    """The records of an object written by :func:`encode_parquet`."""
    table = pq.read_table(io.BytesIO(data))
    columns = {name: table.column(name).to_pylist() for name in _PARQUET_SCHEMA.names}
    for i in range(table.num_rows):
        ts = columns["timestamp"][i]
        headers = tuple((h["key"], h["value"]) for h in columns["headers"][i] or ())
        yield ArchivedRecord(
            columns["topic"][i],
            columns["partition"][i],
            columns["offset"][i],
            round(ts.timestamp() * 1000),
            columns["key"][i],
            columns["value"][i],
            headers,
        )


def encode(records: Sequence[ArchivedRecord], fmt: str) -> bytes:
    """``records`` as one object body in format ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "parquet":
        return encode_parquet(records)
    if fmt == "jsonl.gz":
        return encode_jsonl_gz(records)
    raise ValueError(f"unknown archive format {fmt!r}; one of {FORMATS}")


def decode(data: bytes, fmt: str) -> Iterator[ArchivedRecord]:
    """The records of an object body in format ``fmt``."""
    if fmt == "parquet":
        return decode_parquet(data)
    if fmt == "jsonl.gz":
        return decode_jsonl_gz(data)
    raise ValueError(f"unknown archive format {fmt!r}; one of {FORMATS}")
