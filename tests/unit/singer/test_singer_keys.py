"""Singer's key rule: ``line_key`` (Python, every case) and the C rule of the hot loop
(``pinapp.singer._rdkafka``), which must agree with it on every line it keys."""

from __future__ import annotations

import random

import msgspec

from pinapp.domain.geo import GeoLocator
from pinapp.singer._rdkafka import scan_key
from pinapp.singer.keys import PIN_TYPES, line_key, produce_lines
from pinapp.tools.generator import GeneratorConfig, TrafficGenerator

# Lines the C rule keys itself, with the key it must give.
KEYED_IN_C = [
    (b'{"event_type":"repin","pin_id":"p1","user_id":"u1"}', b"p1"),
    (b'{"event_type":"login","user_id":"u1"}', b"u1"),
    (b'{"event_type":"like","pin_id":"p1","user_id":"u1","pin":{"pin_id":"p9","user_id":"u9"}}', b"p1"),
    (b'{"event_type": "login", "pin_id": "p1", "user_id": "u1"}', b"u1"),  # not a pin event
    (b'{"event_type":"repin","pin_id":null,"user_id":"u1"}', b"u1"),
    (
        (
            b' {"pin":{"user_id":"u9","x":[1,{"pin_id":"p9"}]},"note":"a \\"pin_id\\": \\"p8\\"",'
            b'"event_type":"comment","user_id":"u1","ts":17,"ok":true,"pin_id":"p1"} '
        ),
        b"p1",
    ),  # nested and quoted look-alikes
    (b'{"event_type":"pin","user_id":"u1","pin_id":"p1","tags":[],"meta":{}}', b"p1"),
    (b'{"event_type":"login","user_id":7}', b"7"),  # integer ids: their decimal string
    (b'{"event_type":"repin","pin_id":18446744073709551615,"user_id":0}', b"18446744073709551615"),
    (b'{"event_type":"login","pin_id":5,"user_id": 12 }', b"12"),
]
# Lines the C rule leaves to line_key: unusual, or not a well-formed event.
LEFT_TO_PYTHON = [
    b'{"event_type":"repin","pin_id":7,"user_id":"u\\u00e9"}',  # a pin_id of another type, an escape
    b'{"event_type":"comment","pin_id":"p\\u00e9","user_id":"u1"}',  # an escape in the key
    '{"event_type":"comment","pin_id":"pé","user_id":"u1"}'.encode(),  # not ASCII
    b'{"event_type":"login","user_id":7.0}',  # a float, an exponent, a sign, a leading zero, 21 digits
    b'{"event_type":"login","user_id":7e1}',
    b'{"event_type":"login","user_id":-7}',
    b'{"event_type":"login","user_id":07}',
    b'{"event_type":"login","user_id":123456789012345678901}',
    b'{"event_type":7,"user_id":"u1"}',
    b'{"user_id":"u1"}',  # no event_type
    b'{"event_type":"pin","pin_id":"p1"}',  # no user_id
    b'{"event_type":"pin","user_id":"u1","user_id":"u2"}',  # given twice
    b'{"event_type":"pin","user_id":"u1"} trailing',
    b'{"event_type":"pin","user_id":"u1"',  # cut short
    b'["event_type","login"]',
    b"{}",
    b"not json",
    b"",
]


def test_the_c_rule_keys_well_formed_events_as_line_key_does() -> None:
    for line, key in KEYED_IN_C:
        assert scan_key(line, PIN_TYPES) == key == line_key(line), line


def test_the_c_rule_leaves_unusual_lines_to_line_key() -> None:
    for line in LEFT_TO_PYTHON:
        assert scan_key(line, PIN_TYPES) is None, line
    # An integer id keys as its decimal string, here too.
    assert [line_key(line) for line in LEFT_TO_PYTHON[:3]] == [b"7", "p\u00e9".encode(), "pé".encode()]


def test_the_c_rule_agrees_with_line_key_on_generated_traffic() -> None:
    """Generated events, 5% of them malformed in the generator's ways: wherever the C rule gives
    a key it is line_key's, and it keys every well-formed event itself (else the loop is not hot)."""
    gen = TrafficGenerator(GeneratorConfig(seed=7, malformed_ratio=0.05), GeoLocator(), keep_ids=False)
    records = [next(gen) for _ in range(20_000)]
    left_to_python = 0
    for record in records:
        key = scan_key(record.value, PIN_TYPES)
        if key is None:
            assert record.kind == "malformed", record.value
            left_to_python += 1
        else:
            assert key == line_key(record.value), record.value
    assert left_to_python > 0  # some malformed lines did take line_key


def test_on_mutated_lines_the_c_rule_never_keys_valid_json_differently() -> None:
    """Generated lines with bytes deleted, inserted, replaced or cut off: whenever the result is
    still valid JSON and the C rule keys it, the key is line_key's (and nothing crashes)."""
    gen = TrafficGenerator(GeneratorConfig(seed=11), GeoLocator(), keep_ids=False)
    originals = [next(gen).value for _ in range(2_000)]
    rnd = random.Random(11)
    alphabet = b'{}[]":,\\ \tabc019-.enulltrfs'
    keyed_valid = 0
    for _ in range(30_000):
        line = bytearray(rnd.choice(originals))
        for _ in range(rnd.randint(1, 4)):
            at = rnd.randrange(len(line) + 1)
            match rnd.randrange(4):
                case 0 if line[at:]:
                    del line[at]
                case 1:
                    line.insert(at, rnd.choice(alphabet))
                case 2 if line[at:]:
                    line[at] = rnd.choice(alphabet)
                case _:
                    del line[at:]
        data = bytes(line)
        key = scan_key(data, PIN_TYPES)
        if key is None:
            continue
        try:
            msgspec.json.decode(data)
        except msgspec.DecodeError:
            continue  # not JSON: the topology dead-letters it, whatever its key
        keyed_valid += 1
        assert key == line_key(data), data
    assert keyed_valid > 1_000


class _Recorder:
    """Stands in for the C producer: ``produce_lines`` stops where the C rule would."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes | None, str]] = []

    def produce_lines(self, topic: str, lines: list[bytes], start: int) -> int:
        for i in range(start, len(lines)):
            key = scan_key(lines[i], PIN_TYPES)
            if key is None:
                return i
            self.sent.append((lines[i], key, "c"))
        return len(lines)

    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.sent.append((value, key, "python"))


def test_lines_left_to_line_key_keep_their_place() -> None:
    lines = [KEYED_IN_C[0][0], LEFT_TO_PYTHON[0], LEFT_TO_PYTHON[-2], KEYED_IN_C[1][0], LEFT_TO_PYTHON[3]]
    producer = _Recorder()
    produce_lines(producer, "events", lines)  # type: ignore[arg-type]
    assert [(value, key) for value, key, _ in producer.sent] == [(line, line_key(line)) for line in lines]
    assert [how for _, _, how in producer.sent] == ["c", "python", "python", "c", "python"]


def test_an_integer_id_keys_its_partition_as_its_decimal_string_does() -> None:
    """Singer keys 42 and "42" alike (so both land in one partition), in C and in Python."""
    pairs = [
        (b'{"event_type":"repin","pin_id":42,"user_id":"u1"}', b'{"event_type":"repin","pin_id":"42","user_id":"u1"}'),
        (
            b'{"event_type":"login","user_id":18446744073709551615}',
            b'{"event_type":"login","user_id":"18446744073709551615"}',
        ),
        (b'{"event_type":"like","pin_id":7,"user_id":8}', b'{"event_type":"like","pin_id":"7","user_id":"8"}'),
    ]
    for numeric, text in pairs:
        key = line_key(numeric)
        assert key is not None and key == line_key(text) == scan_key(text, PIN_TYPES) == scan_key(numeric, PIN_TYPES)
    # A float is no id: the pin event falls back to the user's key (and is dead-lettered downstream).
    assert line_key(b'{"event_type":"repin","pin_id":42.0,"user_id":"u1"}') == b"u1"
    assert line_key(b'{"event_type":"login","user_id":4.5}') is None
