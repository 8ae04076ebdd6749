"""The dead-letter record's headers: why an input was rejected and where it came from.

One convention (Kafka Connect's, under ``pinapp.dlq.``) for every producer of dead letters:
the topology (:mod:`pinapp.dead_letter`) and the log shipper (:mod:`pinapp.singer`), which
has no faust app to import.
"""

from __future__ import annotations

from typing import Final

__all__ = ["HEADER_PREFIX", "dlq_headers"]

HEADER_PREFIX: Final = "pinapp.dlq."


def dlq_headers(reason: str, *, kind: str, stage: str, **source: object) -> list[tuple[str, bytes]]:
    """``reason``, ``kind``, ``stage``, then each ``source`` field (topic, offset, file...)."""
    fields = {"reason": reason, "kind": kind, "stage": stage, **source}
    return [(HEADER_PREFIX + name, str(value).encode()) for name, value in fields.items()]
