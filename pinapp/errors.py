"""pinapp's exceptions: one base, each subclass says what the operator should do.

Design notes: docs/architecture.md, "pinapp/errors.py".
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DatabaseError",
    "EnrichmentFault",
    "InvalidEvent",
    "LostOwnership",
    "PinappError",
    "SinkError",
    "StackError",
    "StateStoreError",
    "StateStoreLost",
]


class PinappError(Exception):
    """Base of every error pinapp raises on purpose."""


class ConfigError(PinappError):
    """A setting is missing or wrong. The message names the setting and how to fix it."""


class InvalidEvent(PinappError):
    """An input event cannot be processed; it is dead-lettered with this message as reason.

    Operators need do nothing for the pipeline's sake (it moves on); look at ``events-dlq``
    to find the producer that sends bad data.
    """

    def __init__(self, reason: str, *, kind: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class DatabaseError(PinappError):
    """SingleStore could not be reached, or refused a query. The message names the server,
    the settings to check, and what the server said."""


class EnrichmentFault(PinappError):
    """Injected by ``testing.poison_user_id`` to prove a crashing event is dead-lettered."""


class SinkError(PinappError):
    """SingleStore rejected a batch's rows (a value or key it refuses; outages are retried, never this).

    The topology then writes the batch row by row and dead-letters each row still rejected.
    """


class LostOwnership(PinappError):
    """A worker that lost ``partitions`` to another tried to write them (a zombie: cut off, or
    slower than its rebalance). Its records of them are dropped; the new owner writes them."""

    def __init__(self, partitions: frozenset[int]) -> None:
        super().__init__(
            f"partitions {sorted(partitions)} are owned by another worker now; their records are left to it"
        )
        self.partitions = partitions


class StackError(PinappError):
    """A local stack service (Kafka, MariaDB, S3 server) failed to start or stop; see its log."""


class StateStoreError(PinappError):
    """The worker's local table store (RocksDB under ``worker.data_dir``) failed a read or a
    write: a full disk, an unreadable file. An outage, like the database's: the partitions wait
    and the batch is tried again (``/health`` 503, sink ``state``); nothing is dead-lettered."""


class StateStoreLost(PinappError):
    """The local table store kept failing for ``pipeline.state_retry_max_s``: the worker stops.
    Free space or replace the disk under ``worker.data_dir`` (or delete that folder: the tables
    are rebuilt from their changelogs), then start the worker again."""
