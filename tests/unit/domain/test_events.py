"""Validation at the edge: what is accepted, and the reason for what is not."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import orjson
import pytest

from pinapp.domain.events import (
    EVENT_TYPES,
    EventType,
    parse_event,
    parse_timestamp_ms,
    reference_parse_event,
    routing_key,
    schema,
)
from pinapp.errors import InvalidEvent

MAX = 16_384


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": "e1",
        "event_type": "repin",
        "ts": 1_700_000_000_000,
        "user_id": "u1",
        "ip": "81.2.69.160",
        "pin_id": "p1",
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


def _parse(doc: Any) -> Any:
    return parse_event(orjson.dumps(doc), max_bytes=MAX)


def test_schema_file_is_valid_json_schema_and_lists_every_type() -> None:
    jsonschema.Draft202012Validator.check_schema(schema())
    assert schema()["properties"]["event_type"]["enum"] == [t.value for t in EVENT_TYPES]


def test_valid_repin_is_parsed() -> None:
    event = _parse(_doc(board_id="b9"))
    assert (event.event_id, event.event_type, event.ts_ms, event.pin_id) == (
        "e1",
        EventType.REPIN,
        1_700_000_000_000,
        "p1",
    )
    assert event.raw["board_id"] == "b9"


def test_pin_event_carries_its_pin() -> None:
    pin = {
        "pin_id": "p1",
        "board_id": "b1",
        "user_id": "u1",
        "title": "t",
        "category": "art",
        "created_at": 1_700_000_000_000,
    }
    assert _parse(_doc(event_type="pin", pin=pin)).pin == pin


@pytest.mark.parametrize(
    ("data", "kind", "reason_part"),
    [
        (b"{not json", "not_json", "not JSON"),
        (b"[1, 2]", "not_object", "not a JSON object"),
        (orjson.dumps(_doc(event_type="share")), "schema", "event_type must be one of"),
        (orjson.dumps(_doc(user_id=None)), "schema", "user_id"),
        (orjson.dumps(_doc(pin_id=None)), "schema", "pin_id"),
        (orjson.dumps(_doc(event_type="comment")), "schema", "text"),
        (orjson.dumps(_doc(event_type="pin")), "schema", "pin"),
        (orjson.dumps(_doc(user_id=True)), "schema", "user_id must be string or integer"),
        (orjson.dumps(_doc(user_id=7.0)), "schema", "user_id: 7.0 is not an id"),
        (orjson.dumps(_doc(user_id=-7)), "schema", "user_id must be bigger than or equal to 0"),
        (
            json.dumps(_doc(pin_id=2**64)).encode(),
            "schema",
            "pin_id must be smaller than or equal to 18446744073709551615",
        ),
        (orjson.dumps(_doc(ts=1_700_000_000)), "bad_timestamp", "outside 2000..2100"),
        (orjson.dumps(_doc(ts="2024-05-01T12:00:00")), "bad_timestamp", "no time zone"),
        (orjson.dumps(_doc(ts="yesterday")), "bad_timestamp", "not ISO 8601"),
        (orjson.dumps(_doc(ip="999.1.1.1")), "bad_ip", "not an IPv4 or IPv6"),
        (orjson.dumps(_doc(padding="x" * MAX)), "too_large", "over the 16384-byte limit"),
        (orjson.dumps(_doc(event_id="e1 ")), "schema", "event_id: 'e1 ' ends with a space"),
        (orjson.dumps(_doc(user_id="u ")), "schema", "user_id: 'u ' ends with a space"),
        (orjson.dumps(_doc(pin_id="p ")), "schema", "pin_id: 'p ' ends with a space"),
        (orjson.dumps(_doc(experiments={"x ": "a"})), "schema", "experiments: 'x ' ends with a space"),
        (orjson.dumps(_doc(experiments={"x": "a "})), "schema", "experiments.x: 'a ' ends with a space"),
    ],
)
def test_malformed_inputs_are_rejected_with_a_reason(data: bytes, kind: str, reason_part: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(data, max_bytes=MAX)
    assert info.value.kind == kind
    assert reason_part in info.value.reason


def test_ids_differing_in_case_are_different_ids_and_a_space_inside_is_kept() -> None:
    ids = {parse_event(orjson.dumps(_doc(event_id=e)), max_bytes=MAX).event_id for e in ("aZ3k", "Az3K", "a b")}
    assert ids == {"aZ3k", "Az3K", "a b"}


def test_pin_must_match_the_event_pin_id() -> None:
    pin = {
        "pin_id": "other",
        "board_id": "b1",
        "user_id": "u1",
        "title": "t",
        "category": "art",
        "created_at": 1_700_000_000_000,
    }
    with pytest.raises(InvalidEvent, match="differs"):
        _parse(_doc(pin=pin))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_700_000_000_123, 1_700_000_000_123),
        ("2023-11-14T22:13:20.123Z", 1_700_000_000_123),
        ("2023-11-15T03:43:20.123+05:30", 1_700_000_000_123),
        ("2023-11-14T17:13:20-05:00", 1_700_000_000_000),
    ],
)
def test_timestamps_in_every_accepted_form(value: object, expected: int) -> None:
    assert parse_timestamp_ms(value) == expected


@pytest.mark.parametrize("value", [True, 1.5, None, 1_700_000_000, 1_700_000_000_000_000, "2024-01-01"])
def test_unusable_timestamps_are_rejected(value: object) -> None:
    with pytest.raises(InvalidEvent):
        parse_timestamp_ms(value)


def test_routing_key_is_pin_id_for_pin_events_else_user_id() -> None:
    assert routing_key("repin", "p1", "u1") == "p1"
    assert routing_key("like", "p1", "u1") == "p1"
    assert routing_key("login", None, "u1") == "u1"
    assert routing_key("login", "p1", "u1") == "u1"


def test_an_integer_id_is_the_same_id_as_its_decimal_string() -> None:
    """Servers that log 64-bit numeric ids: 42 and "42" are one id (dedup, keys, rows)."""
    pin = {
        "pin_id": 42,
        "board_id": 7,
        "user_id": 2**64 - 1,
        "title": "t",
        "category": "art",
        "created_at": 1_700_000_000_000,
    }
    as_ints = _parse(_doc(event_type="pin", event_id=123, user_id=0, pin_id=42, board_id=9, pin=pin))
    as_strings = _parse(
        _doc(
            event_type="pin",
            event_id="123",
            user_id="0",
            pin_id="42",
            board_id="9",
            pin={**pin, "pin_id": "42", "board_id": "7", "user_id": str(2**64 - 1)},
        )
    )
    for event in (as_ints, as_strings):
        assert (event.event_id, event.user_id, event.pin_id, event.board_id) == ("123", "0", "42", "9")
        assert event.carried_pin is not None
        assert (event.carried_pin.pin_id, event.carried_pin.board_id, event.carried_pin.user_id) == (
            "42",
            "7",
            "18446744073709551615",
        )
    assert routing_key(as_ints.event_type, as_ints.pin_id, as_ints.user_id) == "42"
    # The reference decoder (the fast path's fallback) normalizes the same way.
    reference = reference_parse_event(
        orjson.dumps(_doc(event_type="pin", event_id=123, user_id=0, pin_id=42, board_id=9, pin=pin)), max_bytes=MAX
    )
    assert reference == as_ints
    with pytest.raises(InvalidEvent, match="differs"):  # compared as ids: 42 and "43" differ
        _parse(_doc(event_type="pin", pin_id=43, pin=pin))
