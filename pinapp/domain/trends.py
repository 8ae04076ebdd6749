"""Developing trends: which pins, categories and countries are rising right now, and how surely.

Design notes: docs/architecture.md, "pinapp/domain/trends.py".
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
