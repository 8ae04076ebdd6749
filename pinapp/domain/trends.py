"""Developing trends: which pins, categories and countries are rising right now, and how surely.

An item's *recent* count (its events in the last ``minutes``) is compared with its rate in the
*baseline*: the ``baseline_minutes`` just before. Under "nothing changed" the recent count is
Poisson with mean ``expected = baseline * minutes / baseline_minutes``, so

    score = (recent - expected) / sqrt(expected + prior)

is a z-score: how many standard deviations the item is above its own past. ``prior`` is a
pseudo-count of variance (a Poisson floor) that keeps an item without history from ranking on a
handful of events: 3 repins from nothing score 3 / sqrt(0 + 5) = 1.3, while 3,000 where 1,000
were expected score 2,000 / sqrt(1,005) = 63. A ratio (``recent / expected``) would rank the
first infinitely high; a plain count would rank a steadily popular pin above one that just took
off. Items with fewer than ``min_count`` recent events are left out. A steady item's score is
noise around 0 (|z| > 4 about once in 30,000 items), so a threshold of 6-8 flags a real jump.

The same score is computed in SQL (:func:`trend_sql`: one range scan of each table on its
``SORT KEY (ts)``; valid SingleStore and MySQL, so CAST only to SIGNED, which both have) and in
Python (:func:`trend_score`, for the tests and for alerts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

__all__ = ["TREND_PARAMETERS", "TrendSpec", "trend_score", "trend_sql"]

#: The parameters a trend query takes besides ``minutes`` and ``limit``.
TREND_PARAMETERS: Final = ("baseline_minutes", "min_count", "prior")


def trend_score(recent: int, baseline: int, minutes: float, baseline_minutes: float, prior: float) -> float:
    """The z-score of ``recent`` events in ``minutes`` against ``baseline`` in the ``baseline_minutes`` before."""
    expected = baseline * minutes / baseline_minutes
    return (recent - expected) / math.sqrt(expected + prior)


@dataclass(frozen=True)
class TrendSpec:
    """What trends: ``item`` (a column, or an expression) over the events of ``tables``."""

    item: str  # the column the rows are grouped by, e.g. pin_id
    tables: tuple[str, ...]  # the engagement tables counted


def trend_sql(spec: TrendSpec) -> str:
    """The trend query for ``spec``: item, recent, baseline, score; best first.

    Parameters (pyformat): ``minutes``, ``baseline_minutes``, ``min_count``, ``prior``, ``limit``.
    """
    since_recent = "UTC_TIMESTAMP() - INTERVAL %(minutes)s MINUTE"
    since_baseline = "UTC_TIMESTAMP() - INTERVAL (%(minutes)s + %(baseline_minutes)s) MINUTE"
    events = " UNION ALL ".join(
        f"SELECT {spec.item} AS item, ts FROM {table} WHERE ts >= {since_baseline}" for table in spec.tables
    )
    expected = "(c.baseline * %(minutes)s / %(baseline_minutes)s)"
    return (
        f"SELECT c.item AS {spec.item}, c.recent, c.baseline, "
        f"ROUND((c.recent - {expected}) / SQRT({expected} + %(prior)s), 2) AS score "  # SQRT: a DOUBLE
        f"FROM (SELECT item, CAST(SUM(ts >= {since_recent}) AS SIGNED) AS recent, "
        f"CAST(SUM(ts < {since_recent}) AS SIGNED) AS baseline "
        f"FROM ({events}) e WHERE item IS NOT NULL GROUP BY item) c "
        "WHERE c.recent >= %(min_count)s "
        f"ORDER BY score DESC, c.item LIMIT %(limit)s"
    )
