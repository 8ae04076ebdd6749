"""Shipping: read a batch, hand its lines to librdkafka, and wait until the broker acknowledged all.

At least once, as Pinterest's Singer: every line of a batch is acknowledged by all in-sync
replicas (``acks=all``, idempotent producer) before its watermark moves; any failure (an error
report for one of its lines, or lines still unacknowledged after ``request_timeout_s``) discards
the producer and sends everything after the watermark again. One batch per stream is
unacknowledged at a time, so duplicates come only from that batch, and a broker outage costs
no memory: the files wait on disk while the shipper retries (capped exponential backoff).

Why librdkafka (``confluent-kafka``, as ``kcat``): per line, Python runs only the key rule and
one ``produce()`` call. Batching, partitioning (``murmur2_random``: the Java client's default
partitioner, the one aiokafka and faust use, so a key lands where the topology expects it),
checksums and socket writes run on librdkafka's threads. With aiokafka all of that ran on
Singer's one thread and a line cost ~2.4 µs (docs/benchmarks.md). Only failed deliveries reach
Python code (``delivery.report.only.error``): a Python callback per line would cost more than
the line (confluent-kafka still takes the interpreter's lock once a line to free its state).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from config import Settings
from pinapp.dlq import dlq_headers
from pinapp.events import PIN_EVENT_TYPES
from pinapp.errors import PinappError
from pinapp.files import write_atomically
from pinapp.kafka import ensure_topics
from pinapp.singer.reader import Batch, Line, StreamReader
from pinapp.singer.watermark import Watermark

__all__ = ["NotAcknowledged", "Singer", "StreamStats", "line_key", "status_path"]

logger = logging.getLogger(__name__)


class _KeyFields(msgspec.Struct):
    """The fields the key rule reads, as any JSON value. msgspec skips the rest of a line
    without building it: about 0.4 µs a line against orjson's ~1 µs for the whole document."""

    event_type: Any = None
    user_id: Any = None
    pin_id: Any = None


class _WellFormedKeyFields(msgspec.Struct):
    """The same fields as a well-formed event has them: typed fields decode in ~0.27 µs
    against ~0.4 µs for ``Any`` ones. Any other line fails to decode and takes :func:`line_key`."""

    event_type: str
    user_id: str
    pin_id: str | None = None


_decode_key_fields = msgspec.json.Decoder(_KeyFields).decode
_decode_well_formed = msgspec.json.Decoder(_WellFormedKeyFields).decode


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


def _produce_lines(produce: Any, topic: str, lines: list[bytes]) -> None:
    """``produce`` every line with its key: the hot path, a million trips for a million-line file.

    :func:`line_key`'s rule, inlined for the lines of well-formed events (a function call a
    line costs ~0.1 µs); any other line goes through :func:`line_key` itself. The key is given
    as ``str``: librdkafka takes its UTF-8 bytes without a Python ``encode()``.
    """
    for line in lines:
        try:
            doc = _decode_well_formed(line)
        except msgspec.DecodeError:  # not JSON, not an object, a field missing or of another type
            key: str | bytes | None = line_key(line)
        else:
            pin_id = doc.pin_id
            key = pin_id if pin_id is not None and doc.event_type in PIN_EVENT_TYPES else doc.user_id
        produce(topic, line, key)


class NotAcknowledged(PinappError):
    """Lines of a batch were not acknowledged: the batch is sent again after the watermark."""


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
        self._producer: Producer | None = None
        self._failures: list[KafkaError] = []  # delivery errors of the current producer's lines
        self._last_heartbeat = 0.0

    # -- producer -----------------------------------------------------------------------------

    def _producer_config(self) -> dict[str, Any]:
        conf = self.conf
        return {
            "bootstrap.servers": self.settings.kafka.bootstrap,
            "client.id": f"pinapp-singer-{self.host}",
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": conf.linger_ms,
            "partitioner": "murmur2_random",  # the Java client's default: keyed lines land as the topology's do
            "message.timeout.ms": int(conf.request_timeout_s * 1000),  # then the line fails, and the batch is resent
            # Room for a whole batch, so produce() never finds the queue full (at most one batch is queued).
            "queue.buffering.max.messages": max(100_000, conf.batch_lines * 2),
            "queue.buffering.max.kbytes": max(65_536, conf.batch_bytes * 2 // 1024 + conf.dlq_max_bytes // 1024 + 1024),
            "delivery.report.only.error": True,
            "on_delivery": self._failed,
            "error_cb": self._client_error,
            "logger": logger,
        }

    async def _ready_producer(self) -> Producer:
        """The producer, created on first use with the topics' partitions already known.

        Without that, a new producer's first lines to a topic it has no metadata for took a
        second to be acknowledged in 6 of 16 tries (docs/benchmarks.md): the first batch of every
        (re)start, and the first after every failure, would wait for nothing.
        """
        if self._producer is None:
            self._failures = []
            producer = Producer(self._producer_config())
            try:
                for topic in (self.topic, self.dlq_topic, self.conf.status_topic):
                    await asyncio.to_thread(producer.list_topics, topic, self.conf.request_timeout_s)
            except BaseException:
                await asyncio.to_thread(_discard, producer)
                raise
            self._producer = producer
        return self._producer

    def _failed(self, err: KafkaError | None, msg: Message) -> None:
        """librdkafka's report of a line it could not deliver (the only reports asked for)."""
        if err is not None:
            self._failures.append(err)

    def _client_error(self, err: KafkaError) -> None:
        # Broker connections failing (librdkafka logs them, and reconnects by itself): a batch
        # that cannot be delivered in time fails through its delivery reports and is resent.
        logger.log(logging.ERROR if err.fatal() else logging.DEBUG, "singer: kafka client: %s", err)

    async def _reset_producer(self) -> None:
        """After a failure: a new producer (the old one may be wedged, as Singer's was after SSL errors)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await asyncio.to_thread(_discard, producer)

    # -- shipping -----------------------------------------------------------------------------

    def _produce_batch(self, producer: Producer, batch: Batch) -> int:
        """Hand every line of ``batch`` to librdkafka (or to the DLQ); returns how many were dead-lettered."""
        produce, topic = producer.produce, self.topic
        dead = 0
        for item in batch.items:
            if isinstance(item, Line):  # over-long past one read, or an unterminated tail
                dead += self._dead_letter(producer, item)
                continue
            lines, over_long = item.split(self.max_line, self.keep)
            for line in over_long:
                dead += self._dead_letter(producer, line)
            _produce_lines(produce, topic, lines)
        return dead

    def _dead_letter(self, producer: Producer, line: Line) -> int:
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
        producer.produce(self.dlq_topic, line.data, headers=headers)
        return 1

    async def _acknowledged(self, producer: Producer) -> None:
        """Wait until librdkafka holds no line of the batch; raise if any failed or is left."""
        # flush() blocks (without the GIL) until every line is delivered or failed: in a thread,
        # so the event loop stays free for signals.
        left = await asyncio.to_thread(producer.flush, self.conf.request_timeout_s + 5)
        if self._failures:
            raise NotAcknowledged(f"{len(self._failures)} lines failed, first: {self._failures[0]}")
        if left:
            raise NotAcknowledged(f"{left} lines still unacknowledged after {self.conf.request_timeout_s + 5:.0f}s")

    async def ship_once(self, stream: _Stream) -> int:
        """Send ``stream``'s next batch and wait for its acks (retrying until acknowledged).

        Returns the lines shipped: 0 when there was nothing to do.
        """

        def before_sleep(state: RetryCallState) -> None:
            stream.stats.errors += 1
            exc = state.outcome.exception() if state.outcome else None
            logger.warning("singer %s: batch not acknowledged (attempt %d: %r); resending everything "
                           "after the watermark", stream.reader.spec.name, state.attempt_number, exc)

        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((KafkaException, NotAcknowledged, BufferError, OSError)),
            wait=wait_exponential_jitter(multiplier=0.2, jitter=0.2, max=self.conf.retry_max_s),
            before_sleep=before_sleep, reraise=True,
        ):
            with attempt:
                batch = stream.reader.read_batch(self.conf.batch_lines, self.conf.batch_bytes)
                if not batch:
                    return 0
                try:
                    producer = await self._ready_producer()
                    dead = self._produce_batch(producer, batch)
                    await self._acknowledged(producer)
                except BaseException:  # the next read starts at the watermark again: all of it is resent
                    await self._reset_producer()
                    raise
                stream.reader.advance(batch, save=False)
                await stream.reader.watermark.save_in_thread()
                stream.stats.lines_shipped += batch.lines - dead
                stream.stats.dead_lettered += dead
                stream.stats.bytes_shipped += batch.size
                stream.stats.last_shipped_at = time.time()
                return batch.lines
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    async def run(self, stop: asyncio.Event) -> None:
        """Ship until ``stop`` is set; the watermark is always at an acknowledged line boundary.

        A stop takes effect between batches, so the batch being shipped is acknowledged first
        and a restart sends nothing twice.
        """
        await ensure_topics(self.settings.kafka, [self.topic, self.dlq_topic, self.conf.status_topic])
        with contextlib.suppress(KafkaException):  # connected before the first line; else the first batch retries
            await self._ready_producer()
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
            await self.heartbeat(final=True)
            if self._producer is not None:  # heartbeats still queued, best effort
                await asyncio.to_thread(self._producer.flush, 2)
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
        try:  # its own delivery report: a lost heartbeat is not a failed batch
            producer = await self._ready_producer()
            producer.produce(self.conf.status_topic, body, self.host.encode(), on_delivery=_heartbeat_sent)
        except (KafkaException, BufferError) as exc:  # the broker is down: the next batch retries loudly
            logger.debug("singer: heartbeat not sent: %r", exc)


def _discard(producer: Producer) -> None:
    """Drop what ``producer`` still holds (its lines are resent from the watermark)."""
    with contextlib.suppress(KafkaException):
        producer.purge()
        producer.flush(0)  # serves the purged lines' reports


def _heartbeat_sent(err: KafkaError | None, msg: Message) -> None:
    if err is not None:  # the broker is down: the next batch retries loudly
        logger.debug("singer: heartbeat not delivered: %s", err)
