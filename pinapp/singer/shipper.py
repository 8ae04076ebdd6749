"""Shipping: read a batch, hand its lines to librdkafka, and wait until the broker acknowledged all.

Design notes: docs/architecture.md, "pinapp/singer/shipper.py".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from prometheus_client import REGISTRY, start_http_server
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from config import KafkaSettings, Settings
from pinapp.adapters.files import write_atomically
from pinapp.adapters.kafka import ensure_topics, librdkafka_options
from pinapp.domain.dead_letters import dlq_headers
from pinapp.errors import PinappError
from pinapp.singer._rdkafka import KafkaError, Producer, librdkafka_version
from pinapp.singer.keys import PIN_TYPES, produce_lines
from pinapp.singer.reader import Batch, Line, StreamReader
from pinapp.singer.status import StreamStats, heartbeat_doc, status_path, stream_status
from pinapp.singer.watermark import Watermark
from pinapp.telemetry import metrics

__all__ = ["NotAcknowledged", "Singer", "scram_hint"]

logger = logging.getLogger(__name__)


#: librdkafka's log levels (syslog's) as the logging module's.
_LOG_LEVELS = {
    0: logging.CRITICAL,
    1: logging.CRITICAL,
    2: logging.CRITICAL,
    3: logging.ERROR,
    4: logging.WARNING,
    5: logging.INFO,
    6: logging.INFO,
    7: logging.DEBUG,
}


class NotAcknowledged(PinappError):
    """Lines of a batch were not acknowledged: the batch is sent again after the watermark."""


@dataclass
class _Stream:
    reader: StreamReader
    stats: StreamStats = field(default_factory=StreamStats)
    ahead: Batch | None = None  # read while the batch before was being acknowledged


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
            _Stream(
                StreamReader(
                    spec,
                    Watermark.load(self.conf.data_dir / f"{spec.name}.watermark.json"),
                    max_line_bytes=self.max_line,
                    keep=self.keep,
                    partial_line_grace_s=self.conf.partial_line_grace_s,
                )
            )
            for spec in self.conf.streams
        ]
        self.host = socket.gethostname()
        self._producer: Producer | None = None
        self._last_heartbeat = 0.0
        self._auth_hint = scram_hint(settings.kafka)

    # -- producer -----------------------------------------------------------------------------

    def _producer_config(self) -> dict[str, str]:
        conf = self.conf
        return {
            **librdkafka_options(self.settings.kafka),
            "client.id": f"pinapp-singer-{self.host}",
            "acks": "all",
            "enable.idempotence": "true",
            "linger.ms": str(conf.linger_ms),
            "partitioner": "murmur2_random",  # the Java client's default: keyed lines land as the topology's do
            # Then the line fails, and the batch is resent.
            "message.timeout.ms": str(int(conf.request_timeout_s * 1000)),
            # A request a broker has not answered in this long is given up, and its lines are sent
            # again, to the partition's new leader, inside message.timeout.ms. librdkafka's 60 s
            # (30 s to connect) let a hung leader hold each batch until its lines timed out.
            "socket.timeout.ms": str(int(self.settings.kafka.request_timeout_s * 1000)),
            "socket.connection.setup.timeout.ms": str(int(self.settings.kafka.request_timeout_s * 1000)),
            # Room for a whole batch, so produce() never finds the queue full (at most one batch is queued).
            "queue.buffering.max.messages": str(max(100_000, conf.batch_lines * 2)),
            "queue.buffering.max.kbytes": str(
                max(65_536, conf.batch_bytes * 2 // 1024 + conf.dlq_max_bytes // 1024 + 1024)
            ),
        }

    async def _ready_producer(self) -> Producer:
        """The producer, created on first use with the topics' partitions already known.

        Without that, a new producer's first lines to a topic it has no metadata for took a
        second to be acknowledged in 6 of 16 tries (librdkafka 2.8, docs/benchmarks.md): the first batch of every
        (re)start, and the first after every failure, would wait for nothing.
        """
        if self._producer is None:
            producer = Producer(self._producer_config(), PIN_TYPES)
            try:
                for topic in (self.topic, self.dlq_topic, self.conf.status_topic):
                    await asyncio.to_thread(producer.wait_for_topic, topic, self.conf.request_timeout_s)
            except BaseException:
                await asyncio.to_thread(_discard, producer)
                raise
            finally:
                _forward_logs(producer, self._auth_hint)
            self._producer = producer
        return self._producer

    async def _reset_producer(self) -> None:
        """After a failure: a new producer (the old one may be wedged, as Singer's was after SSL errors)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await asyncio.to_thread(_discard, producer)

    # -- shipping -----------------------------------------------------------------------------

    def _produce_batch(self, producer: Producer, batch: Batch) -> int:
        """Hand every line of ``batch`` to librdkafka (or to the DLQ); returns how many were dead-lettered."""
        dead = 0
        for item in batch.items:
            if isinstance(item, Line):  # over-long past one read, or an unterminated tail
                dead += self._dead_letter(producer, item)
                continue
            lines, over_long = item.split(self.max_line, self.keep)
            for line in over_long:
                dead += self._dead_letter(producer, line)
            produce_lines(producer, self.topic, lines)
        return dead

    def _dead_letter(self, producer: Producer, line: Line) -> int:
        """An over-long line, or the unterminated tail of a rotated file, to the DLQ (returns 1).

        Such lines never reach the hot path: the reader hands them over as single lines, and a
        chunk holding one has it taken out first.
        """
        if line.unterminated:
            kind, text = "unterminated", f"unterminated last line ({line.length} bytes) of a rotated file"
        else:
            kind, text = (
                "too_large",
                (
                    f"line of {line.length} bytes is over the {self.max_line}-byte limit"
                    + (f" (kept its first {len(line.data)} bytes)" if len(line.data) < line.length else "")
                ),
            )
        headers = dlq_headers(text, kind=kind, stage="singer", file=line.path, offset=line.offset, host=self.host)
        producer.produce(self.dlq_topic, line.data, headers=headers)
        return 1

    async def _acknowledged(self, producer: Producer, stream: _Stream, batch: Batch) -> None:
        """Wait until librdkafka holds no line of ``batch``; raise if any failed or is left.

        The wait runs in a thread, without Python's lock (delivery reports are C only): the next
        batch is read meanwhile (``stream.ahead``), and nothing of it is sent before this one is
        acknowledged, so duplicates still come from one batch at most.
        """
        flushing = asyncio.get_running_loop().run_in_executor(None, producer.flush, self.conf.request_timeout_s + 5)
        try:
            stream.ahead = stream.reader.read_batch(self.conf.batch_lines, self.conf.batch_bytes, after=batch)
        except OSError as exc:  # read again, and reported, when it is the batch's turn
            logger.debug("singer %s: reading ahead failed: %r", stream.reader.spec.name, exc)
        left = await flushing
        _forward_logs(producer, self._auth_hint)
        failed, first, heartbeats = producer.take_failures()
        if heartbeats:  # the broker is down: the batch retries loudly
            logger.debug("singer: %d heartbeat(s) not delivered", heartbeats)
        if fatal := producer.fatal_error():
            raise NotAcknowledged(f"the producer failed for good: {fatal}")
        if failed:
            raise NotAcknowledged(f"{failed} lines failed, first: {first}")
        if left:
            raise NotAcknowledged(f"{left} lines still unacknowledged after {self.conf.request_timeout_s + 5:.0f}s")

    async def ship_once(self, stream: _Stream) -> int:
        """Send ``stream``'s next batch and wait for its acks (retrying until acknowledged).

        Returns the lines shipped: 0 when there was nothing to do.
        """

        def before_sleep(state: RetryCallState) -> None:
            stream.stats.errors += 1
            exc = state.outcome.exception() if state.outcome else None
            logger.warning(
                "singer %s: batch not acknowledged (attempt %d: %r); resending everything after the watermark",
                stream.reader.spec.name,
                state.attempt_number,
                exc,
            )

        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((KafkaError, NotAcknowledged, BufferError, OSError)),
            wait=wait_exponential_jitter(multiplier=0.2, jitter=0.2, max=self.conf.retry_max_s),
            before_sleep=before_sleep,
            reraise=True,
        ):
            with attempt:
                batch, stream.ahead = stream.ahead, None
                if not batch or not stream.reader.follows(batch):
                    batch = stream.reader.read_batch(self.conf.batch_lines, self.conf.batch_bytes)
                if not batch:
                    return 0
                try:
                    producer = await self._ready_producer()
                    dead = self._produce_batch(producer, batch)
                    await self._acknowledged(producer, stream, batch)
                except BaseException:  # the next read starts at the watermark again: all of it is resent
                    stream.ahead = None
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
        if self.conf.metrics_port:
            self._serve_metrics()
        with contextlib.suppress(KafkaError):  # connected before the first line; else the first batch retries
            await self._ready_producer()
        logger.info(
            "singer: shipping %s to %s (librdkafka %s)",
            ", ".join(s.reader.spec.name for s in self.streams),
            self.topic,
            librdkafka_version,
        )
        try:
            while not stop.is_set():
                shipped = 0
                for stream in self.streams:
                    shipped += await self.ship_once(stream)
                    if self.conf.retention_s:
                        for path in stream.reader.delete_shipped(self.conf.retention_s):
                            logger.info(
                                "singer %s: deleted %s (shipped, older than %.0fs)",
                                stream.reader.spec.name,
                                path,
                                self.conf.retention_s,
                            )
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

    def _serve_metrics(self) -> None:
        """``/metrics`` on ``singer.metrics_host:metrics_port`` (a daemon thread, for the process's
        life): the streams' status, read at each scrape."""
        REGISTRY.register(metrics.SingerCollector(lambda: self.status()["streams"]))
        try:
            start_http_server(self.conf.metrics_port, addr=self.conf.metrics_host)
        except OSError as exc:
            raise PinappError(
                f"singer.metrics_port={self.conf.metrics_port}: cannot listen on {self.conf.metrics_host} "
                f"({exc.strerror}); set PINAPP_SINGER__METRICS_PORT to a free port, or 0 for no /metrics"
            ) from None
        logger.info("singer: /metrics on %s:%d", self.conf.metrics_host, self.conf.metrics_port)

    def status(self) -> dict[str, Any]:
        streams = [stream_status(s.reader, s.stats) for s in self.streams]
        return heartbeat_doc(self.host, self.topic, streams)

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
            producer.produce(self.conf.status_topic, body, self.host.encode(), heartbeat=True)
        except (KafkaError, BufferError) as exc:  # the broker is down: the next batch retries loudly
            logger.debug("singer: heartbeat not sent: %r", exc)


def _discard(producer: Producer) -> None:
    """Drop what ``producer`` still holds (its lines are resent from the watermark), and close it."""
    producer.purge()
    producer.close()


def _forward_logs(producer: Producer, auth_hint: str | None = None) -> None:
    """librdkafka's log lines since the last call, to this module's logger.

    They are kept in C as librdkafka writes them (from its own threads, where Python may not
    run) and forwarded here, after each batch and each new producer. Broker connections failing
    show here (librdkafka reconnects by itself; a batch not delivered in time is resent). A
    refused SASL login is followed by ``auth_hint``, when there is one (:func:`scram_hint`).
    """
    refused = False
    for level, facility, message in producer.take_logs():
        logger.log(_LOG_LEVELS.get(level, logging.INFO), "singer: librdkafka %s: %s", facility, message)
        refused = refused or "SASL authentication error" in message
    if refused and auth_hint:
        logger.error("singer: %s", auth_hint)


#: librdkafka before 2.6.1 repeats its own nonce in SCRAM's client-final message; Kafka
#: brokers since 3.8.1 (and every 4.x) check it and refuse the login as "invalid credentials"
#: (librdkafka#4895, KAFKA-17973).
SCRAM_FIXED_IN: Final = (2, 6, 1)


def scram_hint(kafka: KafkaSettings) -> str | None:
    """What to tell an operator whose SCRAM login singer's librdkafka cannot make (else ``None``)."""
    version = tuple(int(part) for part in librdkafka_version.split(".")[:3] if part.isdigit())
    if not (
        kafka.security_protocol.startswith("SASL")
        and kafka.sasl_mechanism.startswith("SCRAM")
        and version < SCRAM_FIXED_IN
    ):
        return None
    return (
        f"if kafka.sasl_password is right, the broker refused librdkafka {librdkafka_version}'s SCRAM "
        f"(librdkafka before 2.6.1 sends a nonce Kafka 3.8.1+ and 4.x refuse, librdkafka#4895): give this "
        f"singer PLAIN over SASL_SSL (PINAPP_KAFKA__SASL_MECHANISM=PLAIN), or build it against "
        f"librdkafka >= 2.6.1 (docs/operations.md)"
    )
