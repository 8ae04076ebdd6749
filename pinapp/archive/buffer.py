"""Where one partition's records are cut into objects (pure logic, no I/O).

Design notes: docs/architecture.md, "pinapp/archive/buffer.py".
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pinapp.archive.records import ArchivedRecord

__all__ = ["Cut", "CutLimits", "Delivery", "ForcedCut", "PartitionBuffer"]


class Delivery(Protocol):
    """A record as the consumer delivered it: acked once it is in S3 (a faust ``Event``)."""

    def ack(self) -> Any: ...


@dataclass(frozen=True)
class CutLimits:
    max_events: int
    max_bytes: int
    max_age_s: float


@dataclass(frozen=True, order=True)
class ForcedCut:
    first: int
    last: int
    fmt: str


@dataclass
class Cut:
    """Consecutive records of one partition to write as one cut, and their deliveries to ack."""

    topic: str
    partition: int
    fmt: str
    records: list[ArchivedRecord]
    deliveries: list[Delivery]
    nbytes: int
    acked: bool = False
    settled: bool = False  # acked, or given up and released, or handed back to its buffer
    intent_last: int | None = None  # a forced cut closed short: the last offset its intent names

    @property
    def first(self) -> int:
        return self.records[0].offset

    @property
    def last(self) -> int:
        return self.records[-1].offset


@dataclass
class PartitionBuffer:
    """The records of one partition not yet in S3, and the forced cuts still ahead."""

    topic: str
    partition: int
    fmt: str
    limits: CutLimits
    forced: deque[ForcedCut] = field(default_factory=deque)
    records: list[ArchivedRecord] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    nbytes: int = 0
    opened_at: float = 0.0
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def adopting(
        cls, topic: str, partition: int, fmt: str, limits: CutLimits, pending: Iterable[tuple[int, int, str]]
    ) -> PartitionBuffer:
        """A buffer that will first re-cut exactly at ``pending`` (first, last, format) cuts."""
        return cls(topic, partition, fmt, limits, forced=deque(sorted(ForcedCut(*p) for p in pending)))

    def __len__(self) -> int:
        return len(self.records)

    def _take(self, fmt: str | None = None, intent_last: int | None = None) -> Cut:
        cut = Cut(self.topic, self.partition, fmt or self.fmt, self.records, self.deliveries, self.nbytes)
        cut.intent_last = intent_last
        self.records, self.deliveries, self.nbytes = [], [], 0
        return cut

    def yield_to(self, cut: Cut, theirs: ForcedCut) -> list[Cut]:
        """``cut`` was refused: another writer's intent names ``theirs`` at its first offset. Its
        records go back in front of the buffer, to be cut exactly there; returns the cuts complete
        now (none while ``theirs`` ends past what is buffered)."""
        records, deliveries = cut.records + self.records, cut.deliveries + self.deliveries
        self.records, self.deliveries, self.nbytes = [], [], 0
        self.forced = deque(sorted({theirs, *(f for f in self.forced if f.first != theirs.first)}))
        out: list[Cut] = []
        for record, delivery in zip(records, deliveries, strict=True):
            out += self.add(record, delivery)
        return out

    def add(self, record: ArchivedRecord, delivery: Delivery) -> list[Cut]:
        """Buffer ``record``; returns the cuts that are complete (usually none, at most two)."""
        out: list[Cut] = []
        offset = record.offset
        # A forced cut whose last offset never came (compaction): close it at what it has.
        while self.forced and offset > self.forced[0].last:
            if self.records and self.records[0].offset >= self.forced[0].first:
                out.append(self._take(self.forced[0].fmt, self.forced[0].last))
            self.forced.popleft()
        forced = self.forced[0] if self.forced else None
        if forced is not None and offset >= forced.first and self.records and self.records[0].offset < forced.first:
            out.append(self._take())  # the run before a forced cut is a cut of its own
        if not self.records:
            self.opened_at = self.clock()
        self.records.append(record)
        self.deliveries.append(delivery)
        self.nbytes += len(record.value or b"") + len(record.key or b"")
        if forced is not None and offset >= forced.first:
            if offset == forced.last:
                out.append(self._take(forced.fmt))
                self.forced.popleft()
            return out  # inside a forced cut: thresholds do not apply
        full = len(self.records) >= self.limits.max_events or self.nbytes >= self.limits.max_bytes
        if full or (forced is not None and offset + 1 == forced.first):
            out.append(self._take())
        return out

    def due(self) -> Cut | None:
        """The buffered run if it is older than the age limit (and not part of a forced cut)."""
        if not self.records or self.clock() - self.opened_at < self.limits.max_age_s:
            return None
        if self.forced and self.records[-1].offset >= self.forced[0].first:
            return None
        return self._take()

    def take_all(self) -> list[Cut]:
        """Everything buffered, as cuts that respect the forced boundaries (shutdown, revocation).

        A forced cut that is only partly buffered is left out (in :attr:`deliveries`): cutting it
        short would name a different range than its intent. Its records stay unacked, and the next
        owner re-reads them.
        """
        if not self.records:
            return []
        forced = self.forced[0] if self.forced else None
        if forced is None or self.records[-1].offset < forced.first:
            return [self._take()]
        if self.records[0].offset < forced.first:
            n = next(i for i, r in enumerate(self.records) if r.offset >= forced.first)
            head = Cut(
                self.topic,
                self.partition,
                self.fmt,
                self.records[:n],
                self.deliveries[:n],
                sum(len(r.value or b"") + len(r.key or b"") for r in self.records[:n]),
            )
            self.records, self.deliveries = self.records[n:], self.deliveries[n:]
            self.nbytes -= head.nbytes
            return [head]
        return []
