"""Named engagement queries, run on SingleStore by ``pinapp query`` and the dashboard.

Times are UTC; ``minutes`` bounds every query to recent data (the sort key on ``ts``
makes that a range scan on SingleStore). The ``trending-*`` queries rank what is rising: the
last ``minutes`` against the ``trends.baseline_factor`` times as long before it, scored as
:mod:`pinapp.domain.trends` says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from asyncmy.errors import Error as MySQLError

from config import ExperimentSettings, TrendSettings
from pinapp.domain.experiments import Experiment, SrmVerdict, srm_test
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
    "query_params",
    "run_query",
    "srm_verdict",
]


@dataclass(frozen=True)
class NamedQuery:
    name: str
    description: str
    sql: str  # with %(minutes)s and %(limit)s parameters


_RECENT = "ts >= UTC_TIMESTAMP() - INTERVAL %(minutes)s MINUTE"
_PER_TYPE = " UNION ALL ".join(
    f"SELECT '{t}' AS event_type, ts FROM {table} WHERE {_RECENT}"
    for t, table in (
        ("pin", "pins"),
        ("repin", "repins"),
        ("comment", "comments"),
        ("like", "likes"),
        ("login", "logins"),
    )
)
_PIN_EVENTS = " UNION ALL ".join(
    f"SELECT category, country, pin_id FROM {table} WHERE {_RECENT}"
    for table in ("pins", "repins", "comments", "likes")
)

NAMED_QUERIES: Final = {
    q.name: q
    for q in (
        NamedQuery(
            "events-per-minute",
            "events per type per minute",
            f"SELECT DATE_FORMAT(ts, '%%Y-%%m-%%d %%H:%%i') AS minute, event_type, COUNT(*) AS events "
            f"FROM ({_PER_TYPE}) e GROUP BY minute, event_type ORDER BY minute DESC, event_type "
            f"LIMIT %(limit)s",
        ),
        NamedQuery(
            "top-categories",
            "pin engagement (pins, repins, comments, likes) by pin category",
            f"SELECT category, COUNT(*) AS events FROM ({_PIN_EVENTS}) e "
            f"GROUP BY category ORDER BY events DESC, category LIMIT %(limit)s",
        ),
        NamedQuery(
            "top-countries",
            "engagement of every type by the client's country",
            "SELECT COALESCE(country, '??') AS country_code, COUNT(*) AS events FROM ("
            + " UNION ALL ".join(
                f"SELECT country FROM {t} WHERE {_RECENT}" for t in ("pins", "repins", "comments", "likes", "logins")
            )
            + ") e GROUP BY country_code ORDER BY events DESC, country_code LIMIT %(limit)s",
        ),
        NamedQuery(
            "most-repinned",
            "pins with the most repins",
            f"SELECT r.pin_id, MAX(p.title) AS title, MAX(r.category) AS category, COUNT(*) AS repins "
            f"FROM repins r LEFT JOIN pins p ON p.pin_id = r.pin_id WHERE r.{_RECENT} "
            f"GROUP BY r.pin_id ORDER BY repins DESC, r.pin_id LIMIT %(limit)s",
        ),
        NamedQuery(
            "trending-pins",
            "pins whose engagement (repins, comments, likes) is rising: recent vs baseline, as a z-score",
            trend_sql(TrendSpec("pin_id", ("repins", "comments", "likes"))),
        ),
        NamedQuery(
            "trending-categories",
            "pin categories whose engagement (pins, repins, comments, likes) is rising",
            trend_sql(TrendSpec("category", ("pins", "repins", "comments", "likes"))),
        ),
        NamedQuery(
            "trending-countries",
            "countries whose engagement of every type is rising",
            trend_sql(TrendSpec("country", ("pins", "repins", "comments", "likes", "logins"))),
        ),
    )
}


def query_params(minutes: int, limit: int, trends: TrendSettings) -> dict[str, Any]:
    """A named query's parameters: its window and row limit, and the trend scoring the
    ``trending-*`` queries use (the others ignore it)."""
    return {
        "minutes": minutes,
        "limit": limit,
        "baseline_minutes": minutes * trends.baseline_factor,
        "min_count": trends.min_count,
        "min_share": trends.min_share,
        "prior": trends.prior,
    }


class ReadOnlyViolation(PinappError):
    """``pinapp query --sql`` only runs one read-only statement (SELECT, SHOW, ...)."""


_READ_ONLY_START = re.compile(r"^\s*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXPLAIN)\b", re.IGNORECASE)
_WRITE_WORDS = re.compile(
    r"\b(INSERT|UPDATE|DELETE|REPLACE|DROP|ALTER|CREATE|TRUNCATE|GRANT|REVOKE|LOAD|CALL|SET|INTO\s+OUTFILE)\b",
    re.IGNORECASE,
)


def check_read_only(sql: str) -> str:
    """Return ``sql`` without a trailing ``;`` if it is one read-only statement.

    A first line of defence for a friendly error; the session also runs in a read-only
    transaction on MySQL, and production should use a SELECT-only user.
    """
    statement = sql.strip().rstrip(";").strip()
    if ";" in statement:
        raise ReadOnlyViolation("one statement only: remove the ';' separated statements")
    if not _READ_ONLY_START.match(statement):
        raise ReadOnlyViolation("only SELECT, WITH, SHOW, DESCRIBE and EXPLAIN may be run")
    if _WRITE_WORDS.search(statement):
        raise ReadOnlyViolation("the statement contains a write keyword; ad-hoc SQL is read-only")
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


#: Distinct users per group of one experiment since its start (parameters: experiment, start).
ALLOCATION_SQL: Final = (
    "SELECT group_name, COUNT(DISTINCT user_id) AS users FROM experiment_exposures "
    "WHERE experiment = %(experiment)s AND ts >= %(start)s GROUP BY group_name ORDER BY group_name"
)
#: Events and users per group and event type of one experiment since its start.
EXPERIMENT_ENGAGEMENT_SQL: Final = (
    "SELECT group_name, event_type, COUNT(*) AS events, COUNT(DISTINCT user_id) AS users "
    "FROM experiment_exposures WHERE experiment = %(experiment)s AND ts >= %(start)s "
    "GROUP BY group_name, event_type ORDER BY group_name, event_type"
)

#: Users newly exposed per minute and group of one experiment (a user counts at its first exposure).
NEW_USERS_SQL: Final = (
    "SELECT DATE_FORMAT(first_ts, '%%Y-%%m-%%d %%H:%%i') AS minute, group_name, COUNT(*) AS users FROM ("
    "SELECT user_id, group_name, MIN(ts) AS first_ts FROM experiment_exposures "
    "WHERE experiment = %(experiment)s AND ts >= %(start)s GROUP BY user_id, group_name) f "
    "GROUP BY minute, group_name ORDER BY minute, group_name"
)


async def allocation(pool: Any, experiment: str, start: datetime, *, dialect: str = "mysql") -> dict[str, int]:
    """Users per group of ``experiment`` since ``start`` (UTC)."""
    params = {"experiment": experiment, "start": start.astimezone(UTC).replace(tzinfo=None)}
    _, rows = await run_query(pool, ALLOCATION_SQL, params, dialect=dialect)
    return {str(group): int(users) for group, users in rows}


async def srm_verdict(
    pool: Any, experiment: Experiment, cfg: ExperimentSettings, *, dialect: str = "mysql"
) -> SrmVerdict:
    """``experiment``'s live allocation (users per group since its start) and its sample-ratio test."""
    users = await allocation(pool, experiment.name, experiment.start, dialect=dialect)
    return srm_test(experiment, users, p_threshold=cfg.srm_p_value, min_users=cfg.min_users)
