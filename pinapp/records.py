"""faust records stored in pinapp's tables. Namespaces are explicit so that moving a
module never changes the wire format of a changelog."""

from __future__ import annotations

from typing import Any

import faust

__all__ = ["Pin", "SeenEvent"]


class Pin(faust.Record, namespace="pinapp.Pin", serializer="json"):
    """The full pin, as the pin cache (``pin_by_id``) holds it."""

    pin_id: str
    board_id: str
    user_id: str
    title: str
    category: str
    created_at: int  # epoch ms

    @classmethod
    def from_event_field(cls, pin: dict[str, Any]) -> "Pin":
        """The pin carried in an event's ``pin`` field (already schema-checked)."""
        return cls(
            pin_id=pin["pin_id"],
            board_id=pin["board_id"],
            user_id=pin["user_id"],
            title=pin["title"],
            category=pin["category"],
            created_at=pin["created_at"],
        )


class SeenEvent(faust.Record, namespace="pinapp.SeenEvent", serializer="json"):
    """When and where an event_id was first accepted (value of ``seen_event_ids``).

    Keeping the source partition and offset lets dedup tell a *redelivery* of the same
    Kafka record (after a crash before commit: must be processed again) from a *resend*
    of the event as a new record (a duplicate: dropped).
    """

    seen_at_ms: int
    partition: int
    offset: int
