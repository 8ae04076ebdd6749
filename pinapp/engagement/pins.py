"""A pin-related event's pin, in one step: memory, the pin cache table, SingleStore, the event."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from cachetools import LRUCache

from pinapp.domain.events import Event, EventType
from pinapp.domain.table_values import Pin
from pinapp.engagement.ports import PartitionedTable, RowStore, SourceRecord
from pinapp.telemetry import metrics

__all__ = ["NeedsPin", "PinResolver"]


class NeedsPin(Protocol):
    """An accepted event whose ``pin`` is to be found."""

    source: SourceRecord
    event: Event
    pin: Pin | None


class PinResolver:
    """Finds each event's pin: its own for a ``pin`` event, else the decoded pins kept in memory
    (an LRU: pins do not change, and popular pins are read for most events), the pin cache table,
    one SingleStore lookup for the batch's misses, then the pin the event carries; else none
    (category ``unknown``).

    A pin found in SingleStore or carried by the event is written to the pin cache here, in a
    batch's preparation, not its commit: a later event of the batch, or of the next batch
    (prepared while this one commits), must find it. That is safe before the commit: a pin does
    not change, so a batch prepared again finds the same pin; the table's changelog records
    are confirmed with the batch's commit.
    """

    def __init__(self, table: PartitionedTable, store: RowStore, *, lru_size: int) -> None:
        self.table = table  # pin_id -> Pin
        self.store = store
        self.recent: LRUCache[str, Pin] = LRUCache(maxsize=max(1, lru_size))

    async def resolve(self, items: Sequence[NeedsPin]) -> None:
        """Set each item's ``pin``, in the order of ``items``."""
        missing: list[NeedsPin] = []
        from_event = hits = 0
        for item in items:
            event = item.event
            if event.event_type is EventType.PIN:
                assert event.carried_pin is not None, "a pin event always carries its pin"
                item.pin = Pin.from_event_field(event.carried_pin)
                self.learn(item.source.partition, item.pin)
                from_event += 1
            elif event.pin_id is not None:
                item.pin = self.cached(item.source.partition, event.pin_id)
                if item.pin is None:
                    missing.append(item)
                else:
                    hits += 1
        metrics.PIN_CACHE.labels(result="event").inc(from_event)
        metrics.PIN_CACHE.labels(result="hit").inc(hits)
        if missing:
            await self._resolve_missing(missing)

    def cached(self, partition: int, pin_id: str) -> Pin | None:
        pin = self.recent.get(pin_id)
        if pin is None:
            pin = self.table.get(partition, pin_id.encode())
            if pin is not None:
                self.recent[pin_id] = pin
        return pin

    def learn(self, partition: int, pin: Pin) -> None:
        self.table.set(partition, pin.pin_id.encode(), pin)
        self.recent[pin.pin_id] = pin

    async def _resolve_missing(self, missing: Sequence[NeedsPin]) -> None:
        """Cache misses: one SingleStore lookup for them all, then the event's own pin."""
        from_db = await self.store.fetch_pins([item.event.pin_id for item in missing if item.event.pin_id])
        counts = {"hit": 0, "database": 0, "event": 0, "miss": 0}
        for item in missing:
            pin_id = item.event.pin_id
            assert pin_id is not None
            cached = self.cached(item.source.partition, pin_id)  # an earlier event of the batch may have filled it
            if cached is not None:
                item.pin, found = cached, "hit"
            elif pin_id in from_db:
                item.pin, found = from_db[pin_id], "database"
                self.learn(item.source.partition, item.pin)
            elif item.event.carried_pin is not None:
                item.pin, found = Pin.from_event_field(item.event.carried_pin), "event"
                self.learn(item.source.partition, item.pin)
            else:
                found = "miss"
            counts[found] += 1
        for result, n in counts.items():
            metrics.PIN_CACHE.labels(result=result).inc(n)
