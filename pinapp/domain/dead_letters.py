"""Dead letters, and the other headers pinapp writes on the records it re-sends.

Design notes: docs/architecture.md, "pinapp/domain/dead_letters.py".
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

__all__ = [
    "HEADER_PREFIX",
    "KEPT_BYTES",
    "MAX_DEAD_LETTER_BYTES",
    "REPLAY_HEADER",
    "REPLAY_TIMESTAMP_HEADER",
    "DeadLetterLog",
    "DeadLetters",
    "SourceRecord",
    "dlq_headers",
    "is_replay",
]

HEADER_PREFIX: Final = "pinapp.dlq."
REPLAY_HEADER: Final = "pinapp.replay"
REPLAY_TIMESTAMP_HEADER: Final = "pinapp.replay.timestamp"


def dlq_headers(reason: str, *, kind: str, stage: str, **source: object) -> list[tuple[str, bytes]]:
    """``reason``, ``kind``, ``stage``, then each ``source`` field (topic, offset, file...)."""
    fields = {"reason": reason, "kind": kind, "stage": stage, **source}
    return [(HEADER_PREFIX + name, str(value).encode()) for name, value in fields.items()]


def is_replay(headers: Any) -> bool:
    """Whether a Kafka record's headers (pairs or a mapping) mark it as replayed from the archive."""
    if not headers:
        return False
    names = headers.keys() if isinstance(headers, dict) else (h[0] for h in headers)
    return REPLAY_HEADER in names


class DeadLetterLog:
    """The log's account of dead letters: a burst of bad input never floods it.

    The dead-letter record (with its reason and source headers) is the record of each bad
    input, and a metric counts every one. The log shows the first ``first_per_kind`` of a kind
    in full (where from, why) when the kind starts, then one summary line per interval:
    "dead-lettered 1,204 events in the last 10 s: 700 schema, 504 not_json". A kind that goes
    on from one interval to the next is only summarized, so steady bad input (the demo's 1%)
    costs one line per interval; a kind absent for a whole interval is shown in full again.
    The summary is written by the first record after the interval, or by :meth:`flush_due`
    (called on a timer), so a burst that stops is still summarized.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        topic: str = "the dead-letter topic",
        first_per_kind: int = 3,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._topic = topic
        self._first = first_per_kind
        self._interval_s = interval_s
        self._clock = clock
        self._since = clock()
        self._counts: Counter[str] = Counter()
        self._shown = 0  # records of this interval logged in full
        self._going_on: set[str] = set()  # the kinds of the interval before: summarized only

    def record(self, kind: str, where: str, stage: str, reason: str) -> None:
        """One input dead-lettered: ``where`` is its source, e.g. ``events[3]@1204``."""
        self.flush_due()
        self._counts[kind] += 1
        if kind not in self._going_on and self._counts[kind] <= self._first:
            self._shown += 1
            self._logger.warning("dead-lettering %s at %s (%s): %s", where, stage, kind, reason[:300])

    def flush_due(self) -> None:
        """Write the summary of an interval that has ended, if it held more than was logged."""
        now = self._clock()
        if now - self._since < self._interval_s:
            return
        counts, seconds, shown = self._counts, now - self._since, self._shown
        self._counts, self._since, self._shown, self._going_on = Counter(), now, 0, set(counts)
        total = sum(counts.values())
        if total > shown:
            kinds = ", ".join(f"{n:,} {kind}" for kind, n in counts.most_common())
            self._logger.warning(
                "dead-lettered %s events in the last %.0f s: %s (a kind's first %d are logged when it starts; "
                "every one is in %s with its reason and source offset)",
                f"{total:,}",
                seconds,
                kinds,
                self._first,
                self._topic,
            )


class SourceRecord(Protocol):
    """The consumed record a dead letter is made of (faust's ``Message`` is one)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> float: ...  # seconds, as faust gives it
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


#: A dead letter's key and value together at most: under faust's producer ``max_request_size``
#: (1,000,000 bytes, less than a broker's 1 MiB), with room for the headers.
MAX_DEAD_LETTER_BYTES: Final = 900_000
#: What is kept of a record too large to dead-letter whole: enough to see what it was.
KEPT_BYTES: Final = 64 * 1024
KEPT_KEY_BYTES: Final = 1024

#: Sends one record to the dead-letter topic: ``send(key=, value=, headers=)``.
Send = Callable[..., Awaitable[Any]]


class DeadLetters:
    """The topology's dead-letter path: send a failed input with its reason and source, count it, log it.

    ``send`` is the dead-letter topic's send; ``counted`` is called with each dead letter's
    kind (the worker's metric). The log shows the first few per kind and interval, then a
    summary (:class:`DeadLetterLog`); :meth:`flush_log` writes a summary that is due.
    """

    def __init__(
        self,
        send: Send,
        *,
        topic: str,
        logger: logging.Logger,
        counted: Callable[[str], None] = lambda kind: None,
        max_bytes: int = MAX_DEAD_LETTER_BYTES,
    ) -> None:
        self._send = send
        self._counted = counted
        self._max_bytes = max_bytes
        self.log = DeadLetterLog(logger, topic=topic)
        # Dead letters handed to the producer, not yet confirmed: (what was sent, its delivery).
        self._sent: list[tuple[dict[str, Any], Any]] = []

    async def __call__(self, record: SourceRecord, reason: str, *, kind: str, stage: str) -> None:
        """Route ``record`` to the dead-letter topic with ``reason``; count it, and log it or its burst.

        A record too large to be sent whole (the producer refuses a request over its
        ``max_request_size``, and would jam the partition: the send fails, the batch is never
        acked, and the record is fetched again forever) is sent cut to :data:`KEPT_BYTES` (its key
        to 1 KiB), with the value's size and SHA-256 in headers (``original_bytes``, ``sha256``,
        ``truncated``).
        """
        self.log.record(kind, f"{record.topic}[{record.partition}]@{record.offset}", stage, reason)
        key, value = record.key, record.value
        cut: dict[str, object] = {}
        if len(key or b"") + len(value or b"") > self._max_bytes:
            whole = value or b""
            cut = {"original_bytes": len(whole), "sha256": hashlib.sha256(whole).hexdigest(), "truncated": "true"}
            key = None if key is None else key[:KEPT_KEY_BYTES]
            value = None if value is None else value[:KEPT_BYTES]
        headers = dlq_headers(
            reason,
            kind=kind,
            stage=stage,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp=int(record.timestamp * 1000),
            **cut,
        )
        letter = {"key": key, "value": value, "headers": headers}
        self._sent.append((letter, await self._send(**letter)))
        self._counted(kind)

    async def unconfirmed(self) -> list[BaseException]:
        """Wait for Kafka's answer to every dead letter sent so far, and send again those it did
        not take; returns their errors (empty: every dead letter is in Kafka). The batcher acks
        a batch only once this returns empty: a dead letter lost after its hand-off would be an
        input lost."""
        sent, self._sent = [(letter, d) for letter, d in self._sent if _awaitable(d)], []
        answers = await asyncio.gather(*(delivery for _, delivery in sent), return_exceptions=True)
        failed = [(letter, a) for (letter, _), a in zip(sent, answers, strict=True) if isinstance(a, BaseException)]
        for letter, _ in failed:
            self._sent.append((letter, await self._send(**letter)))
        return [error for _, error in failed]

    def flush_log(self) -> None:
        self.log.flush_due()


def _awaitable(delivery: object) -> bool:
    """A send's answer that can be waited for (faust's ``FutureMessage``; a test's ``None`` is not)."""
    return inspect.isawaitable(delivery)
