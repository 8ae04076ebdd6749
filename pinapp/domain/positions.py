"""Exactly-once into the database: each partition's position, written with its rows, and who may write it.

Design notes: docs/architecture.md, "pinapp/domain/positions.py".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from pinapp.domain.events import EventType

__all__ = ["Claim", "PartitionWrite", "Stored", "WriteOutcome", "WrittenEvent", "may_write"]


@dataclass(frozen=True, slots=True)
class Claim:
    """Who writes: the writer's token (one per worker process) and the generation of the group in
    which it holds the partitions it writes."""

    owner: str
    generation: int


@dataclass(frozen=True, slots=True)
class Stored:
    """A partition's row of ``stream_offsets``."""

    next_offset: int
    owner: str
    generation: int
    event_ts: datetime | None


def may_write(stored: Stored | None, claim: Claim) -> bool:
    """Whether ``claim`` may write a partition whose row is ``stored`` (``None``: never written)."""
    if stored is None or stored.generation < claim.generation:
        return True
    return stored.generation == claim.generation and stored.owner == claim.owner


class WrittenEvent(NamedTuple):
    """One event's rows, at its offset: its table's row, a pin row learned from it, its exposures
    (a tuple: one is made for every event written)."""

    offset: int
    event_type: EventType
    row: tuple[Any, ...]
    ts_ms: int  # its event time, epoch ms
    learned_pin: tuple[Any, ...] | None = None
    exposures: Sequence[tuple[Any, ...]] = ()


@dataclass(slots=True)
class PartitionWrite:
    """A batch's part of one partition: its events, the offset past its last record (written or
    not: a dead-lettered record is passed too), and its newest event time."""

    partition: int
    next_offset: int
    events: list[WrittenEvent] = field(default_factory=list)
    event_ts: datetime | None = None


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What a write did: the partitions it was fenced off (their events dropped), and the events it
    passed over as already written."""

    lost: frozenset[int] = frozenset()
    already_written: int = 0
    inserted: int = 0
