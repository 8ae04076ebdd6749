"""The sink's value literals and statement splitting (the round trip is tested on MariaDB)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pinapp.sql_values import insert_statements, sql_literal


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("plain", "'plain'"),
        ("", "''"),
        ("it's", "'it\\'s'"),
        ('say "hi"', "'say \\\"hi\\\"'"),
        ("a\\b", "'a\\\\b'"),
        ("l1\nl2\r\x00\x1a", "'l1\\nl2\\r\\0\\Z'"),
        ("é😀", "'é😀'"),
        ("50% off %s", "'50% off %s'"),  # no % formatting anywhere
        (None, "NULL"),
        (51.5, "51.5"),
        (-0.1, "-0.1"),
        (1e-05, "1e-05"),
        (7, "7"),
        (datetime(2026, 12, 2, 20, 1, 2, 345000), "'2026-12-02 20:01:02.345000'"),
        (datetime(2026, 12, 2), "'2026-12-02 00:00:00'"),
    ],
)
def test_each_sink_value_has_its_literal(value: object, literal: str) -> None:
    assert sql_literal(value) == literal


@pytest.mark.parametrize("value", [float("nan"), float("inf"), b"bytes", datetime(2026, 1, 1, tzinfo=UTC), [1]])
def test_a_value_no_column_holds_is_refused(value: object) -> None:
    with pytest.raises(TypeError):
        sql_literal(value)


def test_statements_split_where_they_would_pass_the_limit() -> None:
    rows = [("x" * 40, i) for i in range(10)]
    statements = list(insert_statements("INSERT INTO t (a, b) VALUES", rows, "ON DUPLICATE KEY UPDATE b = b",
                                        max_bytes=200))
    assert len(statements) > 1 and all(len(s) <= 200 for s in statements)
    values = b",".join(s.split(b"VALUES ", 1)[1].rsplit(b" ON DUPLICATE", 1)[0] for s in statements)
    assert values.count(b"(") == 10 and values.startswith(b"('" + b"x" * 40 + b"',0)")
    assert list(insert_statements("P", [], "S")) == []
    assert list(insert_statements("P VALUES", [("y" * 500,)], "S", max_bytes=100)) == [
        b"P VALUES ('" + b"y" * 500 + b"') S"]  # a row over the limit still goes, alone
