"""Named engagement queries, run on SingleStore by ``pinapp query``, the dashboard and the alerter.

Design notes: docs/architecture.md, "pinapp/adapters/queries.py".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from asyncmy.errors import Error as MySQLError

from config import ExperimentSettings, TrendSettings
from pinapp.domain.experiments import Experiment, SrmVerdict, srm_test
from pinapp.domain.rollups import (
    ANY_TYPE,
    MINUTE,
    SEALED_THROUGH_SQL,
    WATERMARK_SQL,
    floor_minute,
    sealed_window_sql,
    window_params,
    window_sql,
)
from pinapp.domain.trends import TrendSpec, trend_sql
from pinapp.errors import DatabaseError, PinappError

__all__ = [
    "ALLOCATION_SQL",
    "EXPERIMENT_ENGAGEMENT_SQL",
    "NAMED_QUERIES",
    "NEW_USERS_SQL",
    "NamedQuery",
    "ReadOnlyViolation",
    "allocation",
    "check_read_only",
    "experiment_params",
    "freshness",
    "query_params",
    "run_query",
    "srm_verdict",
]


@dataclass(frozen=True)
class NamedQuery:
    name: str
    description: str
    sql: str  # with the parameters of query_params


def _top(table: str, column: str, label: str, where: str = "") -> str:
    return (
        f"SELECT {label}, CAST(SUM(events) AS SIGNED) AS events FROM {table} "
        f"WHERE {window_sql('w')}{where} GROUP BY {column} ORDER BY events DESC, {column} LIMIT %(limit)s"
    )


NAMED_QUERIES: Final = {
    q.name: q
    for q in (
        NamedQuery(
            "events-per-minute",
            "events per type per minute",
            "SELECT DATE_FORMAT(bucket, '%%Y-%%m-%%d %%H:%%i') AS minute, event_type, "
            "CAST(SUM(events) AS SIGNED) AS events FROM rollup_types WHERE bucket >= %(w_start)s "
            "GROUP BY bucket, event_type ORDER BY bucket DESC, event_type LIMIT %(limit)s",
        ),
        NamedQuery(
            "top-categories",
            "pin engagement (pins, repins, comments, likes) by pin category",
            _top("rollup_categories", "category", "category"),
        ),
        NamedQuery(
            "top-countries",
            "engagement of every type by the client's country",
            _top("rollup_countries", "country", "IF(country = '', '??', country) AS country_code"),
        ),
        NamedQuery(
            "most-repinned",
            "pins with the most repins (complete minutes)",
            "SELECT t.pin_id, p.title, p.category, t.repins FROM ("
            "SELECT pin_id, CAST(SUM(repins) AS SIGNED) AS repins FROM rollup_pins "
            f"WHERE {sealed_window_sql('w')} GROUP BY pin_id HAVING repins > 0 "
            "ORDER BY repins DESC, pin_id LIMIT %(limit)s) t "
            "LEFT JOIN pins p ON p.pin_id = t.pin_id ORDER BY t.repins DESC, t.pin_id",
        ),
        NamedQuery(
            "trending-pins",
            "pins whose engagement (repins, comments, likes) is rising: recent vs baseline, as a z-score",
            trend_sql(TrendSpec("pin_id", "rollup_pins", "pin_id", "engagement", sealed=True)),
        ),
        NamedQuery(
            "trending-categories",
            "pin categories whose engagement (pins, repins, comments, likes) is rising",
            trend_sql(TrendSpec("category", "rollup_categories", "category", "events")),
        ),
        NamedQuery(
            "trending-countries",
            "countries whose engagement of every type is rising",
            trend_sql(TrendSpec("country", "rollup_countries", "country", "events")),
        ),
    )
}


def query_params(minutes: int, limit: int, trends: TrendSettings, *, now: datetime | None = None) -> dict[str, Any]:
    """A named query's parameters: its window (``w``: the last ``minutes`` and the current one) and
    row limit, and the baseline (``b``: ``trends.baseline_factor`` times as long before the window)
    and scoring the ``trending-*`` queries use (the others ignore them)."""
    end = floor_minute(now or datetime.now(UTC).replace(tzinfo=None)) + MINUTE
    start = end - timedelta(minutes=minutes + 1)
    baseline_minutes = minutes * trends.baseline_factor
    return {
        **window_params("w", start, end),
        **window_params("b", start - timedelta(minutes=baseline_minutes), start),
        "minutes": minutes,
        "limit": limit,
        "baseline_minutes": baseline_minutes,
        "min_count": trends.min_count,
        "min_share": trends.min_share,
        "prior": trends.prior,
    }


class ReadOnlyViolation(PinappError):
    """``pinapp query --sql`` only runs one read-only statement (SELECT, SHOW, ...)."""


_READ_ONLY_START = re.compile(r"^\s*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXPLAIN)\b", re.IGNORECASE)
_WRITE_WORDS = re.compile(
    r"\b(INSERT|UPDATE|DELETE|REPLACE|DROP|ALTER|CREATE|TRUNCATE|GRANT|REVOKE|LOAD|CALL|SET|INTO)\b",
    re.IGNORECASE,
)
#: What a SELECT can do besides reading: files, locks, holding the server.
_SIDE_EFFECTS = re.compile(
    r"\b(LOAD_FILE|SLEEP|BENCHMARK|GET_LOCK|RELEASE_LOCK|RELEASE_ALL_LOCKS|SYS_EXEC|SYS_EVAL)\s*\("
    r"|\bFOR\s+UPDATE\b|\bLOCK\s+IN\s+SHARE\s+MODE\b|\bFOR\s+SHARE\b",
    re.IGNORECASE,
)


def check_read_only(sql: str) -> str:
    """Return ``sql`` without a trailing ``;`` if it is one read-only statement.

    The friendly first check, not the defence: the query runs as ``db.query_user`` (SELECT
    only, a statement time limit) in a read-only transaction. Refused here: several statements,
    comments (``/*!50000 ...*/`` runs on MySQL, and ``INTO/**/OUTFILE`` hides a keyword), any
    ``INTO`` (``SELECT ... INTO OUTFILE/DUMPFILE``, SingleStore's ``INTO S3/KAFKA/FS``), and
    functions and clauses with effects (files, locks, sleeping).
    """
    statement = sql.strip().rstrip(";").strip()
    if ";" in statement:
        raise ReadOnlyViolation("one statement only: remove the ';' separated statements")
    if not _READ_ONLY_START.match(statement):
        raise ReadOnlyViolation("only SELECT, WITH, SHOW, DESCRIBE and EXPLAIN may be run")
    if "/*" in statement:
        raise ReadOnlyViolation("comments are not allowed in ad-hoc SQL (/*! ... */ would run as SQL)")
    if match := _WRITE_WORDS.search(statement):
        raise ReadOnlyViolation(f"{match.group(1).upper()}: ad-hoc SQL is read-only (no writes, no SELECT ... INTO)")
    if match := _SIDE_EFFECTS.search(statement):
        raise ReadOnlyViolation(f"{match.group(0).strip(' (').upper()}: ad-hoc SQL may not read files, lock or sleep")
    return statement


async def run_query(
    pool: Any, sql: str, params: dict[str, Any] | None = None, *, dialect: str = "mysql"
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one read-only query; returns (column names, rows).

    Raises:
        DatabaseError: with the server's message, when the query fails.
    """
    try:
        async with pool.acquire() as conn, conn.cursor() as cur:
            try:
                if dialect == "mysql":
                    await cur.execute("START TRANSACTION READ ONLY")
                await cur.execute(sql, params)
                rows = list(await cur.fetchall())
                columns = [d[0] for d in cur.description or ()]
            finally:
                await conn.rollback()
    except (MySQLError, OSError) as exc:  # the query, or a connection lost or refused
        raise DatabaseError(f"query failed: {exc}") from exc
    return columns, rows


#: Distinct users per group of one experiment since its start (parameters: experiment_params).
ALLOCATION_SQL: Final = (
    "SELECT group_name, CAST(SUM(new_users) AS SIGNED) AS users FROM rollup_experiments "
    f"WHERE experiment = %(experiment)s AND event_type = '{ANY_TYPE}' AND {window_sql('x')} "
    "GROUP BY group_name HAVING users > 0 ORDER BY group_name"
)
#: Events and users per group and event type of one experiment since its start.
EXPERIMENT_ENGAGEMENT_SQL: Final = (
    "SELECT group_name, event_type, CAST(SUM(events) AS SIGNED) AS events, CAST(SUM(new_users) AS SIGNED) AS users "
    f"FROM rollup_experiments WHERE experiment = %(experiment)s AND event_type <> '{ANY_TYPE}' AND {window_sql('x')} "
    "GROUP BY group_name, event_type ORDER BY group_name, event_type"
)
#: Users newly exposed per minute and group, over the experiment's last TIMELINE_MINUTES at most.
NEW_USERS_SQL: Final = (
    "SELECT DATE_FORMAT(bucket, '%%Y-%%m-%%d %%H:%%i') AS minute, group_name, CAST(SUM(new_users) AS SIGNED) AS users "
    f"FROM rollup_experiments WHERE experiment = %(experiment)s AND event_type = '{ANY_TYPE}' "
    "AND grain = 'm' AND bucket >= %(timeline_from)s GROUP BY bucket, group_name HAVING users > 0 "
    "ORDER BY bucket, group_name"
)
#: How far back the timeline of new users reaches (the totals count from the experiment's start).
TIMELINE_MINUTES: Final = 6 * 60


def experiment_params(experiment: str, start: datetime, *, now: datetime | None = None) -> dict[str, Any]:
    """The experiment queries' parameters: since the minute of ``start`` (UTC) up to now.

    A user counts in the minute of its first exposure: one exposed before ``start`` as well is
    not counted since ``start`` (experiments expose users only once running).
    """
    start = start.astimezone(UTC).replace(tzinfo=None) if start.tzinfo else start
    end = floor_minute(now or datetime.now(UTC).replace(tzinfo=None)) + MINUTE
    timeline_from = max(floor_minute(start), end - timedelta(minutes=TIMELINE_MINUTES))
    return {**window_params("x", start, end), "experiment": experiment, "timeline_from": timeline_from}


async def freshness(pool: Any, topic: str, *, dialect: str = "mysql") -> dict[str, Any]:
    """How far the rollups are complete: ``complete_until``, the stream's watermark (a minute at
    or after it may still change), and ``pins_sealed_until``, the first minute the pin rollup has
    not sealed."""
    sql = f"SELECT ({WATERMARK_SQL}), ({SEALED_THROUGH_SQL})"
    _, rows = await run_query(pool, sql, {"topic": topic}, dialect=dialect)
    complete, sealed = rows[0] if rows else (None, None)
    return {"complete_until": complete, "pins_sealed_until": sealed}


async def allocation(pool: Any, experiment: str, start: datetime, *, dialect: str = "mysql") -> dict[str, int]:
    """Users per group of ``experiment`` since ``start`` (UTC)."""
    params = experiment_params(experiment, start)
    _, rows = await run_query(pool, ALLOCATION_SQL, params, dialect=dialect)
    return {str(group): int(users) for group, users in rows}


async def srm_verdict(
    pool: Any, experiment: Experiment, cfg: ExperimentSettings, *, dialect: str = "mysql"
) -> SrmVerdict:
    """``experiment``'s live allocation (users per group since its start) and its sample-ratio test."""
    users = await allocation(pool, experiment.name, experiment.start, dialect=dialect)
    return srm_test(experiment, users, p_threshold=cfg.srm_p_value, min_users=cfg.min_users)
