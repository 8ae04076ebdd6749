"""The rollups' pure rules: windows in buckets, top-K with its bound, the fencing decision."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta

import pytest

from pinapp.adapters.rollup_sql import StoredKeys
from pinapp.domain.ddl import COLUMNS
from pinapp.domain.events import EventType
from pinapp.domain.positions import Claim, Stored, may_write
from pinapp.domain.rollups import Counts, PinCount, grain_ranges, merge_buckets, rows_counts, top_k, window_params
from pinapp.domain.rows import ms_to_datetime

T0 = datetime(2026, 12, 6, 10, 0)


def _minutes(ranges: list[tuple[str, datetime, datetime]]) -> list[datetime]:
    out = []
    for grain, lo, hi in ranges:
        step = timedelta(hours=1) if grain == "h" else timedelta(minutes=1)
        while lo < hi:
            out.extend(lo + timedelta(minutes=m) for m in range(int(step.total_seconds() // 60)))
            lo += step
    return out


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (T0 + timedelta(minutes=7), T0 + timedelta(minutes=22)),  # within an hour: minutes only
        (T0 + timedelta(minutes=7), T0 + timedelta(hours=26, minutes=3)),  # edges in minutes, hours between
        (T0, T0 + timedelta(hours=2)),  # whole hours
        (T0 + timedelta(minutes=59), T0 + timedelta(hours=1, minutes=1)),  # across an hour, none whole
    ],
)
def test_a_window_is_covered_once_by_whole_hours_and_edge_minutes(start: datetime, end: datetime) -> None:
    ranges = grain_ranges(start, end)
    covered = _minutes(ranges)
    assert covered == [start + timedelta(minutes=m) for m in range(int((end - start).total_seconds() // 60))]
    assert sum(1 for g, _, _ in ranges if g == "m") <= 2
    long = end - start > timedelta(hours=3)
    if long:
        assert any(g == "h" for g, _, _ in ranges), "a long window reads hours"


def test_window_params_leave_unused_ranges_empty() -> None:
    params = window_params("w", T0 + timedelta(minutes=5, seconds=30), T0 + timedelta(minutes=20))
    assert params["w_m1_from"] == T0 + timedelta(minutes=5) and params["w_m1_to"] == T0 + timedelta(minutes=20)
    assert params["w_h_from"] == params["w_h_to"] and params["w_m2_from"] == params["w_m2_to"]


def test_top_k_keeps_the_heaviest_by_either_count_and_bounds_the_rest() -> None:
    counts = [PinCount("a", 10, 12), PinCount("b", 1, 30), PinCount("c", 5, 5), PinCount("d", 4, 4)]
    bucket = top_k(counts, 1)
    assert {c.pin_id for c in bucket.pins} == {"a", "b"}, "the most repinned and the most engaged"
    assert (bucket.repins_total, bucket.engagement_total) == (20, 51)
    assert (bucket.repins_bound, bucket.engagement_bound) == (5, 5), "the largest counts left out"


def test_merged_minutes_keep_every_pin_within_the_bound_and_the_true_top_n() -> None:
    rng = random.Random(11)
    minutes = []
    truth: Counter[str] = Counter()
    for _ in range(60):
        counts = Counter(f"p{min(int(rng.paretovariate(1.1)), 3000)}" for _ in range(2000))
        truth.update(counts)
        minutes.append(top_k([PinCount(p, n, n) for p, n in counts.items()], 50))
    hour = merge_buckets(minutes, 100)
    kept = {c.pin_id: c.repins for c in hour.pins}
    for pin, n in kept.items():
        assert truth[pin] - hour.repins_bound <= n <= truth[pin]
    left_out = [truth[p] for p in truth if p not in kept]
    assert max(left_out) <= hour.repins_bound
    ranked = sorted(truth.values(), reverse=True)
    true_top = {p for p, n in truth.items() if n > ranked[10]}
    answer = {p for p, _ in sorted(kept.items(), key=lambda kv: -kv[1])[:10]}
    assert true_top <= answer


def test_a_newer_generation_takes_over_and_an_older_one_is_fenced() -> None:
    a1, a2, b2 = Claim("a", 1), Claim("a", 2), Claim("b", 2)
    assert may_write(None, a1)
    stored = Stored(10, "a", 1, None)
    assert may_write(stored, a1), "the owner goes on"
    assert may_write(stored, b2), "the next generation's owner takes over"
    assert may_write(stored, a2)
    taken = Stored(12, "b", 2, None)
    assert not may_write(taken, a1), "a zombie of the older generation"
    assert not may_write(taken, Claim("c", 2)), "one owner per generation"


def test_stored_keys_remember_the_latest_and_forget_the_oldest_generation() -> None:
    keys = StoredKeys(maxsize=4)  # two generations of up to two keys
    keys.update([("u1",)])
    assert ("u1",) in keys and ("u2",) not in keys
    keys.update([("u2",)])  # the newer generation is full: it becomes the older
    keys.update([("u3",), ("u4",)])  # and again: u1 and u2 are forgotten
    assert ("u1",) not in keys and ("u2",) not in keys
    assert ("u3",) in keys and ("u4",) in keys
    assert len(keys) == 2


@pytest.mark.parametrize("span_ms", [1_000, 150_000], ids=["one minute", "three minutes"])
def test_rows_are_counted_by_minute_and_hour_with_their_category_and_country(span_ms: int) -> None:
    rng = random.Random(5)
    columns = COLUMNS[EventType.REPIN]
    country, category = columns.index("country"), columns.index("category")
    start = 1_700_000_040_000  # a minute's start
    times = [start + rng.randrange(span_ms) for _ in range(400)]
    rows = []
    for _ in times:
        row: list[object] = [None] * len(columns)
        row[country], row[category] = rng.choice(["GB", "US", None]), rng.choice(["art", "food"])
        rows.append(tuple(row))
    types, categories, countries = Counts(), Counts(), Counts()
    rows_counts(EventType.REPIN, rows, types, categories, countries, times)
    expected_countries: Counts = Counts()
    expected_categories: Counts = Counts()
    for ts_ms, row in zip(times, rows, strict=True):
        minute = ms_to_datetime(ts_ms - ts_ms % 60_000)
        for grain, bucket in (("m", minute), ("h", minute.replace(minute=0))):
            expected_countries[(grain, bucket, row[country] or "")] += 1
            expected_categories[(grain, bucket, row[category])] += 1
    assert countries == expected_countries and categories == expected_categories
    assert types == Counter((ms_to_datetime(t - t % 60_000), "repin") for t in times)
