"""Dedup decisions and the bounded-horizon sweep."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pinapp.domain.dedup import PartitionSweeper, is_duplicate, is_expired
from pinapp.domain.table_values import SeenEvent

HOUR = 3_600_000


def test_a_resend_within_the_horizon_is_a_duplicate() -> None:
    seen = SeenEvent(seen_at_ms=1_000, partition=2, offset=10)
    assert is_duplicate(seen, 2, 11, now_ms=2_000, horizon_ms=HOUR)


def test_a_redelivery_of_the_same_record_is_not_a_duplicate() -> None:
    seen = SeenEvent(seen_at_ms=1_000, partition=2, offset=10)
    assert not is_duplicate(seen, 2, 10, now_ms=2_000, horizon_ms=HOUR)


def test_unknown_or_expired_events_are_not_duplicates() -> None:
    assert not is_duplicate(None, 0, 0, now_ms=0, horizon_ms=HOUR)
    old = SeenEvent(seen_at_ms=0, partition=0, offset=1)
    assert is_expired(old, now_ms=HOUR, horizon_ms=HOUR)
    assert not is_duplicate(old, 0, 5, now_ms=HOUR, horizon_ms=HOUR)
    assert not is_expired(old, now_ms=HOUR - 1, horizon_ms=HOUR)


class FakePartition:
    """A sorted key/value store shaped like one RocksDB partition of a faust table."""

    def __init__(self, entries: dict[str, int]) -> None:
        self.data = {k.encode(): SeenEvent(v, 0, 0).to_bytes() for k, v in entries.items()}
        self.data[b"__faust\x00offset__"] = b"123"

    def items(self, from_key: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        for key in sorted(self.data):
            if from_key is None or key >= from_key:
                yield key, self.data[key]


def _sweeper() -> PartitionSweeper:
    return PartitionSweeper(decode_key=bytes.decode, decode_value=SeenEvent.from_bytes)


def test_sweep_examines_at_most_budget_keys_and_resumes_where_it_stopped() -> None:
    part = FakePartition({f"k{i:02d}": 0 for i in range(10)})
    sweeper = _sweeper()
    first = sweeper.expired_keys(0, part.items, budget=4, now_ms=HOUR, horizon_ms=HOUR)
    second = sweeper.expired_keys(0, part.items, budget=4, now_ms=HOUR, horizon_ms=HOUR)
    third = sweeper.expired_keys(0, part.items, budget=4, now_ms=HOUR, horizon_ms=HOUR)
    assert first == ["k00", "k01", "k02", "k03"]
    assert second == ["k04", "k05", "k06", "k07"]
    assert third == ["k08", "k09", "k00", "k01"]  # the end reached: on from the beginning
    assert sweeper.expired_keys(0, part.items, budget=1, now_ms=HOUR, horizon_ms=HOUR) == ["k02"]


def test_a_budget_of_the_whole_partition_examines_every_key_once_wherever_the_cursor_was() -> None:
    part = FakePartition({f"k{i:02d}": 0 for i in range(10)})
    sweeper = _sweeper()
    assert sweeper.expired_keys(0, part.items, budget=6, now_ms=HOUR, horizon_ms=HOUR) == [
        f"k{i:02d}" for i in range(6)
    ]
    everything = sweeper.expired_keys(0, part.items, budget=100, now_ms=HOUR, horizon_ms=HOUR)
    assert everything == [f"k{i:02d}" for i in (*range(6, 10), *range(6))]
    assert sweeper.expired_keys(0, part.items, budget=1, now_ms=HOUR, horizon_ms=HOUR) == ["k06"]


def test_sweep_keeps_fresh_entries_and_skips_faust_bookkeeping() -> None:
    part = FakePartition({"old": 0, "new": HOUR})
    expired = _sweeper().expired_keys(0, part.items, budget=100, now_ms=HOUR + 1, horizon_ms=HOUR)
    assert expired == ["old"]


def test_sweep_cursors_are_per_partition() -> None:
    a = FakePartition({"a1": 0, "a2": 0})
    b = FakePartition({"b1": 0, "b2": 0})
    sweeper = _sweeper()
    assert sweeper.expired_keys(0, a.items, budget=1, now_ms=HOUR, horizon_ms=HOUR) == ["a1"]
    assert sweeper.expired_keys(1, b.items, budget=1, now_ms=HOUR, horizon_ms=HOUR) == ["b1"]
    assert sweeper.expired_keys(0, a.items, budget=1, now_ms=HOUR, horizon_ms=HOUR) == ["a2"]


def test_undecodable_entries_are_swept_and_rejected_cleanly() -> None:
    part = FakePartition({"good": HOUR})
    part.data[b"legacy"] = b'{"seen_at_ms": 1}'  # an older JSON format
    expired = _sweeper().expired_keys(0, part.items, budget=100, now_ms=HOUR + 1, horizon_ms=HOUR)
    assert expired == ["legacy"]
    with pytest.raises(ValueError, match="not a SeenEvent"):
        SeenEvent.from_bytes(b"short")
