"""Table reads and writes per batch, routed by each record's own partition.

Design notes: docs/architecture.md, "pinapp/topology/faust_ext/tables.py".
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from faust.types import TP
from rocksdict import WriteBatch

from pinapp.errors import StateStoreError

__all__ = ["BatchedTable"]

logger = logging.getLogger(__name__)


class BatchedTable:
    """Reads and writes of one faust table for a batch, with the changelog sent per batch.

    faust's own path for ``table[key] = value`` costs ~130 µs per write on this machine
    (a buffered send through the topic machinery, a callback and a RocksDB bookkeeping put
    per record): more than all of pinapp's stages together. This writes the local RocksDB
    partition at once (so reads within the batch see it) and queues the changelog record;
    :meth:`flush` hands the batch to the producer and records the persisted changelog offset
    once per partition; :meth:`unconfirmed` waits for Kafka's answers and sends again what it
    refused, and the batcher acks the events that caused them only after, so the changelog is
    in Kafka before the events are acknowledged (faust's flush before its commit does not
    fail on a send that failed after the hand-off). The
    records are the ones faust would write (same serializers, same partitions), so
    recovery and standby replicas work unchanged.
    """

    def __init__(self, table: Any) -> None:
        self.table = table
        self.store = table.data
        if not hasattr(self.store, "_db_for_partition"):
            raise TypeError(f"table {table.name} needs the rocksdb:// store")
        self._db = self.store._db_for_partition  # opens the partition's database if need be
        self._encode_key = self.store._encode_key
        self._encode_value = self.store._encode_value
        self._decode_value = self.store._decode_value
        self._pending: list[tuple[int, bytes, bytes | None]] = []
        # Changelog batches handed to the producer and not yet confirmed: (partition, records, future).
        self._sent: list[tuple[int, list[tuple[bytes, bytes | None]], Any]] = []

    def partition_items(self, partition: int) -> Callable[[bytes | None], Iterator[tuple[bytes, bytes]]]:
        """Raw (key, value) iteration of one partition's RocksDB store, from a given key."""
        db = self._db(partition)

        def items(from_key: bytes | None) -> Iterator[tuple[bytes, bytes]]:
            try:
                yield from db.items(from_key=from_key)
            except Exception as exc:
                raise self._failed("read", partition, exc) from exc

        return items

    def get(self, partition: int, key: Any) -> Any:
        """The value of ``key`` in ``partition``, or ``None``.

        A stored value that cannot be decoded (corrupt, or written by an older format) is
        logged and read as absent: a cache or dedup entry is never worth a crash.
        """
        try:
            raw = self._db(partition).get(self._key(key))
        except Exception as exc:
            raise self._failed("read", partition, exc) from exc
        if raw is None:
            return None
        try:
            return self._decode_value(raw)
        except Exception as exc:  # noqa: BLE001 - any decoding error: the value is skipped, as faust would fail on it
            logger.warning("table %s: ignoring undecodable value of %r: %r", self.table.name, key, exc)
            return None

    def set(self, partition: int, key: Any, value: Any) -> None:
        """Write ``key`` in ``partition``; the changelog record waits for flush."""
        raw_key, raw_value = self._key(key), self._value(value)
        try:
            self._db(partition).put(raw_key, raw_value)
        except Exception as exc:
            raise self._failed("write", partition, exc) from exc
        self._pending.append((partition, raw_key, raw_value))

    def set_many(self, partition: int, items: Iterable[tuple[Any, Any]]) -> None:
        """Write each ``(key, value)`` in ``partition`` in one RocksDB write batch (a third of
        the cost of a put per key); the changelog records wait for flush."""
        batch, pending = WriteBatch(raw_mode=True), self._pending
        key_of, value_of = self._key, self._value
        for key, value in items:
            raw_key, raw_value = key_of(key), value_of(value)
            batch.put(raw_key, raw_value)
            pending.append((partition, raw_key, raw_value))
        self._write(partition, batch)

    def delete_many(self, partition: int, keys: Iterable[Any]) -> None:
        """Delete ``keys`` from ``partition`` in one write batch; tombstones on flush."""
        batch, pending = WriteBatch(raw_mode=True), self._pending
        for key in keys:
            raw_key = self._key(key)
            batch.delete(raw_key)
            pending.append((partition, raw_key, None))
        self._write(partition, batch)

    def _write(self, partition: int, batch: WriteBatch) -> None:
        try:
            self._db(partition).write(batch)
        except Exception as exc:
            raise self._failed("write", partition, exc) from exc

    def _failed(self, what: str, partition: int, exc: Exception) -> StateStoreError:
        """A store failure as an outage (a full disk, an unreadable file): the batch waits and is tried again."""
        name = self.table.name
        return StateStoreError(f"table {name}, partition {partition}: the local store failed a {what}: {exc}")

    # faust's serializers pass bytes through untouched (``dumps_key`` and ``dumps_value``
    # skip ``bytes``), so a bytes key or value is its own encoding: no registry call for it.
    def _key(self, key: Any) -> bytes:
        return key if type(key) is bytes else self._encode_key(key)

    def _value(self, value: Any) -> bytes:
        return value if type(value) is bytes else self._encode_value(value)

    async def flush(self) -> None:
        """Send the queued changelog records, in record batches per partition (delivery is
        awaited by faust's commit, which flushes the producer first).

        aiokafka's ``send_batch`` takes a built batch: one future and one accumulator entry per
        batch (~16 KB) instead of per record, in the partition's order. (Unlike faust's
        ``Producer.send``, this does not count each record in faust's produce sensor.)
        """
        if not self._pending:
            return
        producer = self.table.app.producer._ensure_producer()  # aiokafka's producer
        topic = self.table.changelog_topic.get_topic_name()
        by_partition: dict[int, list[tuple[bytes, bytes | None]]] = defaultdict(list)
        for partition, raw_key, raw_value in self._pending:
            by_partition[partition].append((raw_key, raw_value))
        self._pending.clear()
        for partition, records in by_partition.items():
            await self._send_partition(producer, topic, partition, records)

    async def unconfirmed(self) -> list[BaseException]:
        """Wait for Kafka's answer to every changelog batch flushed so far, and send again the
        batches it did not take; returns their errors (empty: every record is in Kafka).

        faust's commit flushes the producer but does not fail on a batch that failed after it
        was handed over: the batch's source offsets would be committed past records the
        changelog never got. The batcher acks a batch only once this returns empty.
        """
        sent, self._sent = self._sent, []
        if not sent:
            return []
        answers = await asyncio.gather(*(future for _, _, future in sent), return_exceptions=True)
        failed = [
            (p, records, a) for (p, records, _), a in zip(sent, answers, strict=True) if isinstance(a, BaseException)
        ]
        if failed:
            producer = self.table.app.producer._ensure_producer()
            topic = self.table.changelog_topic.get_topic_name()
            for partition, records, _ in failed:
                await self._send_partition(producer, topic, partition, records)
        return [error for _, _, error in failed]

    async def _send_partition(
        self, producer: Any, topic: str, partition: int, records: list[tuple[bytes, bytes | None]]
    ) -> None:
        for future, chunk in await self._send(producer, topic, partition, records):
            future.add_done_callback(functools.partial(self._persisted, TP(topic, partition), len(chunk)))
            self._sent.append((partition, chunk, future))

    async def _send(
        self, producer: Any, topic: str, partition: int, records: Sequence[tuple[bytes, bytes | None]]
    ) -> list[tuple[Any, list[tuple[bytes, bytes | None]]]]:
        """Send ``records`` (at least one) in full batches; each batch's future and records."""
        sent = []
        chunk: list[tuple[bytes, bytes | None]] = []
        batch = producer.create_batch()
        for raw_key, raw_value in records:
            while batch.append(key=raw_key, value=raw_value, timestamp=None) is None:  # full
                if not chunk:  # even an empty batch refuses it
                    raise ValueError(
                        f"table {self.table.name}: a {len(raw_value or b'')}-byte value does "
                        "not fit in a producer batch (producer_max_batch_size)"
                    )
                sent.append((await producer.send_batch(batch, topic, partition=partition), chunk))
                batch, chunk = producer.create_batch(), []
            chunk.append((raw_key, raw_value))
        sent.append((await producer.send_batch(batch, topic, partition=partition), chunk))
        return sent

    def _persisted(self, tp: TP, count: int, future: Any) -> None:
        # What faust's own changelog callback does: remember the newest offset the local
        # store holds, so recovery after a restart reads only what came after it. A batch's
        # future carries its base offset; its last record is ``count - 1`` after it.
        if not future.cancelled() and future.exception() is None:
            self.store.set_persisted_offset(tp, future.result().offset + count - 1)
