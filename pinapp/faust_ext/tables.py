"""Table writes per batch, and the current event they are routed by.

faust routes a table write to the changelog partition, and the local RocksDB partition,
of the *current event*. ``Stream.take_events`` hands over a batch that mixes partitions,
and the current event is then only the last one buffered, so writing tables for a whole
batch would put state in the wrong partition. :func:`event_scope` makes one event of the
batch current while its table writes happen.

:class:`BatchedTable` needs no current event: it reads and writes the RocksDB database of the
event's partition directly, as the store's ``_get``/``_set``/``_del`` do once they have found it,
without their per-key bookkeeping (a locked LRU index from key to partition, ~6% of a worker's
CPU; it only speeds up reads made *without* an event, such as ``/pins/<id>``, which search the
open partitions when a key is not in it).

Private names used: ``faust.streams._current_event`` (the context variable faust routes table
writes by), the rocksdb store's ``_encode_key``/``_encode_value``/``_decode_value`` and
``_db_for_partition``, the aiokafka producer under faust's (``Producer._ensure_producer``), and the semantics of its ``_get``/``_set``/``_del`` (fingerprinted).
faust's public ``table[key] = value`` does the same work per record at ~130 µs.
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from faust import streams as _streams
from faust.types import TP, EventT

__all__ = ["BatchedTable", "event_scope"]

logger = logging.getLogger(__name__)


@contextmanager
def event_scope(event: EventT) -> Iterator[None]:
    """Make ``event`` the current event (for table routing) inside the block."""
    token = _streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _streams._current_event.reset(token)


class BatchedTable:
    """Reads and writes of one faust table for a batch, with the changelog sent per batch.

    faust's own path for ``table[key] = value`` costs ~130 µs per write on this machine
    (a buffered send through the topic machinery, a callback and a RocksDB bookkeeping put
    per record): more than all of pinapp's stages together. This writes the local RocksDB
    partition at once (so reads within the batch see it) and queues the changelog record;
    :meth:`flush` hands the batch to the producer, records the persisted changelog offset
    once per partition, and faust flushes the producer before it commits source offsets,
    so the changelog is in Kafka before the events that caused it are acknowledged. The
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

    def partition_items(self, partition: int) -> Callable[[bytes | None], Iterator[tuple[bytes, bytes]]]:
        """Raw (key, value) iteration of one partition's RocksDB store, from a given key."""
        db = self.store._db_for_partition(partition)

        def items(from_key: bytes | None) -> Iterator[tuple[bytes, bytes]]:
            yield from db.items(from_key=from_key)

        return items

    def get(self, event: EventT, key: Any) -> Any:
        """The value of ``key`` in ``event``'s partition, or ``None``.

        A stored value that cannot be decoded (corrupt, or written by an older format) is
        logged and read as absent: a cache or dedup entry is never worth a crash.
        """
        raw = self._db(event.message.partition).get(self._encode_key(key))
        if raw is None:
            return None
        try:
            return self._decode_value(raw)
        except Exception as exc:
            logger.warning("table %s: ignoring undecodable value of %r: %r", self.table.name, key, exc)
            return None

    def set(self, event: EventT, key: Any, value: Any) -> None:
        """Write ``key`` in ``event``'s partition; the changelog record waits for flush."""
        partition = event.message.partition
        raw_key, raw_value = self._encode_key(key), self._encode_value(value)
        self._db(partition).put(raw_key, raw_value)
        self._pending.append((partition, raw_key, raw_value))

    def delete(self, event: EventT, key: Any) -> None:
        """Delete ``key`` from ``event``'s partition; a tombstone goes to its changelog on flush."""
        partition = event.message.partition
        raw_key = self._encode_key(key)
        self._db(partition).delete(raw_key)
        self._pending.append((partition, raw_key, None))

    async def flush(self) -> None:
        """Send the queued changelog records, a record batch per partition (delivery is awaited
        by faust's commit, which flushes the producer first).

        aiokafka's ``send_batch`` takes a built batch: one future and one accumulator entry per
        batch (~16 KB) instead of per record, in the partition's order. (faust's
        ``Producer.send`` would also count each record in its produce sensor; these are
        counted as changelog batches by the rows they come with.)
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
            last: Any = None
            batch, n = producer.create_batch(), 0
            for raw_key, raw_value in records:
                if batch.append(key=raw_key, value=raw_value, timestamp=None) is None:  # full
                    if n:
                        last = (await producer.send_batch(batch, topic, partition=partition), n)
                    batch, n = producer.create_batch(), 0
                    if batch.append(key=raw_key, value=raw_value, timestamp=None) is None:
                        raise ValueError(f"table {self.table.name}: a {len(raw_value or b'')}-byte value does "
                                         "not fit in a producer batch (producer_max_batch_size)")
                n += 1
            if n:
                last = (await producer.send_batch(batch, topic, partition=partition), n)
            future, count = last
            future.add_done_callback(functools.partial(self._persisted, TP(topic, partition), count))

    def _persisted(self, tp: TP, count: int, future: Any) -> None:
        # What faust's own changelog callback does: remember the newest offset the local
        # store holds, so recovery after a restart reads only what came after it. A batch's
        # future carries its base offset; its last record is ``count - 1`` after it.
        if not future.cancelled() and future.exception() is None:
            self.store.set_persisted_offset(tp, future.result().offset + count - 1)
