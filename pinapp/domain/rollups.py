"""What the rollups count, and how a window of time is read from them. Pure: no I/O.

Design notes: docs/architecture.md, "pinapp/domain/rollups.py".
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any, Final

from pinapp.domain.ddl import COLUMNS
from pinapp.domain.events import EventType
from pinapp.domain.rows import ms_to_datetime

__all__ = [
    "ANY_TYPE",
    "HOUR",
    "HOUR_TOP_K",
    "IDLE",
    "MINUTE",
    "MINUTE_TOP_K",
    "SEALED_THROUGH_SQL",
    "SEAL_LATENESS",
    "WATERMARK_SQL",
    "Counts",
    "PinBucket",
    "PinCount",
    "floor_hour",
    "floor_minute",
    "grain_ranges",
    "merge_buckets",
    "rows_counts",
    "sealed_window_sql",
    "top_k",
    "window_params",
    "window_sql",
]

MINUTE: Final = timedelta(minutes=1)
HOUR: Final = timedelta(hours=1)
ANY_TYPE: Final = "*"  # rollup_experiments' event type for exposures of any type
#: A minute is sealed once every active partition's processed event time is this far past its end.
SEAL_LATENESS: Final = timedelta(seconds=10)
MINUTE_TOP_K: Final = 200
HOUR_TOP_K: Final = 1000


def floor_minute(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)


def floor_hour(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


Counts = Counter[tuple[Any, ...]]  # one rollup's increments by key (its key columns but ``part``)
_PIN_ENGAGEMENT: Final = frozenset((EventType.PIN, EventType.REPIN, EventType.COMMENT, EventType.LIKE))
_COUNTRY: Final = {t: cols.index("country") for t, cols in COLUMNS.items()}
_CATEGORY: Final = {t: cols.index("category") for t, cols in COLUMNS.items() if "category" in cols}


def rows_counts(
    event_type: EventType,
    rows: Sequence[tuple[Any, ...]],
    types: Counts,
    categories: Counts,
    countries: Counts,
    times_ms: Iterable[int],
) -> None:
    """Add the events of ``rows`` (inserted rows of ``event_type``'s table, whose event times are
    ``times_ms``) to the three exact rollups: ``types`` by (minute, type), ``categories`` and
    ``countries`` by (grain, bucket, category or country)."""
    country_at = _COUNTRY[event_type]
    category_at = _CATEGORY.get(event_type) if event_type in _PIN_ENGAGEMENT else None
    kind = event_type.value
    # Counted in C (``Counter`` over ``zip``: this runs for every event written), each rollup on
    # its own key, so the Python below runs once per distinct key, not per event: a batch's
    # (country, category) pairs are nearly as many as its events.
    minutes = [ts_ms // 60_000 for ts_ms in times_ms]
    per_minute = Counter(minutes)
    at = {m: ms_to_datetime(m * 60_000) for m in per_minute}
    hour_of = {m: when.replace(minute=0) for m, when in at.items()}
    for minute_n, n in per_minute.items():
        types[(at[minute_n], kind)] += n

    def by_minute(column: int) -> Iterable[tuple[tuple[int, Any], int]]:
        values = map(itemgetter(column), rows)
        if len(per_minute) == 1:  # most batches: counted by value alone, no pair made per event
            (only,) = per_minute
            return (((only, value), n) for value, n in Counter(values).items())
        return Counter(zip(minutes, values, strict=True)).items()

    for (minute_n, country), n in by_minute(country_at):
        countries[("m", at[minute_n], country or "")] += n
        countries[("h", hour_of[minute_n], country or "")] += n
    if category_at is not None:
        for (minute_n, category), n in by_minute(category_at):
            categories[("m", at[minute_n], category)] += n
            categories[("h", hour_of[minute_n], category)] += n


def grain_ranges(start: datetime, end: datetime) -> list[tuple[str, datetime, datetime]]:
    """The buckets that cover ``[start, end)`` (both whole minutes) as ``(grain, from, to)``
    ranges: minutes up to the first whole hour, the whole hours, then minutes."""
    first_hour = floor_hour(start) + (HOUR if start != floor_hour(start) else timedelta(0))
    last_hour = floor_hour(end)
    if first_hour >= last_hour:
        return [("m", start, end)] if start < end else []
    ranges = []
    if start < first_hour:
        ranges.append(("m", start, first_hour))
    ranges.append(("h", first_hour, last_hour))
    if last_hour < end:
        ranges.append(("m", last_hour, end))
    return ranges


def window_params(prefix: str, start: datetime, end: datetime) -> dict[str, object]:
    """Parameters for :func:`window_sql` ``prefix``: ``[start, end)`` (rounded down to whole
    minutes) as three bucket ranges (minutes, hours, minutes), the unused ones empty."""
    params: dict[str, object] = {}
    start, end = floor_minute(start), floor_minute(end)
    ranges = grain_ranges(start, end)
    minutes = [r for r in ranges if r[0] == "m"]
    hours = [r for r in ranges if r[0] == "h"]
    empty = (start, start)
    m1 = (minutes[0][1], minutes[0][2]) if minutes else empty
    m2 = (minutes[1][1], minutes[1][2]) if len(minutes) > 1 else empty
    h = (hours[0][1], hours[0][2]) if hours else empty
    for name, (lo, hi) in (("m1", m1), ("h", h), ("m2", m2)):
        params[f"{prefix}_{name}_from"] = lo
        params[f"{prefix}_{name}_to"] = hi
    params[f"{prefix}_start"] = start
    params[f"{prefix}_end"] = end
    return params


def window_sql(prefix: str, alias: str = "") -> str:
    """The condition that selects :func:`window_params` ``prefix``'s buckets of a grained rollup."""
    a = f"{alias}." if alias else ""
    return (
        f"(({a}grain = 'm' AND {a}bucket >= %({prefix}_m1_from)s AND {a}bucket < %({prefix}_m1_to)s) "
        f"OR ({a}grain = 'h' AND {a}bucket >= %({prefix}_h_from)s AND {a}bucket < %({prefix}_h_to)s) "
        f"OR ({a}grain = 'm' AND {a}bucket >= %({prefix}_m2_from)s AND {a}bucket < %({prefix}_m2_to)s))"
    )


#: A partition that wrote nothing for this long has nothing pending: the watermark does not wait for it.
IDLE: Final = timedelta(seconds=15)
#: The stream's watermark (parameter: ``topic``): the slowest partition's processed event time, an idle
#: partition counting as complete up to ``IDLE`` ago. Minutes at or after it may still change.
WATERMARK_SQL: Final = (
    "SELECT MIN(CASE WHEN updated_at >= UTC_TIMESTAMP(6) - INTERVAL 15 SECOND THEN event_ts "
    "ELSE GREATEST(COALESCE(event_ts, '1970-01-01'), UTC_TIMESTAMP(6) - INTERVAL 15 SECOND) END) "
    "FROM stream_offsets WHERE topic = %(topic)s"
)
#: The first minute the pin rollup has not sealed (its frontier row, of grain 'f').
SEALED_THROUGH_SQL: Final = "SELECT bucket FROM rollup_pin_buckets WHERE grain = 'f'"
_SEALED_HOURS: Final = (
    "(SELECT COALESCE(MAX(bucket) + INTERVAL 1 HOUR, '1970-01-01') FROM rollup_pin_buckets WHERE grain = 'h')"
)


def sealed_window_sql(prefix: str) -> str:
    """:func:`window_sql` for the sealed pin rollup: an hour not merged yet is read from its minutes."""
    hours_to = f"GREATEST(%({prefix}_h_from)s, LEAST(%({prefix}_h_to)s, {_SEALED_HOURS}))"
    return (
        f"((grain = 'h' AND bucket >= %({prefix}_h_from)s AND bucket < {hours_to}) "
        f"OR (grain = 'm' AND ((bucket >= %({prefix}_m1_from)s AND bucket < %({prefix}_m1_to)s) "
        f"OR (bucket >= {hours_to} AND bucket < %({prefix}_end)s))))"
    )


@dataclass(frozen=True, slots=True)
class PinCount:
    pin_id: str
    repins: int
    engagement: int


@dataclass(frozen=True, slots=True)
class PinBucket:
    """A sealed bucket of ``rollup_pins``: the pins kept, the totals, and the bounds: a pin's true
    count in the bucket exceeds its kept count (0 if left out) by at most the bound."""

    pins: tuple[PinCount, ...]
    repins_total: int
    engagement_total: int
    repins_bound: int
    engagement_bound: int


def top_k(counts: Iterable[PinCount], k: int, *, bounds: tuple[int, int] = (0, 0)) -> PinBucket:
    """The pins among the ``k`` most repinned or the ``k`` most engaged; the bounds are the
    ``bounds`` the counts already carry plus the largest counts left out."""
    every = list(counts)
    by_repins = heapq.nlargest(k + 1, every, key=lambda c: (c.repins, c.pin_id))
    by_engagement = heapq.nlargest(k + 1, every, key=lambda c: (c.engagement, c.pin_id))
    kept = {c.pin_id: c for c in by_repins[:k] + by_engagement[:k]}
    left_repins = max((c.repins for c in every if c.pin_id not in kept), default=0)
    left_engagement = max((c.engagement for c in every if c.pin_id not in kept), default=0)
    return PinBucket(
        tuple(sorted(kept.values(), key=lambda c: c.pin_id)),
        sum(c.repins for c in every),
        sum(c.engagement for c in every),
        bounds[0] + left_repins,
        bounds[1] + left_engagement,
    )


def merge_buckets(buckets: Iterable[PinBucket], k: int) -> PinBucket:
    """Buckets summed into one (an hour of minutes), kept to ``k``: its bounds add up."""
    repins: Counter[str] = Counter()
    engagement: Counter[str] = Counter()
    totals = [0, 0]
    bounds = [0, 0]
    for bucket in buckets:
        for c in bucket.pins:
            repins[c.pin_id] += c.repins
            engagement[c.pin_id] += c.engagement
        totals[0] += bucket.repins_total
        totals[1] += bucket.engagement_total
        bounds[0] += bucket.repins_bound
        bounds[1] += bucket.engagement_bound
    merged = top_k(
        (PinCount(pin, repins[pin], engagement[pin]) for pin in engagement.keys() | repins.keys()),
        k,
        bounds=(bounds[0], bounds[1]),
    )
    return PinBucket(merged.pins, totals[0], totals[1], merged.repins_bound, merged.engagement_bound)
