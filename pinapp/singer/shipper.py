"""Shipping: read a batch, send it, and while the broker acknowledges it, build the next.

At least once, as Pinterest's Singer: a batch is acknowledged by all in-sync replicas
(``acks=all``, idempotent producer) before its watermark moves; any failure recreates the
producer and sends everything after the watermark again. Duplicates can come only from the
two batches unacknowledged at a crash or a broker failure; the topology's dedup drops them.

At most two batches per stream are in memory (the one waiting for its acks and the one being
built), so a broker outage costs no memory: the shipper retries (capped exponential backoff)
and the files wait on disk. Overlapping the two was worth ~30% with 20,000-line batches (less
with bigger ones): waiting for the last acks and fsyncing the watermark take ~20 ms a batch,
in which the next batch is read and keyed.

The per-line path is what sets the rate (a million-line file is a million trips through it):
lines stay in the chunks they were read in until ``bytes.split``, the key rule decodes only its
three fields (msgspec), partitions of keys seen before come from a dict, and records go
straight into aiokafka's C record-batch builder, one open batch per partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from itertools import compress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from config import Settings
from pinapp.dlq import dlq_headers
from pinapp.events import PIN_EVENT_TYPES
from pinapp.files import write_atomically
from pinapp.kafka import ensure_topics
from pinapp.singer.reader import Batch, Line, StreamReader
from pinapp.singer.watermark import Watermark

__all__ = ["Singer", "StreamStats", "line_key", "status_path"]

logger = logging.getLogger(__name__)

_PARTITION_CACHE = 200_000  # keys whose partition is remembered (~30 MB at most)


class _KeyFields(msgspec.Struct):
    """The fields the key rule reads. msgspec skips the rest of a line without building it:
    about 0.4 µs a line against orjson's ~1 µs for the whole document."""

    event_type: Any = None
    user_id: Any = None
    pin_id: Any = None


_decode_key_fields = msgspec.json.Decoder(_KeyFields).decode


def line_key(line: bytes) -> bytes | None:
    """The topology's key rule (``pin_id``, else ``user_id``) for a JSON line; ``None`` if unreadable.

    The same rule as :func:`pinapp.events.routing_key`, on raw bytes: it runs once per shipped
    line, and validation stays in the topology (an unreadable line is shipped without a key
    and dead-lettered there).
    """
    try:
        doc = _decode_key_fields(line)
    except msgspec.DecodeError:  # not JSON, or not an object
        return None
    event_type, user_id, pin_id = doc.event_type, doc.user_id, doc.pin_id
    if type(event_type) is not str or type(user_id) is not str:
        return None
    if type(pin_id) is str and event_type in PIN_EVENT_TYPES:
        return pin_id.encode()
    return user_id.encode()


_NO_HEADERS: list[tuple[str, bytes]] = []


class _OpenBatch:
    """One partition's record batch being filled, through aiokafka's C builder.

    ``BatchBuilder.append`` costs ~1 µs a record in Python wrapping; its C builder's own
    ``append`` ~0.15 µs. The count is kept here and handed back to the wrapper before sending
    (``_builder`` and ``_relative_offset`` are aiokafka 0.14 internals, pinned).
    """

    __slots__ = ("builder", "append", "count")

    def __init__(self, builder: Any) -> None:
        self.builder = builder
        self.append = builder._builder.append  # (offset, timestamp, key, value, headers) -> None when full
        self.count = 0

    def add(self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> bool:
        if self.append(self.count, None, key, value, headers) is None:
            return False
        self.count += 1
        return True

    def close(self) -> Any:
        self.builder._relative_offset = self.count
        return self.builder


class _RecordBatches:
    """Open record batches per topic and partition; a full one is sent at once."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.open: dict[str, dict[int, _OpenBatch]] = {}
        self.sent: list[asyncio.Future[Any]] = []

    def of(self, topic: str) -> dict[int, _OpenBatch]:
        return self.open.setdefault(topic, {})

    async def append(self, topic: str, partition: int, key: bytes | None, value: bytes,
                     headers: list[tuple[str, bytes]]) -> None:
        """Append one record, sending the partition's batch first if it is full."""
        batches = self.of(topic)
        batch = batches.get(partition)
        if batch is not None and batch.add(key, value, headers):
            return
        if batch is not None:
            await self._send(topic, partition, batch)
        batch = batches[partition] = _OpenBatch(self.producer.create_batch())
        if not batch.add(key, value, headers):  # cannot happen: lines are cut below max_batch_size
            raise ValueError(f"a record of {len(value)} bytes does not fit an empty batch")

    async def _send(self, topic: str, partition: int, batch: _OpenBatch) -> None:
        self.sent.append(await self.producer.send_batch(batch.close(), topic, partition=partition))

    async def send_open(self) -> None:
        """Send every batch still open (partly filled)."""
        for topic, batches in self.open.items():
            for partition, batch in batches.items():
                if batch.count:
                    await self._send(topic, partition, batch)
        self.open.clear()

    async def acknowledged(self) -> None:
        """Wait until every sent batch is acknowledged (raises the first failure)."""
        await asyncio.gather(*self.sent)


@dataclass
class _InFlight:
    """A batch sent and not yet acknowledged."""

    batch: Batch
    records: _RecordBatches
    dead: int  # of its lines, dead-lettered


def status_path(settings: Settings) -> Path:
    return settings.singer.data_dir / "status.json"


@dataclass
class StreamStats:
    lines_shipped: int = 0
    bytes_shipped: int = 0
    dead_lettered: int = 0
    errors: int = 0
    last_shipped_at: float | None = None


@dataclass
class _Stream:
    reader: StreamReader
    stats: StreamStats = field(default_factory=StreamStats)
    in_flight: _InFlight | None = None


class Singer:
    """Ships every configured stream until stopped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conf = settings.singer
        self.topic = self.conf.topic or settings.kafka.events_topic
        self.dlq_topic = settings.kafka.dlq_topic
        self.max_line = self.conf.max_line_bytes or settings.pipeline.max_event_bytes
        self.keep = min(self.conf.dlq_max_bytes, max(self.max_line, 1))  # of an over-long line, for the DLQ
        self.streams = [
            _Stream(StreamReader(spec, Watermark.load(self.conf.data_dir / f"{spec.name}.watermark.json"),
                                 max_line_bytes=self.max_line, keep=self.keep,
                                 partial_line_grace_s=self.conf.partial_line_grace_s))
            for spec in self.conf.streams
        ]
        self.host = socket.gethostname()
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = DefaultPartitioner()
        self._partitions: list[int] = []  # the events topic's, as of the last batch
        self._partition_of: dict[bytes, int] = {}  # key -> partition in the events topic
        self._last_heartbeat = 0.0

    # -- producer -----------------------------------------------------------------------------

    async def _get_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.settings.kafka.bootstrap, acks="all", enable_idempotence=True,
                linger_ms=self.conf.linger_ms, max_batch_size=1024 * 1024,
                request_timeout_ms=int(self.conf.request_timeout_s * 1000),
                client_id=f"pinapp-singer-{self.host}",
            )
            try:
                await producer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _reset_producer(self) -> None:
        """After a failure: a new producer (the old one may be wedged, as Singer's was after SSL errors)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 10)

    # -- shipping -----------------------------------------------------------------------------

    async def _send_batch(self, batch: Batch) -> _InFlight:
        """Send every line of ``batch`` (or dead-letter it), without waiting for the acks."""
        producer = await self._get_producer()
        partitions = sorted(await producer.partitions_for(self.topic))
        if partitions != self._partitions:  # partitions were added: keys move, as for every producer
            self._partitions, self._partition_of = partitions, {}
        records = _RecordBatches(producer)
        dead = 0
        for item in batch.items:
            if isinstance(item, Line):  # over-long past one read, or an unterminated tail
                dead += await self._dead_letter(records, item)
                continue
            lines = item.data.split(b"\n")
            lines.pop()  # after the chunk's last newline
            if max(map(len, lines)) > self.max_line:  # rare: dead-letter the over-long, ship the rest
                for line in item.over_long(lines, self.max_line, self.keep):
                    dead += await self._dead_letter(records, line)
                lines = list(compress(lines, map(self.max_line.__ge__, map(len, lines))))
            await self._send_lines(records, lines)
        await records.send_open()
        return _InFlight(batch, records, dead)

    async def _send_lines(self, records: _RecordBatches, lines: list[bytes]) -> None:
        """The hot path: complete lines within the size limit, keyed and partitioned."""
        partitions, partition_of, partitioner = self._partitions, self._partition_of, self._partitioner
        topic = self.topic
        batches = records.of(topic)
        for line in lines:
            key = line_key(line)
            partition = partition_of.get(key)  # type: ignore[arg-type]
            if partition is None:  # murmur2 in pure Python, ~1.5 µs: keys repeat a lot
                partition = partitioner(key, partitions, partitions)
                if key is not None:  # no key: a random partition each time, as ``send`` does
                    if len(partition_of) >= _PARTITION_CACHE:
                        partition_of.clear()
                    partition_of[key] = partition
            batch = batches.get(partition)
            # ``_OpenBatch.add`` inlined: a method call per line costs ~3% here.
            if batch is not None and batch.append(batch.count, None, key, line, _NO_HEADERS) is not None:
                batch.count += 1
            else:  # no open batch for the partition, or it is full
                await records.append(topic, partition, key, line, _NO_HEADERS)

    async def _dead_letter(self, records: _RecordBatches, line: Line) -> int:
        """An over-long line, or the unterminated tail of a rotated file, to the DLQ (returns 1).

        Such lines never reach the hot path: the reader hands them over as single lines, and a
        chunk holding one has it taken out first.
        """
        if line.unterminated:
            kind, text = "unterminated", f"unterminated last line ({line.length} bytes) of a rotated file"
        else:
            kind, text = "too_large", (f"line of {line.length} bytes is over the {self.max_line}-byte limit"
                                       + (f" (kept its first {len(line.data)} bytes)"
                                          if len(line.data) < line.length else ""))
        headers = dlq_headers(text, kind=kind, stage="singer", file=line.path, offset=line.offset, host=self.host)
        partitions = sorted(await records.producer.partitions_for(self.dlq_topic))
        await records.append(self.dlq_topic, self._partitioner(None, partitions, partitions), None,
                             line.data, headers)
        return 1

    async def ship_once(self, stream: _Stream) -> int:
        """Send ``stream``'s next batch, then settle the one before it (retrying until acknowledged).

        Returns the lines sent or acknowledged: 0 when there was nothing to do.
        """

        def before_sleep(state: RetryCallState) -> None:
            stream.stats.errors += 1
            exc = state.outcome.exception() if state.outcome else None
            logger.warning("singer %s: batches not acknowledged (attempt %d: %r); resending everything "
                           "after the watermark", stream.reader.spec.name, state.attempt_number, exc)

        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((KafkaError, OSError, asyncio.TimeoutError)),
            wait=wait_exponential_jitter(multiplier=0.2, jitter=0.2, max=self.conf.retry_max_s),
            before_sleep=before_sleep, reraise=True,
        ):
            with attempt:
                try:
                    batch = stream.reader.read_batch(self.conf.batch_lines, self.conf.batch_bytes)
                    previous, stream.in_flight = stream.in_flight, (await self._send_batch(batch) if batch else None)
                    settled = await self._settle(stream, previous) if previous is not None else 0
                except BaseException:
                    stream.in_flight = None
                    stream.reader.rewind()
                    await self._reset_producer()
                    raise
                return batch.lines + settled
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    async def _settle(self, stream: _Stream, sent: _InFlight) -> int:
        """Wait for ``sent``'s acks, then move the watermark past it (durably); returns its lines."""
        await sent.records.acknowledged()
        stream.reader.advance(sent.batch, save=False)
        await stream.reader.watermark.save_in_thread()
        stream.stats.lines_shipped += sent.batch.lines - sent.dead
        stream.stats.dead_lettered += sent.dead
        stream.stats.bytes_shipped += sent.batch.size
        stream.stats.last_shipped_at = time.time()
        return sent.batch.lines

    async def run(self, stop: asyncio.Event) -> None:
        """Ship until ``stop`` is set; the watermark is always at an acknowledged line boundary."""
        await ensure_topics(self.settings.kafka, [self.topic, self.dlq_topic, self.conf.status_topic])
        logger.info("singer: shipping %s to %s", ", ".join(s.reader.spec.name for s in self.streams), self.topic)
        try:
            while not stop.is_set():
                shipped = 0
                for stream in self.streams:
                    shipped += await self.ship_once(stream)
                    if self.conf.retention_s:
                        for path in stream.reader.delete_shipped(self.conf.retention_s):
                            logger.info("singer %s: deleted %s (shipped, older than %.0fs)",
                                        stream.reader.spec.name, path, self.conf.retention_s)
                if time.monotonic() - self._last_heartbeat >= self.conf.heartbeat_interval_s:
                    await self.heartbeat()
                if not shipped:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.conf.poll_interval_s)
        finally:
            for stream in self.streams:  # on a clean stop, leave nothing to send twice
                sent, stream.in_flight = stream.in_flight, None
                if sent is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self._settle(stream, sent), self.conf.request_timeout_s)
            await self.heartbeat(final=True)
            await self._reset_producer()

    # -- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        streams = []
        for s in self.streams:
            files = s.reader.files()
            streams.append({
                "name": s.reader.spec.name, "files": len(files), "bytes_behind": s.reader.bytes_behind(files),
                "lines_shipped": s.stats.lines_shipped, "bytes_shipped": s.stats.bytes_shipped,
                "dead_lettered": s.stats.dead_lettered, "errors": s.stats.errors,
                "resets": s.reader.resets, "last_shipped_at": s.stats.last_shipped_at,
            })
        return {"host": self.host, "pid": os.getpid(), "at": time.time(), "topic": self.topic, "streams": streams}

    async def heartbeat(self, *, final: bool = False) -> None:
        """The status, to the status topic (best effort) and to ``status.json`` (always)."""
        self._last_heartbeat = time.monotonic()
        doc = self.status()
        doc["stopped"] = final
        body = orjson.dumps(doc)
        write_atomically(status_path(self.settings), body)
        if final:
            return
        try:
            producer = await self._get_producer()
            await producer.send(self.conf.status_topic, body, key=self.host.encode())
        except (KafkaError, OSError) as exc:  # the broker is down: the next batch retries loudly
            logger.debug("singer: heartbeat not sent: %r", exc)
