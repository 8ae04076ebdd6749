"""Rows fit their tables; ad-hoc SQL is read-only."""

from __future__ import annotations

import re
from datetime import datetime

import orjson
import pytest

from config import TrendSettings
from pinapp.adapters.queries import (
    ALLOCATION_SQL,
    EXPERIMENT_ENGAGEMENT_SQL,
    NAMED_QUERIES,
    NEW_USERS_SQL,
    ReadOnlyViolation,
    check_read_only,
    query_params,
)
from pinapp.domain.ddl import COLUMNS
from pinapp.domain.events import EventType, parse_event
from pinapp.domain.geo import GeoLocation
from pinapp.domain.rows import UNKNOWN_CATEGORY, build_row, ms_to_datetime, pin_row, sql_time
from pinapp.domain.table_values import Pin
from tests.unit.samples import PIN

NOW = datetime(2024, 1, 1)
GEO = GeoLocation("GB", "England", "Willesden", 51.5, -0.2)


def _event(event_type: str, **extra: object):  # type: ignore[no-untyped-def]
    doc = {"event_id": "e1", "event_type": event_type, "ts": 1_700_000_000_123, "user_id": "u1", "ip": "81.2.69.160"}
    if event_type != "login":
        doc["pin_id"] = "p1"
    doc.update(extra)
    return parse_event(orjson.dumps(doc), max_bytes=16_384)


@pytest.mark.parametrize(
    ("event_type", "extra"),
    [("pin", {"pin": PIN}), ("repin", {"board_id": "b2"}), ("comment", {"text": "nice"}), ("like", {}), ("login", {})],
)
def test_each_row_matches_its_table_columns(event_type: str, extra: dict[str, object]) -> None:
    event = _event(event_type, **extra)
    row = build_row(event, GEO, Pin.from_event_field(PIN), NOW)
    columns = COLUMNS[EventType(event_type)]
    assert len(row) == len(columns)
    named = dict(zip(columns, row, strict=True))
    assert named["event_id"] == "e1" and named["country"] == "GB" and named["ingested_at"] == NOW
    assert named["ts"] == "2023-11-14 22:13:20.123000"
    if event_type != "login":
        assert named["category"] == "art"


def test_unknown_pin_gets_the_unknown_category() -> None:
    row = build_row(_event("like"), GEO, None, NOW)
    assert dict(zip(COLUMNS[EventType.LIKE], row, strict=True))["category"] == UNKNOWN_CATEGORY


def test_pin_row_from_a_repin_fits_the_pins_table() -> None:
    row = pin_row(_event("repin"), GEO, Pin.from_event_field(PIN), NOW)
    assert dict(zip(COLUMNS[EventType.PIN], row, strict=True))["user_id"] == "u9"


def test_ms_to_datetime_is_utc() -> None:
    assert ms_to_datetime(0) == datetime(1970, 1, 1)


@pytest.mark.parametrize("ms", [0, 999, 59_999, 60_000, 946_684_800_000, 1_700_000_000_123, 4_102_444_799_999])
def test_sql_time_is_the_datetime_as_text(ms: int) -> None:
    assert sql_time(ms) == ms_to_datetime(ms).isoformat(" ", timespec="microseconds")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "select * from pins;",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "SHOW TABLES",
        "SELECT text FROM comments WHERE text LIKE '%#tag -- not a comment%'",
        "SELECT sleeping_pins FROM x",
    ],
)
def test_read_only_sql_is_accepted(sql: str) -> None:
    assert check_read_only(sql) == sql.strip().rstrip(";")


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM pins",
        "SELECT 1; DROP TABLE pins",
        "UPDATE pins SET title = ''",
        "SELECT * INTO OUTFILE '/tmp/x' FROM pins",
        "INSERT INTO pins VALUES (1)",
        "SET GLOBAL x = 1",
        # what passed before the reader account: files, executable comments, holding the server
        "SELECT title FROM pins INTO DUMPFILE '/tmp/x'",
        "SELECT * FROM pins INTO/**/OUTFILE '/tmp/x'",
        "SELECT * FROM pins /*!50000 INTO*/ /*!50000 OUTFILE '/tmp/x'*/",
        "SELECT LOAD_FILE('/etc/passwd')",
        "SELECT SLEEP(600) FROM pins LOCK IN SHARE MODE",
        "SELECT * FROM pins FOR UPDATE",
        "SELECT BENCHMARK(100000000, SHA2('x', 512))",
        "SELECT * FROM repins INTO S3 'bucket/x' CONFIG '{}' CREDENTIALS '{}'",
        "SELECT * FROM repins INTO KAFKA 'host/topic'",
        "SELECT * FROM repins INTO FS '/tmp/x'",
    ],
)
def test_writes_are_refused(sql: str) -> None:
    with pytest.raises(ReadOnlyViolation):
        check_read_only(sql)


def test_named_queries_cover_the_analyst_questions() -> None:
    assert set(NAMED_QUERIES) == {
        "events-per-minute",
        "top-categories",
        "top-countries",
        "most-repinned",
        "trending-pins",
        "trending-categories",
        "trending-countries",
    }
    params = query_params(60, 10, TrendSettings())
    for q in NAMED_QUERIES.values():
        assert "%(w_" in q.sql and "%(limit)s" in q.sql, "bounded by the window, limited"
        assert set(re.findall(r"%\((\w+)\)s", q.sql)) <= set(params), q.name


@pytest.mark.parametrize(
    "sql",
    [*(q.sql for q in NAMED_QUERIES.values()), ALLOCATION_SQL, EXPERIMENT_ENGAGEMENT_SQL, NEW_USERS_SQL],
)
def test_what_users_see_reads_rollups_never_the_raw_event_rows(sql: str) -> None:
    """Their cost follows the window's buckets, not the events in it (``pins`` only names the top pins)."""
    raw = re.findall(r"\b(?:FROM|JOIN)\s+(repins|comments|likes|logins|experiment_exposures|pins)\b", sql)
    assert set(raw) <= {"pins"}, raw
    assert "JOIN pins" in sql or "pins" not in raw
