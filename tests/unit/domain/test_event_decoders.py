"""The fast decoder against the reference, on a generated corpus and mutations of it.

:func:`pinapp.domain.events.parse_event` tries msgspec's one-pass decode and lets the reference
(orjson, the JSON Schema, the rules) decide whatever that rejects. Its verdicts are then the
reference's if, and only if, the fast path never accepts what the reference rejects and
builds the same event when both accept. This holds it to that.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import orjson
import pytest

from pinapp.domain.events import Event, fast_parse_event, parse_event, reference_parse_event
from pinapp.domain.geo import GeoLocator
from pinapp.errors import InvalidEvent
from pinapp.tools.generator import GeneratorConfig, TrafficGenerator

MAX = 16_384

#: Values each field is set to in turn: wrong types, edge lengths, JSON oddities.
ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.0,
    42.0,
    1.5,
    1.6e12,
    1_700_000_000_000,
    1_700_000_000_000.0,
    2**63,
    2**64 - 1,
    2**64,
    2**64 + 1,
    "",
    "x",
    "x" * 64,
    "x" * 65,
    "é" * 64,
    "é" * 65,
    "😀" * 64,
    "😀" * 65,
    "x" * 501,
    "x" * 4001,
    "2024-05-01T12:00:00Z",
    "2024-05-01T12:00:00",
    "2024-05-01T12:00:00+02:00",
    "1999-12-31T23:59:59Z",
    "81.2.69.160",
    "::1",
    "999.1.1.1",
    "1.2.3",
    [],
    {},
    ["x"],
    {"pin_id": "p"},
    "pin",
    "repin",
    "comment",
    "like",
    "login",
    "share",
]
FIELDS = ["event_id", "event_type", "ts", "user_id", "ip", "pin_id", "board_id", "text", "pin", "experiments"]
#: ``experiments`` values at and past each bound: entries, name and group lengths, types.
EXPERIMENT_VALUES: list[Any] = [
    {"search_v2": "treatment"},
    {},
    {"": "a"},
    {"e" * 64: "g" * 64},
    {"e" * 65: "a"},
    {"exp": "x" * 65},
    {"exp": ""},
    {"exp": 1},
    {"exp": None},
    {"exp": ["a"]},
    {f"e{i}": "g" for i in range(16)},
    {f"e{i}": "g" for i in range(17)},
    {"é" * 64: "😀" * 64},
]
PIN_FIELDS = ["pin_id", "board_id", "user_id", "title", "category", "created_at", "description", "image_url"]


def _fast(data: bytes) -> Event | None:
    return fast_parse_event(data, max_bytes=MAX)


def _reference(data: bytes) -> Event | InvalidEvent:
    try:
        return reference_parse_event(data, max_bytes=MAX)
    except InvalidEvent as exc:
        return exc


def _dumps(doc: Any) -> bytes:
    """JSON as producers write it (the standard library's: integers of any size)."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def _mutations(doc: dict[str, Any], rng: random.Random) -> list[bytes]:
    out: list[bytes] = []
    for field in FIELDS:
        out.append(_dumps({k: v for k, v in doc.items() if k != field}))
        for value in rng.sample(ODD_VALUES, 6):
            out.append(_dumps({**doc, field: value}))
    out += [_dumps({**doc, "experiments": value}) for value in EXPERIMENT_VALUES]
    if isinstance(doc.get("pin"), dict):
        for field in PIN_FIELDS:
            pin = doc["pin"]
            out.append(_dumps({**doc, "pin": {k: v for k, v in pin.items() if k != field}}))
            for value in rng.sample(ODD_VALUES, 6):
                out.append(_dumps({**doc, "pin": {**pin, field: value}}))
    data = _dumps(doc)
    body = data[1:-1]
    out += [
        b"{" + body + b', "event_id": ""}',  # a duplicate key: the last one counts, in both
        b'{"event_id": "", ' + body + b"}",
        b'{"user_id": 7, ' + body + b"}",
        data + b" trailing",
        b"\xef\xbb\xbf" + data,  # a UTF-8 byte order mark
        data.replace(b'"', b"'", 2),
        data.replace(b"}", b"", 1),
        data[: len(data) // 2],
        data.replace(b'"ip"', b'"ip\xff"'),  # invalid UTF-8
        data.replace(b'"ip":"', b'"ip":"\\ud800'),  # a lone surrogate
        data.replace(b'"user_id":"', b'"user_id":"\\u00e9'),
        b"[" + data + b"]",
        b"null",
    ]
    return out


@pytest.fixture(scope="module")
def corpus() -> list[bytes]:
    rng = random.Random(5)
    gen = TrafficGenerator(GeneratorConfig(seed=11, duplicate_ratio=0.02, malformed_ratio=0.1), GeoLocator())
    records = [next(gen) for _ in range(3000)]
    out = [r.value for r in records]
    valid = [orjson.loads(r.value) for r in records if r.kind == "valid"]
    for doc in rng.sample(valid, 300):
        out += _mutations(doc, rng)
    return out


def test_the_corpus_has_both_verdicts_of_every_kind(corpus: list[bytes]) -> None:
    verdicts = Counter(type(v).__name__ if isinstance(v, Event) else v.kind for v in map(_reference, corpus))
    assert verdicts["Event"] > 3000 and len(corpus) > 25_000
    for kind in ("not_json", "not_object", "schema", "bad_timestamp", "bad_ip", "too_large"):
        assert verdicts[kind] > 0, verdicts


def test_the_fast_path_accepts_only_what_the_reference_accepts_and_builds_the_same_event(
    corpus: list[bytes],
) -> None:
    handed_over: list[bytes] = []
    for data in corpus:
        fast, ref = _fast(data), _reference(data)
        if fast is not None:
            assert fast == ref, data
        elif isinstance(ref, Event):
            handed_over.append(data)
    # The reference accepts two kinds of input msgspec rejects, and parse_event still accepts
    # them, through the reference: an integer written as a float (JSON Schema's "integer"
    # takes 1.6e12), and a key sent twice whose first value is invalid (orjson keeps the last;
    # msgspec checks each as it reads it).
    unexplained = [d for d in handed_over if not (_integer_as_float(d) or d.startswith(DUPLICATE_FIRST))]
    assert not unexplained, unexplained[:3]
    assert handed_over, "the corpus has both kinds"


DUPLICATE_FIRST = (b'{"event_id": "", ', b'{"user_id": 7, ')


def _integer_as_float(data: bytes) -> bool:
    return any(isinstance(v, float) and v.is_integer() for v in _numbers(orjson.loads(data)))


def _numbers(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    return [value] if isinstance(value, float) else []


def test_parse_event_gives_the_reference_verdict_and_reason(corpus: list[bytes]) -> None:
    for data in corpus:
        ref = _reference(data)
        try:
            got: Event | InvalidEvent = parse_event(data, max_bytes=MAX)
        except InvalidEvent as exc:
            got = exc
        if isinstance(ref, InvalidEvent):
            assert isinstance(got, InvalidEvent) and (got.kind, got.reason) == (ref.kind, ref.reason), data
        else:
            assert got == ref, data


def test_a_float_that_is_an_integer_is_settled_as_json_schema_says() -> None:
    """Known disagreement, settled for the reference: ``created_at`` is a JSON Schema integer, and
    1.6e12 is one there; ``ts`` is checked by pinapp's own rule, which takes only an int or a string."""
    pin = {"pin_id": "p1", "board_id": "b1", "user_id": "u1", "title": "t", "category": "art", "created_at": 1.6e12}
    doc = {
        "event_id": "e1",
        "event_type": "pin",
        "ts": 1_700_000_000_000,
        "user_id": "u1",
        "ip": "81.2.69.160",
        "pin_id": "p1",
        "pin": pin,
    }
    assert _fast(_dumps(doc)) is None
    assert parse_event(_dumps(doc), max_bytes=MAX).carried_pin.created_at == 1.6e12  # type: ignore[union-attr]
    with pytest.raises(InvalidEvent) as info:
        parse_event(_dumps({**doc, "ts": 1.7e12}), max_bytes=MAX)
    assert info.value.kind == "bad_timestamp"
