"""What the engagement stages need from the worker: small interfaces, as the archiver's
:class:`~pinapp.archive.archiver.PartitionControl`. The worker passes faust's (``BatchedTable``,
``EngagementStore``, the topics' ``send``); the unit tests pass in-memory ones."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from pinapp.domain import dead_letters
from pinapp.domain.geo import GeoLocation
from pinapp.domain.positions import Claim, PartitionWrite, WriteOutcome
from pinapp.domain.table_values import Pin

__all__ = ["DeadLetter", "Locator", "PartitionedTable", "RowStore", "SourceRecord"]


class SourceRecord(dead_letters.SourceRecord, Protocol):
    """A consumed record of the events topic (faust's ``Message`` is one), with its headers."""

    @property
    def headers(self) -> Any: ...  # pairs or a mapping, as faust gives them


class PartitionedTable(Protocol):
    """A changelog-backed table read and written by partition (``BatchedTable`` in the worker).

    Writes are seen by later reads at once; :meth:`flush` sends their changelog records.
    """

    def get(self, partition: int, key: bytes) -> Any: ...
    def set(self, partition: int, key: bytes, value: Any) -> None: ...
    def set_many(self, partition: int, items: Iterable[tuple[bytes, Any]]) -> None: ...
    def delete_many(self, partition: int, keys: Iterable[bytes]) -> None: ...
    def partition_items(self, partition: int) -> Callable[[bytes | None], Iterator[tuple[bytes, bytes]]]:
        """``items(from_key)``: the partition's raw pairs in key order (what the dedup sweeper walks)."""

    async def flush(self) -> None: ...
    async def unconfirmed(self) -> list[BaseException]:
        """Wait for the changelog records flushed so far; send again what Kafka did not take."""


class RowStore(Protocol):
    """The SingleStore tables (``EngagementStore`` in the worker)."""

    async def write(self, writes: Sequence[PartitionWrite], claim: Claim) -> WriteOutcome:
        """Write in one transaction, exactly once; retries outages, raises ``SinkError`` if rows are rejected."""

    async def fetch_pins(self, pin_ids: Iterable[str]) -> dict[str, Pin]: ...


class Locator(Protocol):
    """IP -> location (``GeoLocator`` in the worker)."""

    def lookup(self, ip: str) -> GeoLocation: ...


class DeadLetter(Protocol):
    """Sends an input to the dead-letter topic (``pinapp.topology.topics.dead_letters``)."""

    async def __call__(self, record: Any, reason: str, *, kind: str, stage: str) -> None: ...
    async def unconfirmed(self) -> list[BaseException]:
        """Wait for the dead letters sent so far; send again what Kafka did not take."""
