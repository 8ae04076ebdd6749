"""The dead-letter record's headers: why an input was rejected and where it came from.

One convention (Kafka Connect's, under ``pinapp.dlq.``) for every producer of dead letters:
the topology (:mod:`pinapp.dead_letter`) and the log shipper (:mod:`pinapp.singer`), which
has no faust app to import.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Final

__all__ = ["HEADER_PREFIX", "DeadLetterLog", "dlq_headers"]

HEADER_PREFIX: Final = "pinapp.dlq."


def dlq_headers(reason: str, *, kind: str, stage: str, **source: object) -> list[tuple[str, bytes]]:
    """``reason``, ``kind``, ``stage``, then each ``source`` field (topic, offset, file...)."""
    fields = {"reason": reason, "kind": kind, "stage": stage, **source}
    return [(HEADER_PREFIX + name, str(value).encode()) for name, value in fields.items()]


class DeadLetterLog:
    """The log's account of dead letters: a burst of bad input never floods it.

    The dead-letter record (with its reason and source headers) is the record of each bad
    input, and a metric counts every one. The log shows, per interval, the first
    ``first_per_kind`` of each kind in full (where from, why), then one summary line for
    the interval: "dead-lettered 1,204 events in the last 10 s: 700 schema, 504 not_json".
    The summary is written by the first record after the interval, or by :meth:`flush_due`
    (called on a timer), so a burst that stops is still summarized.
    """

    def __init__(self, logger: logging.Logger, *, topic: str = "the dead-letter topic", first_per_kind: int = 3,
                 interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._topic = topic
        self._first = first_per_kind
        self._interval_s = interval_s
        self._clock = clock
        self._since = clock()
        self._counts: Counter[str] = Counter()

    def record(self, kind: str, where: str, stage: str, reason: str) -> None:
        """One input dead-lettered: ``where`` is its source, e.g. ``events[3]@1204``."""
        self.flush_due()
        self._counts[kind] += 1
        if self._counts[kind] <= self._first:
            self._logger.warning("dead-lettering %s at %s (%s): %s", where, stage, kind, reason[:300])

    def flush_due(self) -> None:
        """Write the summary of an interval that has ended, if it held more than was logged."""
        now = self._clock()
        if now - self._since < self._interval_s:
            return
        counts, self._counts, seconds, self._since = self._counts, Counter(), now - self._since, now
        total = sum(counts.values())
        if total > sum(min(n, self._first) for n in counts.values()):
            kinds = ", ".join(f"{n:,} {kind}" for kind, n in counts.most_common())
            self._logger.warning(
                "dead-lettered %s events in the last %.0f s: %s (the first %d of each kind are logged; "
                "every one is in %s with its reason and source offset)",
                f"{total:,}", seconds, kinds, self._first, self._topic,
            )
