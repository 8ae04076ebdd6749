"""The sink's value literals and statement splitting (the round trip is tested on MariaDB)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from pinapp.adapters.sql_values import encode_rows, insert_statements, sql_literal


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
    statements = list(
        insert_statements("INSERT INTO t (a, b) VALUES", rows, "ON DUPLICATE KEY UPDATE b = b", max_bytes=200)
    )
    assert len(statements) > 1 and all(len(s) <= 200 for s in statements)
    values = b",".join(s.split(b"VALUES ", 1)[1].rsplit(b" ON DUPLICATE", 1)[0] for s in statements)
    assert values.count(b"(") == 10 and values.startswith(b"('" + b"x" * 40 + b"',0)")
    assert list(insert_statements("P", [], "S")) == []
    assert list(insert_statements("P VALUES", [("y" * 500,)], "S", max_bytes=100)) == [
        b"P VALUES ('" + b"y" * 500 + b"') S"
    ]  # a row over the limit still goes, alone


def _value_by_value(row: tuple[object, ...]) -> str:
    return "(" + ",".join(sql_literal(v) for v in row) + ")"


def test_columns_encoded_at_once_give_the_text_of_each_value() -> None:
    """encode_rows' column-wise shortcuts (one type, one value, nullable) change no byte."""
    rng = random.Random(7)
    samples: list[object] = [
        "id-1",
        "it's",
        "a\\b",
        "50% %s",
        "é😀",
        None,
        0,
        -5,
        2**63,
        51.5,
        -0.0,
        1e-05,
        datetime(2026, 12, 2, 20, 1, 2, 345000),
        datetime(2026, 12, 2),
    ]
    for _ in range(300):
        width, height = rng.randint(1, 6), rng.randint(1, 8)
        # Each column draws from a few of the samples, so single-type, nullable, constant and
        # mixed columns all occur.
        pools = [rng.sample(samples, rng.randint(1, 3)) for _ in range(width)]
        rows = [tuple(rng.choice(pool) for pool in pools) for _ in range(height)]
        assert encode_rows(rows) == [_value_by_value(r) for r in rows], rows


@pytest.mark.parametrize("bad", [float("inf"), datetime(2026, 1, 1, tzinfo=UTC), True, b"x"])
def test_encode_rows_refuses_what_sql_literal_refuses(bad: object) -> None:
    with pytest.raises(TypeError):
        encode_rows([(1, bad), (2, bad)])
    with pytest.raises(TypeError):
        encode_rows([(1, None), (2, bad)])


def test_long_columns_give_the_text_of_each_value() -> None:
    """Batch-sized columns (the float cache filling, overflowing and holding zeros) change no byte."""
    rng = random.Random(11)
    coordinates = [round(rng.uniform(-90, 90), 4) for _ in range(300)] + [0.0, -0.0, None]
    for height in (1, 500, 2000):
        rows = [
            (rng.choice(coordinates), rng.choice(coordinates[:-3]), f"id-{rng.randrange(50)}", rng.randrange(9))
            for _ in range(height)
        ]
        assert encode_rows(rows) == [_value_by_value(r) for r in rows]
    many = [(rng.random(),) for _ in range(70_000)]  # more distinct floats than the cache holds
    assert encode_rows(many) == [_value_by_value(r) for r in many]
