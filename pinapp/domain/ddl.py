"""The SingleStore schema pinapp writes to, as DDL for SingleStore or MySQL/MariaDB.

Design notes: docs/architecture.md, "pinapp/domain/ddl.py".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from pinapp.domain.events import EventType

__all__ = [
    "ALL_TABLES",
    "BINARY_COLLATION",
    "COLUMNS",
    "EXPERIMENT_USERS",
    "EXPOSURES",
    "FREE_TEXT",
    "OFFSETS",
    "PIN_BUCKETS",
    "ROLLUPS",
    "ROLLUP_CATEGORIES",
    "ROLLUP_COUNTRIES",
    "ROLLUP_DIRTY",
    "ROLLUP_EXPERIMENTS",
    "ROLLUP_PINS",
    "ROLLUP_TYPES",
    "SCHEMA",
    "TABLES",
    "TEXT_COLLATION",
    "Column",
    "Dialect",
    "TableSpec",
    "collation_of",
    "column_sql",
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
    rowstore: bool = False  # SingleStore: in memory, for small tables updated all the time (no sort key)

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
#: Every raw table pinapp writes, in a stable order.
ALL_TABLES: Final = (*TABLES.values(), EXPOSURES)

_BUCKET: Final = Column("bucket", "DATETIME", nullable=False)  # the minute (or hour) a count is of
_GRAIN: Final = Column("grain", "CHAR(1)", nullable=False)  # 'm': a minute, 'h': an hour
_PART: Final = Column("part", "SMALLINT", nullable=False)  # a partition the row's writer holds: no two share one
_EVENTS: Final = Column("events", "BIGINT", nullable=False)


def _rollup(name: str, columns: tuple[Column, ...], key: tuple[str, ...], shard: tuple[str, ...]) -> TableSpec:
    return TableSpec(name, None, columns, shard_key=shard, primary_key=key, sort_key=(), rowstore=True)


#: Each events partition's position in the database, written in the transaction of its rows:
#: the next offset to write, who wrote it (fencing), and the newest event time written.
OFFSETS: Final = _rollup(
    "stream_offsets",
    (
        Column("topic", "VARCHAR(249)", nullable=False),
        Column("part", "INT", nullable=False),
        Column("next_offset", "BIGINT", nullable=False),
        Column("owner", "VARCHAR(64)", nullable=False),
        Column("generation", "BIGINT", nullable=False),
        Column("event_ts", "DATETIME(6)"),
        Column("updated_at", "DATETIME(6)", nullable=False),
    ),
    ("topic", "part"),
    ("topic", "part"),
)
#: Events per minute, type and partition (exact).
ROLLUP_TYPES: Final = _rollup(
    "rollup_types",
    (_BUCKET, Column("event_type", "VARCHAR(16)", nullable=False), _PART, _EVENTS),
    ("bucket", "event_type", "part"),
    ("bucket",),
)
#: Pin engagement (pins, repins, comments, likes) per minute and hour, category and partition (exact).
ROLLUP_CATEGORIES: Final = _rollup(
    "rollup_categories",
    (_GRAIN, _BUCKET, Column("category", "VARCHAR(64)", nullable=False), _PART, _EVENTS),
    ("grain", "bucket", "category", "part"),
    ("bucket",),
)
#: Events of every type per minute and hour, country ('' unknown) and partition (exact).
ROLLUP_COUNTRIES: Final = _rollup(
    "rollup_countries",
    (_GRAIN, _BUCKET, Column("country", "CHAR(2)", nullable=False), _PART, _EVENTS),
    ("grain", "bucket", "country", "part"),
    ("bucket",),
)
#: Per experiment, group and event type ('*': any), minute and hour, partition: exposures and the
#: users first exposed then (exact; a user counts once per group, as COUNT(DISTINCT user_id) does).
ROLLUP_EXPERIMENTS: Final = _rollup(
    "rollup_experiments",
    (
        Column("experiment", "VARCHAR(64)", nullable=False),
        _GRAIN,
        _BUCKET,
        Column("group_name", "VARCHAR(64)", nullable=False),
        Column("event_type", "VARCHAR(16)", nullable=False),
        _PART,
        _EVENTS,
        Column("new_users", "BIGINT", nullable=False),
    ),
    ("experiment", "grain", "bucket", "group_name", "event_type", "part"),
    ("experiment",),
)
#: Each (user, experiment, group, event type or '*')'s first exposure: what makes new_users exact.
EXPERIMENT_USERS: Final = TableSpec(
    "experiment_users",
    None,
    (
        Column("user_id", "VARCHAR(64)", nullable=False),
        Column("experiment", "VARCHAR(64)", nullable=False),
        Column("group_name", "VARCHAR(64)", nullable=False),
        Column("event_type", "VARCHAR(16)", nullable=False),
        Column("first_ts", "DATETIME(6)", nullable=False),
        Column("ingested_at", "DATETIME(6)", nullable=False),
    ),
    shard_key=("user_id",),
    primary_key=("user_id", "experiment", "group_name", "event_type"),
    sort_key=("first_ts",),
)
#: The heaviest pins of each sealed minute and hour (top-K by repins and by engagement; approximate
#: beyond them: :mod:`pinapp.domain.rollups` bounds the error). Written by the sealer, not by partition.
ROLLUP_PINS: Final = _rollup(
    "rollup_pins",
    (
        _GRAIN,
        _BUCKET,
        Column("pin_id", "VARCHAR(64)", nullable=False),
        Column("repins", "BIGINT", nullable=False),
        Column("engagement", "BIGINT", nullable=False),
    ),
    ("grain", "bucket", "pin_id"),
    ("bucket",),
)
#: One row per sealed pin bucket: its totals, and what a pin left out of it may have had at most.
PIN_BUCKETS: Final = _rollup(
    "rollup_pin_buckets",
    (
        _GRAIN,
        _BUCKET,
        Column("repins_total", "BIGINT", nullable=False),
        Column("engagement_total", "BIGINT", nullable=False),
        Column("repins_bound", "BIGINT", nullable=False),
        Column("engagement_bound", "BIGINT", nullable=False),
        Column("pins_kept", "INT", nullable=False),
        Column("sealed_at", "DATETIME(6)", nullable=False),
    ),
    ("grain", "bucket"),
    ("bucket",),
)
#: Minutes that received events after they may have been sealed: the sealer seals them again.
ROLLUP_DIRTY: Final = _rollup(
    "rollup_dirty", (_BUCKET, Column("marks", "BIGINT", nullable=False)), ("bucket",), ("bucket",)
)
#: The tables the stream keeps for the queries, in a stable order.
ROLLUPS: Final = (ROLLUP_TYPES, ROLLUP_CATEGORIES, ROLLUP_COUNTRIES, ROLLUP_EXPERIMENTS, ROLLUP_PINS, PIN_BUCKETS)
#: Everything ``pinapp db migrate`` creates.
SCHEMA: Final = (*ALL_TABLES, EXPERIMENT_USERS, *ROLLUPS, ROLLUP_DIRTY, OFFSETS)


def _ident(name: str) -> str:
    return f"`{name}`"


def _cols(names: tuple[str, ...]) -> str:
    return ", ".join(_ident(n) for n in names)


def create_database_sql(database: str) -> str:
    return f"CREATE DATABASE IF NOT EXISTS {_ident(database)}"


#: Free text: compared case-insensitively, for analysts' LIKE and GROUP BY.
FREE_TEXT: Final = frozenset({"title", "text", "region", "city"})
TEXT_COLLATION: Final = "utf8mb4_general_ci"
#: Every other string column (ids, names, keys) compares as bytes, as dedup and the pin cache do: a
#: case-insensitive key would make ``aZ3k`` and ``Az3K`` one row. Both collations are set explicitly
#: (SingleStore's default for utf8mb4 changed between versions). Both are PAD SPACE (``e1`` equals
#: ``e1 ``), so ids ending with a space are refused at validation.
BINARY_COLLATION: Final = "utf8mb4_bin"


def collation_of(column: Column) -> str | None:
    """The collation ``column`` is declared with (``None``: not a string)."""
    if "CHAR" not in column.sql_type and column.sql_type != "TEXT":
        return None
    return TEXT_COLLATION if column.name in FREE_TEXT else BINARY_COLLATION


def column_sql(column: Column) -> str:
    """One column's definition, as CREATE TABLE and ALTER TABLE ... MODIFY take it."""
    collation = collation_of(column)
    charset = f" CHARACTER SET utf8mb4 COLLATE {collation}" if collation else ""
    return f"{_ident(column.name)} {column.sql_type}{charset}{'' if column.nullable else ' NOT NULL'}"


def create_table_sql(spec: TableSpec, dialect: Dialect) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for one table in ``dialect``."""
    if not set(spec.shard_key) <= set(spec.primary_key):
        raise ValueError(f"{spec.name}: the shard key must be a subset of the primary key")
    lines = [f"  {column_sql(c)}" for c in spec.columns]
    lines.append(f"  PRIMARY KEY ({_cols(spec.primary_key)})")
    kind = "ROWSTORE TABLE" if spec.rowstore and dialect == "singlestore" else "TABLE"
    if dialect == "singlestore":
        lines.append(f"  SHARD KEY ({_cols(spec.shard_key)})")
        if spec.sort_key:
            lines.append(f"  SORT KEY ({_cols(spec.sort_key)})")
        tail = ""
    else:
        if spec.sort_key:
            lines.append(f"  KEY {_ident(spec.name + '_by_' + spec.sort_key[0])} ({_cols(spec.sort_key)})")
        tail = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    body = ",\n".join(lines)
    return f"CREATE {kind} IF NOT EXISTS {_ident(spec.name)} (\n{body}\n){tail}"


def schema_sql(dialect: Dialect) -> list[str]:
    """Every table's DDL, in a stable order."""
    return [create_table_sql(spec, dialect) for spec in SCHEMA]
