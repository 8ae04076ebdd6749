"""The few faust internals pinapp depends on, kept in one place (faust-streaming 0.15).

faust routes a table write to the changelog partition, and the local RocksDB partition,
of the *current event*. ``Stream.take_events`` hands over a batch that mixes partitions,
and the current event is then only the last one buffered, so writing tables for a whole
batch would put state in the wrong partition. :func:`event_scope` makes one event of the
batch current while its table writes happen.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from faust import streams as _streams
from faust.types import EventT

__all__ = ["event_scope", "partition_items"]


@contextmanager
def event_scope(event: EventT) -> Iterator[None]:
    """Make ``event`` the current event (for table routing) inside the block."""
    token = _streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _streams._current_event.reset(token)


def partition_items(table: Any, partition: int) -> Callable[[bytes | None], Iterator[tuple[bytes, bytes]]]:
    """Raw (key, value) iteration of one partition of a RocksDB-backed table, from a key.

    Raises:
        TypeError: when the table is not RocksDB-backed (pinapp requires ``rocksdb://``).
    """
    store = table.data
    if not hasattr(store, "_db_for_partition"):
        raise TypeError(f"table {table.name} needs the rocksdb:// store, not {type(store).__name__}")
    db = store._db_for_partition(partition)

    def items(from_key: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        yield from db.items(from_key=from_key)

    return items
