"""The archive's layout and record format (pure logic; the agent builds on it)."""

from __future__ import annotations

import pytest

from pinapp.archive.layout import ObjectKey, event_time_ms, hour_folder
from pinapp.archive.records import ArchivedRecord, decode_jsonl_gz, encode_jsonl_gz

KAFKA_TS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
EXPECTED = 1_704_110_400_000  # 2024-01-01T12:00:00Z


@pytest.mark.parametrize(
    "ts",
    [
        1_704_110_400,  # seconds
        1_704_110_400.0,
        1_704_110_400_000,  # milliseconds
        1_704_110_400_000_000,  # microseconds
        1_704_110_400_000_000_000,  # nanoseconds
        "1704110400000",
        "2024-01-01T12:00:00Z",
        "2024-01-01T12:00:00+00:00",
        "2024-01-01T13:00:00+01:00",
        "2024-01-01T06:30:00-05:30",
        "2024-01-01T12:00:00",  # naive: taken as UTC
    ],
)
def test_every_accepted_timestamp_lands_in_the_right_hour(ts: object) -> None:
    ms = event_time_ms(ts, KAFKA_TS)
    assert ms == EXPECTED
    assert hour_folder(ms) == "dt=2024-01-01/hr=12"


@pytest.mark.parametrize("ts", [None, True, "", "yesterday", 0, -5, 12, "1970-01-01T00:00:00Z", 10**25, [1], {"a": 1}])
def test_unusable_times_fall_back_to_the_kafka_timestamp_never_1970(ts: object) -> None:
    ms = event_time_ms(ts, KAFKA_TS)
    assert ms == KAFKA_TS
    assert hour_folder(ms) == "dt=2023-11-14/hr=22"


def test_hour_folders_are_utc_and_zero_padded() -> None:
    assert hour_folder(0 + 946_684_800_000) == "dt=2000-01-01/hr=00"
    assert hour_folder(1_709_251_199_999) == "dt=2024-02-29/hr=23"


def test_object_keys_are_deterministic_and_parse_back() -> None:
    key = ObjectKey("events", 3, 1_000, 1_999, "dt=2024-01-01/hr=12", prefix="archive/v1")
    text = str(key)
    assert text == (
        "archive/v1/events/dt=2024-01-01/hr=12/events-p0003-00000000000000001000-00000000000000001999.jsonl.gz"
    )
    assert ObjectKey.parse(text) == key
    assert ObjectKey.parse(str(ObjectKey("events-dlq", 0, 0, 9, "dt=2024-01-01/hr=00"))) == ObjectKey(
        "events-dlq", 0, 0, 9, "dt=2024-01-01/hr=00"
    )
    assert ObjectKey.parse("archive/v1/events/dt=2024-01-01/hr=12/_SUCCESS") is None


def test_records_round_trip_byte_for_byte_including_non_utf8() -> None:
    records = [
        ArchivedRecord("events", 2, 10, KAFKA_TS, b"p1", b'{"event_id":"e1"}'),
        ArchivedRecord("events-dlq", 2, 11, KAFKA_TS, None, b"\xff\xfe not utf-8 \n with a newline"),
        ArchivedRecord("events", 2, 12, KAFKA_TS, b"\x00\x01", None),
    ]
    data = encode_jsonl_gz(records)
    assert list(decode_jsonl_gz(data)) == records
    assert encode_jsonl_gz(records) == data  # deterministic bytes: a re-upload is identical
