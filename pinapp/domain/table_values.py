"""faust records stored in pinapp's tables. Namespaces are explicit so that moving a
module never changes the wire format of a changelog."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, NamedTuple

import faust

from pinapp.domain.events import PinFields

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
    def from_event_field(cls, pin: PinFields | Mapping[str, Any]) -> Pin:
        """The pin an event carried in its ``pin`` field (already checked), decoded or as JSON."""
        if isinstance(pin, PinFields):
            return cls(
                pin_id=pin.pin_id,
                board_id=pin.board_id,
                user_id=pin.user_id,
                title=pin.title,
                category=pin.category,
                created_at=pin.created_at,
            )
        return cls(
            pin_id=pin["pin_id"],
            board_id=pin["board_id"],
            user_id=pin["user_id"],
            title=pin["title"],
            category=pin["category"],
            created_at=pin["created_at"],
        )


class SeenEvent(NamedTuple):
    """When and where an event_id was first accepted (value of ``seen_event_ids``).

    Keeping the source partition and offset lets dedup tell a *redelivery* of the same
    Kafka record (after a crash before commit: must be processed again) from a *resend*
    of the event as a new record (a duplicate: dropped).

    Stored as 20 packed bytes rather than a JSON faust Record: it is written and read for
    every event, and the struct is ~10x cheaper to encode and decode.
    """

    seen_at_ms: int
    partition: int
    offset: int

    def to_bytes(self) -> bytes:
        return _SEEN.pack(self.seen_at_ms, self.partition, self.offset)

    @classmethod
    def from_bytes(cls, raw: bytes) -> SeenEvent:
        """Decode a stored value. Raises ValueError for anything that is not one."""
        try:
            return cls(*_SEEN.unpack(raw))
        except struct.error as exc:
            raise ValueError(f"not a SeenEvent ({len(raw)} bytes): {exc}") from None


_SEEN = struct.Struct(">qiq")
