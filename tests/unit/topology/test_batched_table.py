"""BatchedTable over a real faust RocksDB store: per-partition writes, bulk writes, changelog order."""

from __future__ import annotations

from pathlib import Path

import faust
import pytest

from pinapp.errors import StateStoreError
from pinapp.topology.faust_ext import BatchedTable


@pytest.fixture
def table(tmp_path: Path) -> BatchedTable:
    app = faust.App("batched-table-test", store="rocksdb://", datadir=str(tmp_path))
    return BatchedTable(app.Table("t", key_type=bytes, value_type=bytes, partitions=4))


def test_bulk_writes_land_in_their_partition_only(table: BatchedTable) -> None:
    table.set_many(2, [(b"a", b"1"), (b"b", b"2")])
    assert (table.get(2, b"a"), table.get(2, b"b")) == (b"1", b"2")
    assert table.get(1, b"a") is None
    assert sorted(table.partition_items(2)(None)) == [(b"a", b"1"), (b"b", b"2")]


def test_bulk_deletes_and_the_changelog_records_in_write_order(table: BatchedTable) -> None:
    table.set(0, b"x", b"9")
    table.set_many(0, [(b"a", b"1"), (b"b", b"2")])
    table.delete_many(0, [b"a", b"x"])
    assert table.get(0, b"a") is None and table.get(0, b"x") is None and table.get(0, b"b") == b"2"
    assert table._pending == [(0, b"x", b"9"), (0, b"a", b"1"), (0, b"b", b"2"), (0, b"a", None), (0, b"x", None)]


def test_bytes_keys_and_values_are_stored_as_faust_itself_encodes_them(table: BatchedTable) -> None:
    store = table.store
    assert store._encode_key(b"k\x00\xff") == b"k\x00\xff"
    assert store._encode_value(b"v\x00\xff") == b"v\x00\xff"
    table.set_many(3, [(b"k\x00\xff", b"v\x00\xff")])
    assert store._db_for_partition(3).get(store._encode_key(b"k\x00\xff")) == b"v\x00\xff"


def test_a_failing_local_store_is_a_state_store_error_naming_the_table(table: BatchedTable) -> None:
    """A full disk or an unreadable file: an outage the batch waits on, not a poison event."""
    table.set_many(1, [(b"a", b"1")])
    table.store._db_for_partition(1).close()  # every read and write of it fails from here
    for operation in (
        lambda: table.set_many(1, [(b"b", b"2")]),
        lambda: table.set(1, b"c", b"3"),
        lambda: table.get(1, b"a"),
        lambda: table.delete_many(1, [b"a"]),
        lambda: list(table.partition_items(1)(None)),
    ):
        with pytest.raises(StateStoreError, match="table t, partition 1: the local store failed"):
            operation()
