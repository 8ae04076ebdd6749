"""The SingleStore schema pinapp writes to, as DDL for SingleStore or MySQL/MariaDB.

One table per event type. On SingleStore they are columnstore tables (the default type)
with ``SORT KEY (ts)`` for time-range scans and a ``SHARD KEY`` on ``pin_id`` (``user_id``
for logins) so that joins of repins, comments and likes to their pin are local to a
partition. SingleStore's rules are kept: every unique/primary key contains the shard key,
one sort key, no foreign keys, no AUTO_INCREMENT. Rows are idempotent on ``event_id``:
the primary key is (shard key, event_id), and ``event_id`` determines the shard key.
The ``pins`` table holds one row per pin, keyed by ``pin_id`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from pinapp.domain.events import EventType

__all__ = [
    "ALL_TABLES",
    "COLUMNS",
    "EXPOSURES",
    "TABLES",
    "Column",
    "Dialect",
    "TableSpec",
    "create_database_sql",
    "create_table_sql",
    "schema_sql",
]

Dialect = Literal["singlestore", "mysql"]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    sql_type: str
    nullable: bool = True


@dataclass(frozen=True, slots=True)
class TableSpec:
    name: str
    event_type: EventType | None  # the event type whose rows it holds; None: experiment_exposures
    columns: tuple[Column, ...]
    shard_key: tuple[str, ...]
    primary_key: tuple[str, ...]
    sort_key: tuple[str, ...] = ("ts",)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


_COMMON: Final = (
    Column("event_id", "VARCHAR(64)", nullable=False),
    Column("user_id", "VARCHAR(64)", nullable=False),
    Column("ts", "DATETIME(6)", nullable=False),
    Column("ip", "VARCHAR(45)", nullable=False),
    Column("country", "CHAR(2)"),
    Column("region", "VARCHAR(128)"),
    Column("city", "VARCHAR(128)"),
    Column("latitude", "DOUBLE"),
    Column("longitude", "DOUBLE"),
    Column("ingested_at", "DATETIME(6)", nullable=False),
)
_PIN_REF: Final = (
    Column("pin_id", "VARCHAR(64)", nullable=False),
    Column("category", "VARCHAR(64)", nullable=False),
)

TABLES: Final[dict[EventType, TableSpec]] = {
    EventType.PIN: TableSpec(
        "pins",
        EventType.PIN,
        _PIN_REF
        + _COMMON
        + (
            Column("board_id", "VARCHAR(64)", nullable=False),
            Column("title", "VARCHAR(500)", nullable=False),
            Column("created_at", "DATETIME(6)", nullable=False),
        ),
        shard_key=("pin_id",),
        primary_key=("pin_id",),
    ),
    EventType.REPIN: TableSpec(
        "repins",
        EventType.REPIN,
        _PIN_REF + _COMMON + (Column("board_id", "VARCHAR(64)"),),
        shard_key=("pin_id",),
        primary_key=("pin_id", "event_id"),
    ),
    EventType.COMMENT: TableSpec(
        "comments",
        EventType.COMMENT,
        _PIN_REF + _COMMON + (Column("text", "TEXT", nullable=False),),
        shard_key=("pin_id",),
        primary_key=("pin_id", "event_id"),
    ),
    EventType.LIKE: TableSpec(
        "likes", EventType.LIKE, _PIN_REF + _COMMON, shard_key=("pin_id",), primary_key=("pin_id", "event_id")
    ),
    EventType.LOGIN: TableSpec(
        "logins", EventType.LOGIN, _COMMON, shard_key=("user_id",), primary_key=("user_id", "event_id")
    ),
}
COLUMNS: Final = {t: spec.column_names for t, spec in TABLES.items()}

#: One row per exposure: an event that carried ``experiments``, once per experiment in it.
#: Sharded by user, so a user's exposures sit in one partition and distinct users per group
#: count locally; idempotent on (user_id, experiment, event_id), written with its event's row.
EXPOSURES: Final = TableSpec(
    "experiment_exposures",
    None,
    (
        Column("experiment", "VARCHAR(64)", nullable=False),
        Column("group_name", "VARCHAR(64)", nullable=False),
        Column("event_id", "VARCHAR(64)", nullable=False),
        Column("event_type", "VARCHAR(16)", nullable=False),
        Column("user_id", "VARCHAR(64)", nullable=False),
        Column("ts", "DATETIME(6)", nullable=False),
        Column("ingested_at", "DATETIME(6)", nullable=False),
    ),
    shard_key=("user_id",),
    primary_key=("user_id", "experiment", "event_id"),
)
#: Every table pinapp writes, in a stable order.
ALL_TABLES: Final = (*TABLES.values(), EXPOSURES)


def _ident(name: str) -> str:
    return f"`{name}`"


def _cols(names: tuple[str, ...]) -> str:
    return ", ".join(_ident(n) for n in names)


def create_database_sql(database: str) -> str:
    return f"CREATE DATABASE IF NOT EXISTS {_ident(database)}"


def create_table_sql(spec: TableSpec, dialect: Dialect) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for one table in ``dialect``."""
    if not set(spec.shard_key) <= set(spec.primary_key):
        raise ValueError(f"{spec.name}: the shard key must be a subset of the primary key")
    lines = [f"  {_ident(c.name)} {c.sql_type}{'' if c.nullable else ' NOT NULL'}" for c in spec.columns]
    lines.append(f"  PRIMARY KEY ({_cols(spec.primary_key)})")
    if dialect == "singlestore":
        lines.append(f"  SHARD KEY ({_cols(spec.shard_key)})")
        lines.append(f"  SORT KEY ({_cols(spec.sort_key)})")
        tail = ""
    else:
        lines.append(f"  KEY {_ident(spec.name + '_by_ts')} ({_cols(spec.sort_key)})")
        tail = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    body = ",\n".join(lines)
    return f"CREATE TABLE IF NOT EXISTS {_ident(spec.name)} (\n{body}\n){tail}"


def schema_sql(dialect: Dialect) -> list[str]:
    """Every table's DDL, in a stable order."""
    return [create_table_sql(spec, dialect) for spec in ALL_TABLES]
