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
``_db_for_partition``, and the semantics of its ``_get``/``_set``/``_del`` (fingerprinted).
faust's public ``table[key] = value`` does the same work per record at ~130 µs.
"""

from __future__ import annotations

import functools
import logging
import weakref
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
        """Send the queued changelog records (delivery is awaited by faust's commit)."""
        if not self._pending:
            return
        producer = self.table.app.producer
        topic = self.table.changelog_topic.get_topic_name()
        last: dict[int, Any] = {}
        for partition, raw_key, raw_value in self._pending:
            last[partition] = await producer.send(topic, raw_key, raw_value, partition, None, None)
        self._pending.clear()
        for partition, future in last.items():
            future.add_done_callback(functools.partial(self._persisted, TP(topic, partition)))

    def _persisted(self, tp: TP, future: Any) -> None:
        # What faust's own changelog callback does: remember the newest offset the local
        # store holds, so recovery after a restart reads only what came after it.
        if not future.cancelled() and future.exception() is None:
            self.store.set_persisted_offset(tp, future.result().offset)
