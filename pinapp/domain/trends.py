"""Developing trends: which pins, categories and countries are rising right now, and how surely.

An item's *recent* count (its events in the last ``minutes``) is compared with its count in the
*baseline*: the ``baseline_minutes`` just before. If nothing changed for the item beyond the
traffic as a whole, its recent count is Poisson with mean

    expected = baseline * recent_total / baseline_total

(its share of the baseline's traffic, applied to the recent traffic), so

    score = (recent - expected) / sqrt(expected + prior)

is a z-score: how many standard deviations the item is above its own past share. Scaling by the
totals rather than by the windows' lengths means a pipeline that just started (a baseline only
partly filled), or traffic that doubled everywhere, raises nothing; with no baseline traffic at
all there is nothing to compare with, and nothing is ranked. ``prior`` is a pseudo-count of
variance (a Poisson floor) that keeps an item without history from ranking on a handful of
events: 3 repins from nothing score 3 / sqrt(0 + 5) = 1.3, while 3,000 where 1,000 were
expected score 2,000 / sqrt(1,005) = 63. A ratio (``recent / expected``) would rank the first
infinitely high; a plain count would rank a steadily popular pin above one that just took off.
Items with fewer than ``min_count`` recent events, or less than ``min_share`` of the recent
window's events, are left out: in a large catalogue many new items take off a little every
minute, and a trend worth a look carries a visible share of the traffic. A steady item's score is noise
around 0 (|z| > 4 about once in 30,000 items), so a threshold of 6-8 flags a real jump.

The same score is computed in SQL (:func:`trend_sql`: a range of a rollup's buckets,
:mod:`pinapp.domain.rollups`, for the window and its baseline; valid SingleStore and MySQL, so
CAST only to SIGNED, which both have) and in Python (:func:`trend_score`, for the tests). Pins are
scored on the sealed pin rollup: complete minutes only, with the totals of the same minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pinapp.domain.rollups import sealed_window_sql, window_sql

__all__ = ["TrendSpec", "trend_score", "trend_sql"]


def trend_score(recent: int, baseline: int, recent_total: int, baseline_total: int, prior: float) -> float:
    """The z-score of ``recent`` events against the item's ``baseline`` share of the traffic."""
    expected = baseline * recent_total / baseline_total
    return (recent - expected) / math.sqrt(expected + prior)


@dataclass(frozen=True)
class TrendSpec:
    """What trends: ``item`` (the answer's column) counted by ``value`` in the rollup ``table``."""

    item: str  # the answer's column, e.g. pin_id
    table: str  # the rollup read
    column: str  # its item column
    value: str  # its counter
    sealed: bool = False  # the sealed pin rollup: totals from its buckets' (it keeps only the top pins)


def trend_sql(spec: TrendSpec) -> str:
    """The trend query for ``spec``: item, recent, baseline, score; best first.

    Parameters (pyformat): the windows ``w`` (recent) and ``b`` (baseline) of
    :func:`pinapp.domain.rollups.window_params`, ``min_count``, ``min_share``, ``prior``, ``limit``.
    """
    window = sealed_window_sql if spec.sealed else window_sql
    recent, baseline = window("w"), window("b")
    per_item = (
        f"SELECT {spec.column} AS item, "
        f"CAST(SUM(CASE WHEN {recent} THEN {spec.value} ELSE 0 END) AS SIGNED) AS recent, "
        f"CAST(SUM(CASE WHEN {baseline} THEN {spec.value} ELSE 0 END) AS SIGNED) AS baseline "
        f"FROM {spec.table} WHERE ({recent} OR {baseline}) AND {spec.column} <> '' GROUP BY {spec.column}"
    )
    totals_table, total = ("rollup_pin_buckets", "engagement_total") if spec.sealed else (spec.table, spec.value)
    with_totals = (
        "SELECT g.item, g.recent, g.baseline, "
        f"(SELECT CAST(COALESCE(SUM({total}), 0) AS SIGNED) FROM {totals_table} WHERE {recent}) AS recent_total, "
        f"(SELECT CAST(COALESCE(SUM({total}), 0) AS SIGNED) FROM {totals_table} WHERE {baseline}) AS baseline_total "
        f"FROM ({per_item}) g"
    )
    expected = "(c.baseline * c.recent_total / c.baseline_total)"
    return (
        f"SELECT c.item AS {spec.item}, c.recent, c.baseline, "
        f"ROUND((c.recent - {expected}) / SQRT({expected} + %(prior)s), 2) AS score "  # SQRT: a DOUBLE
        f"FROM ({with_totals}) c "
        "WHERE c.recent >= %(min_count)s AND c.recent >= %(min_share)s * c.recent_total AND c.baseline_total > 0 "
        f"ORDER BY score DESC, c.item LIMIT %(limit)s"
    )
