"""Deduplication by event_id over a bounded horizon: the decisions, and the sweep.

Design notes: docs/architecture.md, "pinapp/domain/dedup.py".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pinapp.domain.table_values import SeenEvent

__all__ = ["PartitionSweeper", "is_duplicate", "is_expired"]

# faust's RocksDB store keeps its own bookkeeping key in every partition database.
_FAUST_OFFSET_KEY = b"__faust\x00offset__"


def is_expired(seen: SeenEvent, now_ms: int, horizon_ms: int) -> bool:
    """True when ``seen`` is older than the horizon and must be forgotten."""
    return now_ms - seen.seen_at_ms >= horizon_ms


def is_duplicate(seen: SeenEvent | None, partition: int, offset: int, now_ms: int, horizon_ms: int) -> bool:
    """Whether the record at ``partition``/``offset`` repeats an already accepted event.

    A record seen before at the *same* offset is a redelivery (the worker crashed between
    accepting it and committing): it is processed again, and the idempotent sink makes
    that harmless. This is what makes marking an event seen safe at any moment.
    """
    if seen is None or is_expired(seen, now_ms, horizon_ms):
        return False
    return (seen.partition, seen.offset) != (partition, offset)


@dataclass
class PartitionSweeper:
    """Incremental expiry of one table's entries, a partition at a time, resumable."""

    decode_key: Callable[[bytes], Any]
    decode_value: Callable[[bytes], SeenEvent]
    _cursors: dict[int, bytes | None] = field(default_factory=dict)

    def expired_keys(
        self,
        partition: int,
        items: Callable[[bytes | None], Iterator[tuple[bytes, bytes]]],
        budget: int,
        now_ms: int,
        horizon_ms: int,
    ) -> list[Any]:
        """Examine up to ``budget`` keys of ``partition`` from its cursor; return the expired.

        ``items(from_key)`` iterates the partition's raw (key, value) pairs in key order,
        starting at ``from_key`` (``None``: the beginning). At the end it wraps around to the
        beginning, up to where the call began: a call's reach depends on its budget only, not
        on where earlier calls happened to stop (a budget of at least the partition's size
        examines every key once).
        """
        cursor = self._cursors.get(partition)
        expired: list[Any] = []
        examined = 0
        next_cursor: bytes | None = None
        # (from, up to): the rest of the partition, then its beginning up to the cursor.
        passes: list[tuple[bytes | None, bytes | None]] = [(cursor, None)]
        if cursor is not None:
            passes.append((None, cursor))
        for start, stop in passes:
            for raw_key, raw_value in items(start):
                if stop is not None and raw_key >= stop:
                    next_cursor = stop  # every key examined: the next call goes on from here
                    break
                if raw_key == _FAUST_OFFSET_KEY:
                    continue
                if examined >= budget:
                    next_cursor = raw_key
                    break
                examined += 1
                try:
                    stale = is_expired(self.decode_value(raw_value), now_ms, horizon_ms)
                except ValueError:  # undecodable (e.g. an older format): nothing to keep
                    stale = True
                if stale:
                    expired.append(self.decode_key(raw_key))
            if next_cursor is not None:
                break
        self._cursors[partition] = next_cursor
        return expired
