"""Sample inputs several unit tests share."""

from __future__ import annotations

#: A full pin, as a pin event carries it.
PIN = {
    "pin_id": "p1",
    "board_id": "b1",
    "user_id": "u9",
    "title": "t",
    "category": "art",
    "created_at": 1_700_000_000_000,
}
