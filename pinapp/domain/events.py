"""Engagement events: the event types, and turning input bytes into a checked event.

Over 400 lines on purpose: :func:`parse_event` is the one edge where bytes become events, and its
fast decoder and the reference it must agree with stay side by side (tests/unit/domain/test_event_decoders.py).

Design notes: docs/architecture.md, "pinapp/domain/events.py".
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from typing import Annotated, Any, Final, cast

import fastjsonschema
import msgspec
import orjson
from msgspec import UNSET, Meta, UnsetType

from pinapp.errors import InvalidEvent

__all__ = [
    "EVENT_TYPES",
    "PIN_EVENT_TYPES",
    "Event",
    "EventType",
    "PinFields",
    "fast_parse_event",
    "normalize_id",
    "parse_event",
    "parse_timestamp_ms",
    "reference_parse_event",
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
#: Ids may also come as JSON integers (many servers log 64-bit numeric ids): 0 .. 2^64-1.
MAX_INT_ID: Final = 2**64 - 1
#: The fields holding ids: each a string, or an integer kept as its decimal string.
ID_FIELDS: Final = ("event_id", "user_id", "pin_id", "board_id")
PIN_ID_FIELDS: Final = ("pin_id", "board_id", "user_id")


class Event(msgspec.Struct, frozen=True, gc=False):
    """A valid engagement event: the fields pinapp uses, and the input bytes it came from.

    A msgspec ``Struct``: made once per input event, it costs a tenth of a frozen
    dataclass's ``__init__``. ``gc=False``: it holds no container that could make a cycle.
    """

    event_id: str
    event_type: EventType
    ts_ms: int
    user_id: str
    ip: str
    pin_id: str | None
    board_id: str | None  # repin: the board the pin was saved to
    text: str | None  # comment
    carried_pin: PinFields | None  # the full pin the event carries (``pin``), if any
    data: bytes
    experiments: dict[str, str] | None = None  # experiment name -> group (``experiments``), if any

    @property
    def raw(self) -> dict[str, Any]:
        """Every input field, extras included (decoded again on each call: not for hot paths)."""
        return orjson.loads(self.data)

    @property
    def pin(self) -> dict[str, Any] | None:
        """The ``pin`` field as it was sent (see :attr:`raw`), if any."""
        return self.raw.get("pin")


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The published JSON Schema of an input event."""
    text = resources.files("pinapp.domain.schema").joinpath("event.schema.json").read_bytes()
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


def normalize_id(value: str | int) -> str:
    """An id as pinapp keeps it: a string as it is, an integer id as its decimal string, so
    ``42`` and ``"42"`` are one id for dedup, keys and rows."""
    return value if type(value) is str else str(value)


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
    """Decode and check one input event: the fast path, else the reference (module docstring).

    Raises:
        InvalidEvent: with a reason fit for the dead-letter topic.
    """
    event = fast_parse_event(data, max_bytes=max_bytes)
    return event if event is not None else reference_parse_event(data, max_bytes=max_bytes)


def fast_parse_event(data: bytes, *, max_bytes: int) -> Event | None:
    """The fast path: the event, or ``None`` for anything it does not accept."""
    if len(data) > max_bytes:
        return None
    try:
        doc = _fast_decode(data)
    except Exception:  # noqa: BLE001 - any failure (even invalid UTF-8 raises UnicodeDecodeError): the reference decides
        return None
    return _event_from_struct(doc, data)


def reference_parse_event(data: bytes, *, max_bytes: int) -> Event:
    """The reference decoder: orjson, the JSON Schema, then pinapp's rules.

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
    _check_padded_ids(doc)
    try:
        _validator()(doc)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise InvalidEvent(f"schema: {exc.message}", kind="schema") from None
    pin = doc.get("pin")
    _check_integer_ids(doc, ID_FIELDS, "")
    if pin is not None:
        _check_integer_ids(pin, PIN_ID_FIELDS, "pin.")
    ts_ms = parse_timestamp_ms(doc["ts"])
    ip = doc["ip"]
    if not _is_ip_address(ip):
        raise InvalidEvent(f"ip: {ip!r} is not an IPv4 or IPv6 address", kind="bad_ip")
    pin_id = doc.get("pin_id")
    pin_id = None if pin_id is None else normalize_id(pin_id)
    if pin is not None and normalize_id(pin["pin_id"]) != pin_id:
        raise InvalidEvent(
            f"pin.pin_id {pin['pin_id']!r} differs from the event's pin_id {doc.get('pin_id')!r}", kind="schema"
        )
    board_id = doc.get("board_id")
    return Event(
        event_id=normalize_id(doc["event_id"]),
        event_type=EventType(doc["event_type"]),
        ts_ms=ts_ms,
        user_id=normalize_id(doc["user_id"]),
        ip=ip,
        pin_id=pin_id,
        board_id=None if board_id is None else normalize_id(board_id),
        text=doc.get("text"),
        carried_pin=_pin_fields(pin) if pin is not None else None,
        data=data,
        experiments=doc.get("experiments") or None,
    )


def _check_padded_ids(doc: dict[str, Any]) -> None:
    """An id (or experiment or group name) may not end with a space: ids compare as bytes, but
    SingleStore's and MySQL's PAD SPACE collations make ``e1`` and ``e1 `` one key."""
    pin, experiments = doc.get("pin"), doc.get("experiments")
    named = [(f, doc.get(f)) for f in ID_FIELDS]
    if isinstance(pin, dict):
        named += [(f"pin.{f}", pin.get(f)) for f in (*PIN_ID_FIELDS, "category")]
    if isinstance(experiments, dict):
        named += [("experiments", k) for k in experiments]
        named += [(f"experiments.{k}", v) for k, v in experiments.items()]
    for field, value in named:
        if isinstance(value, str) and value.endswith(" "):
            raise InvalidEvent(
                f"schema: {field}: {value!r} ends with a space (ids are compared as bytes; a key would not tell it "
                "from the id without the space)",
                kind="schema",
            )


def _padded(experiments: dict[str, str]) -> bool:
    """Whether an experiment or group name ends with a space (the fast path's check)."""
    for name, group in experiments.items():  # noqa: SIM110 - a loop: any() over a generator costs more here
        if name[-1:] == " " or group[-1:] == " ":
            return True
    return False


def _check_integer_ids(doc: dict[str, Any], fields: tuple[str, ...], prefix: str) -> None:
    """JSON Schema's "integer" takes ``42.0``; an id is a string or an integer, never a float."""
    for field in fields:
        value = doc.get(field)
        if type(value) is float:
            raise InvalidEvent(
                f"schema: {prefix}{field}: {value!r} is not an id (a string, or an integer "
                f"0..{MAX_INT_ID} without a fraction or exponent)",
                kind="schema",
            )


# -- the fast path: the schema as msgspec types (keep in step with event.schema.json) ---------

_Id = Annotated[str, Meta(min_length=1, max_length=64)]
#: an id field: a string, or an integer id (normalized to its decimal string by normalize_id);
#: msgspec bounds ints to int64 only, so the fast path checks ``MAX_INT_ID`` itself
_AnyId = _Id | Annotated[int, Meta(ge=0)]
_Ip = Annotated[str, Meta(min_length=2, max_length=45)]
_Text = Annotated[str, Meta(max_length=4000)]
_Name = Annotated[str, Meta(min_length=1, max_length=64)]
#: ``experiments``: experiment name -> group name, at most 16 (MAX_EXPERIMENTS)
_Experiments = Annotated[dict[_Name, _Name], Meta(max_length=16)]


class PinFields(msgspec.Struct, kw_only=True, frozen=True):
    """The full pin an event carries (its ``pin`` field), checked."""

    pin_id: _AnyId
    board_id: _AnyId
    user_id: _AnyId
    title: Annotated[str, Meta(max_length=500)]
    category: _Id
    created_at: Annotated[int, Meta(ge=MIN_TS_MS, le=MAX_TS_MS)]
    description: _Text | UnsetType = UNSET
    image_url: Annotated[str, Meta(max_length=2000)] | UnsetType = UNSET


class _Doc(msgspec.Struct, kw_only=True, tag_field="event_type"):
    event_id: _AnyId
    ts: int | str
    user_id: _AnyId
    ip: _Ip
    pin_id: _AnyId | UnsetType = UNSET
    board_id: _AnyId | UnsetType = UNSET
    text: _Text | UnsetType = UNSET
    pin: PinFields | UnsetType = UNSET
    experiments: _Experiments | UnsetType = UNSET


class _PinEvent(_Doc, tag="pin"):
    pin_id: _AnyId
    pin: PinFields


class _Repin(_Doc, tag="repin"):
    pin_id: _AnyId


class _Comment(_Doc, tag="comment"):
    pin_id: _AnyId
    text: _Text


class _Like(_Doc, tag="like"):
    pin_id: _AnyId


class _Login(_Doc, tag="login"):
    pass


_TYPE_OF: Final[dict[type, EventType]] = {
    _PinEvent: EventType.PIN,
    _Repin: EventType.REPIN,
    _Comment: EventType.COMMENT,
    _Like: EventType.LIKE,
    _Login: EventType.LOGIN,
}
_fast_decode = msgspec.json.Decoder(_PinEvent | _Repin | _Comment | _Like | _Login).decode


def _pin_fields(pin: dict[str, Any]) -> PinFields:
    return PinFields(
        pin_id=normalize_id(pin["pin_id"]),
        board_id=normalize_id(pin["board_id"]),
        user_id=normalize_id(pin["user_id"]),
        title=pin["title"],
        category=pin["category"],
        created_at=pin["created_at"],
        description=pin.get("description", UNSET),
        image_url=pin.get("image_url", UNSET),
    )


def _normalized_pin(pin: PinFields) -> PinFields | None:
    """``pin`` with its ids as strings (a carried pin's ids may be integers); ``None`` for an
    integer id over ``MAX_INT_ID``."""
    if type(pin.pin_id) is str and type(pin.board_id) is str and type(pin.user_id) is str:
        return pin
    if not all(_fits(v) for v in (pin.pin_id, pin.board_id, pin.user_id)):
        return None
    return msgspec.structs.replace(
        pin, pin_id=normalize_id(pin.pin_id), board_id=normalize_id(pin.board_id), user_id=normalize_id(pin.user_id)
    )


def _fits(value: object) -> bool:
    return type(value) is not int or value <= MAX_INT_ID


def _event_from_struct(doc: _Doc, data: bytes) -> Event | None:
    """The event, or ``None`` when a rule fails (the reference then gives the reason)."""
    try:
        ts_ms = parse_timestamp_ms(doc.ts)
    except InvalidEvent:
        return None
    if not _is_ip_address(doc.ip):
        return None
    event_id, user_id, pin_id, board_id = doc.event_id, doc.user_id, doc.pin_id, doc.board_id
    if not (
        type(event_id) is str
        and type(user_id) is str
        and (type(pin_id) is str or pin_id is UNSET)
        and (type(board_id) is str or board_id is UNSET)
    ):  # an integer id among them
        if not (_fits(event_id) and _fits(user_id) and _fits(pin_id) and _fits(board_id)):
            return None
        event_id, user_id = normalize_id(event_id), normalize_id(user_id)
        pin_id = pin_id if pin_id is UNSET else normalize_id(pin_id)
        board_id = board_id if board_id is UNSET else normalize_id(board_id)
    pin: str | None = None if pin_id is UNSET else pin_id  # a str by here: normalized above
    if (  # an id ending with a space: refused (written out, this runs for every event)
        event_id[-1] == " "
        or user_id[-1] == " "
        or (pin is not None and pin[-1] == " ")
        or (board_id is not UNSET and board_id[-1] == " ")
    ):
        return None
    carried = None
    if doc.pin is not UNSET:
        carried = _normalized_pin(doc.pin)
        if (
            carried is None
            or carried.pin_id != pin
            or cast(str, carried.board_id)[-1] == " "  # ids are strings once normalized
            or cast(str, carried.user_id)[-1] == " "
            or carried.category[-1] == " "
        ):
            return None
    if doc.experiments is not UNSET and doc.experiments and _padded(doc.experiments):
        return None
    return Event(
        event_id=event_id,
        event_type=_TYPE_OF[type(doc)],
        ts_ms=ts_ms,
        user_id=user_id,
        ip=doc.ip,
        pin_id=pin,
        board_id=None if board_id is UNSET else board_id,
        text=None if doc.text is UNSET else doc.text,
        carried_pin=carried,
        experiments=None if doc.experiments is UNSET or not doc.experiments else doc.experiments,
        data=data,
    )
