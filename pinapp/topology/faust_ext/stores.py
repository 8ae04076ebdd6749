"""Reads of a table's local RocksDB partitions outside an event (web views, metrics).

Private names used: the rocksdb store's ``_dbs`` (the databases it has open, by partition)
and ``_encode_key``. faust's public reads (``table[key]``) route by the current event and
open a database for any partition asked for; these never open one the worker does not hold.
"""

from __future__ import annotations

from typing import Any

__all__ = ["open_partition_dbs", "raw_get"]


def open_partition_dbs(table: Any) -> dict[int, Any]:
    """The RocksDB databases faust has open for ``table``, by partition."""
    return dict(getattr(table.data, "_dbs", {}))


def raw_get(table: Any, partition: int, key: Any) -> bytes | None:
    """The stored bytes of ``key`` in ``table``'s local ``partition``; ``None`` if absent or not held."""
    db = open_partition_dbs(table).get(partition)
    return None if db is None else db.get(table.data._encode_key(key))
