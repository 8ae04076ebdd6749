"""The rollups checked against the raw rows they summarize (``pinapp audit`` and the fault tests).

Exact rollups must equal the GROUP BY over the raw tables, minute by minute (and each hour the
sum of its minutes); the approximate pin rollup must hold lower bounds within its stated bounds,
and contain the true top N over the sealed minutes. What the rollups count is
:mod:`pinapp.domain.rollups`'s definition: a ``pins`` row learned from another event is no event.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from pinapp.adapters.queries import run_query
from pinapp.domain.rollups import SEALED_THROUGH_SQL

__all__ = ["RollupCheck", "check_rollups"]

_MINUTE: Final = "DATE_FORMAT(ts, '%Y-%m-%d %H:%i:00')"
#: A pin's own event: a row not learned from a repin, comment or like (which carry their own event_id).
_OWN_PINS: Final = "SELECT * FROM pins p WHERE " + " AND ".join(
    f"NOT EXISTS (SELECT 1 FROM {t} x WHERE x.pin_id = p.pin_id AND x.event_id = p.event_id)"
    for t in ("repins", "comments", "likes")
)
_EVENTS: Final = {"pin": f"({_OWN_PINS})", "repin": "repins", "comment": "comments", "like": "likes", "login": "logins"}


@dataclass
class RollupCheck:
    """What disagreed: one line per minute and key (empty: the rollups are exact)."""

    minutes: int = 0  # minutes of events checked
    mismatches: list[str] = field(default_factory=list)
    top_n: int = 0
    pins_checked: int = 0

    @property
    def clean(self) -> bool:
        return not self.mismatches


async def _counter(pool: Any, sql: str) -> Counter[tuple[Any, ...]]:
    _, rows = await run_query(pool, sql)
    out: Counter[tuple[Any, ...]] = Counter()
    for *key, n in rows:
        out[tuple(str(k) if isinstance(k, datetime) else k for k in key)] += int(n)
    return out


def _diff(check: RollupCheck, name: str, raw: Counter[tuple[Any, ...]], rolled: Counter[tuple[Any, ...]]) -> None:
    for key in sorted(raw.keys() | rolled.keys(), key=str):
        if raw[key] != rolled[key]:
            check.mismatches.append(f"{name} {key}: raw {raw[key]}, rollup {rolled[key]}")


def _union(columns: str, types: tuple[str, ...]) -> str:
    return " UNION ALL ".join(f"SELECT {columns} FROM {_EVENTS[t]} e{i}" for i, t in enumerate(types))


async def check_rollups(pool: Any, *, top_n: int = 10) -> RollupCheck:
    """Compare every rollup with the raw rows (a full scan: an audit, not a query)."""
    check = RollupCheck(top_n=top_n)
    engagement = ("pin", "repin", "comment", "like")
    every = (*engagement, "login")
    raw_types: Counter[tuple[Any, ...]] = Counter()
    for kind in every:
        raw_types += await _counter(
            pool,
            f"SELECT {_MINUTE} AS m, '{kind}', COUNT(*) FROM {_EVENTS[kind]} e GROUP BY m",
        )
    check.minutes = len({m for m, _ in raw_types})
    _diff(
        check,
        "rollup_types",
        raw_types,
        await _counter(
            pool,
            "SELECT DATE_FORMAT(bucket, '%Y-%m-%d %H:%i:00'), event_type, SUM(events) FROM rollup_types GROUP BY 1, 2",
        ),
    )
    for table, column, types in (("rollup_categories", "category", engagement), ("rollup_countries", "country", every)):
        value = "COALESCE(country, '')" if column == "country" else column
        raw = await _counter(
            pool,
            f"SELECT m, c, COUNT(*) FROM ({_union(f'{_MINUTE} AS m, {value} AS c', types)}) u GROUP BY m, c",
        )
        for grain, fmt in (("m", "%Y-%m-%d %H:%i:00"), ("h", "%Y-%m-%d %H:00:00")):
            rolled = await _counter(
                pool,
                f"SELECT DATE_FORMAT(bucket, '{fmt}'), {column}, SUM(events) FROM {table} "
                f"WHERE grain = '{grain}' GROUP BY 1, 2",
            )
            expected = raw if grain == "m" else _to_hours(raw)
            _diff(check, f"{table}[{grain}]", expected, rolled)
    await _check_experiments(pool, check)
    await _check_pins(pool, check)
    return check


def _to_hours(minutes: Counter[tuple[Any, ...]]) -> Counter[tuple[Any, ...]]:
    out: Counter[tuple[Any, ...]] = Counter()
    for (minute, *rest), n in minutes.items():
        out[(minute[:13] + ":00:00", *rest)] += n
    return out


async def _check_experiments(pool: Any, check: RollupCheck) -> None:
    raw_events = await _counter(
        pool,
        f"SELECT experiment, {_MINUTE} AS m, group_name, event_type, COUNT(*) FROM experiment_exposures "
        "GROUP BY experiment, m, group_name, event_type",
    )
    rolled = await _counter(
        pool,
        "SELECT experiment, DATE_FORMAT(bucket, '%Y-%m-%d %H:%i:00'), group_name, event_type, SUM(events) "
        "FROM rollup_experiments WHERE grain = 'm' AND event_type <> '*' GROUP BY 1, 2, 3, 4",
    )
    _diff(check, "rollup_experiments events", raw_events, rolled)
    for kind_filter, rolled_kind in (("", "= '*'"), (", event_type", "<> '*'")):
        raw_users = await _counter(
            pool,
            f"SELECT experiment, group_name{kind_filter}, COUNT(DISTINCT user_id) FROM experiment_exposures "
            f"GROUP BY experiment, group_name{kind_filter}",
        )
        rolled_users = await _counter(
            pool,
            f"SELECT experiment, group_name{kind_filter}, SUM(new_users) FROM rollup_experiments "
            f"WHERE grain = 'm' AND event_type {rolled_kind} GROUP BY experiment, group_name{kind_filter} "
            "HAVING SUM(new_users) > 0",
        )
        _diff(check, "rollup_experiments users", raw_users, rolled_users)


async def _check_pins(pool: Any, check: RollupCheck) -> None:
    """Over the sealed minutes: each kept count a lower bound within the bounds' sum, and the true
    top N (the pins above the (N+1)-th raw count) among the rollup's top N."""
    _, rows = await run_query(
        pool,
        f"SELECT MIN(bucket), ({SEALED_THROUGH_SQL}), "
        "CAST(COALESCE(SUM(repins_bound), 0) AS SIGNED) FROM rollup_pin_buckets WHERE grain = 'm'",
    )
    start, end, bound = rows[0] if rows else (None, None, 0)
    if start is None or end is None:
        return
    params = {"lo": start, "hi": end}
    _, raw_rows = await run_query(
        pool, "SELECT pin_id, COUNT(*) FROM repins WHERE ts >= %(lo)s AND ts < %(hi)s GROUP BY pin_id", params
    )
    raw = {pin: int(n) for pin, n in raw_rows}
    _, kept_rows = await run_query(
        pool,
        "SELECT pin_id, CAST(SUM(repins) AS SIGNED) FROM rollup_pins WHERE grain = 'm' AND bucket >= %(lo)s "
        "AND bucket < %(hi)s GROUP BY pin_id",
        params,
    )
    kept = {pin: int(n) for pin, n in kept_rows}
    check.pins_checked = len(kept)
    for pin, n in kept.items():
        if not raw.get(pin, 0) - int(bound) <= n <= raw.get(pin, 0):
            check.mismatches.append(f"rollup_pins {pin}: raw {raw.get(pin, 0)}, rollup {n}, bound {bound}")
    ranked = sorted(raw.values(), reverse=True)
    if len(ranked) > check.top_n:
        above = ranked[check.top_n]  # the (N+1)-th count: pins above it are the true top N
        true_top = {pin for pin, n in raw.items() if n > above}
    else:
        true_top = set(raw)
    answer = {pin for pin, _ in sorted(kept.items(), key=lambda kv: (-kv[1], kv[0]))[: check.top_n]}
    if not true_top <= answer:
        check.mismatches.append(f"rollup_pins: the true top {check.top_n} misses {sorted(true_top - answer)}")
