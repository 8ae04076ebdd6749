"""Engagement events: the event types, and turning input bytes into a checked event.

This is the one edge where bytes become data. Everything downstream may assume what
:func:`parse_event` guarantees. The JSON Schema in ``schema/event.schema.json`` is the
published contract and drives the structural checks (compiled by fastjsonschema, ~µs per
event); the rules JSON Schema cannot say (timestamp parsing, IP syntax, pin consistency)
follow it here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from typing import Any, Final

import fastjsonschema
import orjson

from pinapp.errors import InvalidEvent

__all__ = [
    "EVENT_TYPES",
    "PIN_EVENT_TYPES",
    "Event",
    "EventType",
    "parse_event",
    "parse_timestamp_ms",
    "routing_key",
    "schema",
]


class EventType(StrEnum):
    """The engagement event types: the one place they are declared."""

    PIN = "pin"
    REPIN = "repin"
    COMMENT = "comment"
    LIKE = "like"
    LOGIN = "login"


EVENT_TYPES: Final = tuple(EventType)
#: Types about one pin: they carry ``pin_id`` and are keyed (partitioned) by it.
PIN_EVENT_TYPES: Final = frozenset({EventType.PIN, EventType.REPIN, EventType.COMMENT, EventType.LIKE})

# Timestamps outside [2000-01-01, 2100-01-01) are rejected: a value there is a unit bug
# (seconds sent as ms, or ns), the classic cause of rows in 1970 (secor #444, #305).
MIN_TS_MS: Final = 946_684_800_000
MAX_TS_MS: Final = 4_102_444_800_000


@dataclass(frozen=True, slots=True)
class Event:
    """A valid engagement event. ``raw`` keeps every input field (extras included)."""

    event_id: str
    event_type: EventType
    ts_ms: int
    user_id: str
    ip: str
    pin_id: str | None
    raw: dict[str, Any]

    @property
    def pin(self) -> dict[str, Any] | None:
        """The full pin the event carries, if any."""
        return self.raw.get("pin")


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The published JSON Schema of an input event."""
    text = resources.files("pinapp.schema").joinpath("event.schema.json").read_bytes()
    return orjson.loads(text)


@lru_cache(maxsize=1)
def _validator() -> Any:
    return fastjsonschema.compile(schema())


def parse_timestamp_ms(value: object) -> int:
    """Event time in epoch milliseconds from epoch ms (int) or ISO 8601 with a zone.

    Raises:
        InvalidEvent: for naive ISO strings (the zone would be a guess), unparsable
            strings, and values outside 2000..2100.
    """
    if isinstance(value, bool):
        raise InvalidEvent("ts: boolean is not a timestamp", kind="bad_timestamp")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidEvent(f"ts: {value!r} is not ISO 8601", kind="bad_timestamp") from None
        if parsed.tzinfo is None:
            raise InvalidEvent(f"ts: {value!r} has no time zone", kind="bad_timestamp")
        ms = int(parsed.timestamp() * 1000)
    else:
        raise InvalidEvent(f"ts: {type(value).__name__} is not a timestamp", kind="bad_timestamp")
    if not MIN_TS_MS <= ms < MAX_TS_MS:
        raise InvalidEvent(f"ts: {value!r} is outside 2000..2100 (epoch ms expected)", kind="bad_timestamp")
    return ms


def routing_key(event_type: str, pin_id: str | None, user_id: str) -> str:
    """The Kafka key of an event: ``pin_id`` where there is one, else ``user_id``.

    All events about one pin, and every resend of one event, land in one partition: the
    pin cache and the dedup table are then local to the worker that sees them.
    """
    return pin_id if pin_id is not None and event_type in PIN_EVENT_TYPES else user_id


@lru_cache(maxsize=65_536)
def _is_ip_address(value: str) -> bool:
    # Client IPs repeat a lot (each user has a few), and parsing one costs ~4 µs.
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def parse_event(data: bytes, *, max_bytes: int) -> Event:
    """Decode and check one input event.

    Raises:
        InvalidEvent: with a reason fit for the dead-letter topic.
    """
    if len(data) > max_bytes:
        raise InvalidEvent(f"event is {len(data)} bytes, over the {max_bytes}-byte limit", kind="too_large")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not JSON: {exc}", kind="not_json") from None
    if not isinstance(doc, dict):
        raise InvalidEvent(f"not a JSON object but {type(doc).__name__}", kind="not_object")
    try:
        _validator()(doc)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise InvalidEvent(f"schema: {exc.message}", kind="schema") from None
    ts_ms = parse_timestamp_ms(doc["ts"])
    ip = doc["ip"]
    if not _is_ip_address(ip):
        raise InvalidEvent(f"ip: {ip!r} is not an IPv4 or IPv6 address", kind="bad_ip")
    pin = doc.get("pin")
    pin_id = doc.get("pin_id")
    if pin is not None and pin["pin_id"] != pin_id:
        raise InvalidEvent(
            f"pin.pin_id {pin['pin_id']!r} differs from the event's pin_id {pin_id!r}", kind="schema"
        )
    return Event(
        event_id=doc["event_id"],
        event_type=EventType(doc["event_type"]),
        ts_ms=ts_ms,
        user_id=doc["user_id"],
        ip=ip,
        pin_id=pin_id,
        raw=doc,
    )
