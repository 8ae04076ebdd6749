"""The DDL text for SingleStore obeys its rules; the MySQL dialect is plain InnoDB."""

from __future__ import annotations

import re

import pytest

from pinapp.domain.ddl import (
    ALL_TABLES,
    EXPOSURES,
    OFFSETS,
    ROLLUPS,
    SCHEMA,
    TABLES,
    Column,
    TableSpec,
    create_table_sql,
    schema_sql,
)
from pinapp.domain.events import EventType


def _key_cols(sql: str, key: str) -> list[str]:
    match = re.search(rf"{key} \(([^)]*)\)", sql)
    assert match, f"no {key} in {sql}"
    return [c.strip(" `") for c in match.group(1).split(",")]


def test_one_table_per_event_type() -> None:
    assert set(TABLES) == set(EventType)
    assert [s.name for s in TABLES.values()] == ["pins", "repins", "comments", "likes", "logins"]


@pytest.mark.parametrize("spec", ALL_TABLES, ids=lambda s: s.name)
def test_singlestore_ddl_follows_singlestore_rules(spec: TableSpec) -> None:
    sql = create_table_sql(spec, "singlestore")
    assert sql.startswith(f"CREATE TABLE IF NOT EXISTS `{spec.name}` (")
    shard = _key_cols(sql, "SHARD KEY")
    primary = _key_cols(sql, "PRIMARY KEY")
    assert set(shard) <= set(primary), "every unique/primary key must contain the shard key"
    assert "event_id" in primary or spec.name == "pins"
    assert _key_cols(sql, "SORT KEY") == ["ts"]
    assert sql.count("SORT KEY") == 1
    for banned in ("FOREIGN KEY", "REFERENCES", "AUTO_INCREMENT", "ENGINE=", "TRIGGER", "ROWSTORE"):
        assert banned not in sql
    # only one unique key (the primary key) on a columnstore table
    assert "UNIQUE" not in sql


def test_singlestore_shards_pin_tables_by_pin_and_logins_by_user() -> None:
    ddl = dict(zip([s.name for s in SCHEMA], schema_sql("singlestore"), strict=True))
    for name in ("pins", "repins", "comments", "likes"):
        assert _key_cols(ddl[name], "SHARD KEY") == ["pin_id"]
    assert _key_cols(ddl["logins"], "SHARD KEY") == ["user_id"]
    assert _key_cols(ddl["repins"], "PRIMARY KEY") == ["pin_id", "event_id"]


def test_exposures_are_sharded_by_user_and_kept_single_per_event_and_experiment() -> None:
    sql = create_table_sql(EXPOSURES, "singlestore")
    assert _key_cols(sql, "SHARD KEY") == ["user_id"]
    assert _key_cols(sql, "PRIMARY KEY") == ["user_id", "experiment", "event_id"]


@pytest.mark.parametrize("spec", ALL_TABLES, ids=lambda s: s.name)
def test_mysql_ddl_has_no_singlestore_clauses(spec: TableSpec) -> None:
    sql = create_table_sql(spec, "mysql")
    assert "SHARD KEY" not in sql and "SORT KEY" not in sql
    assert sql.endswith("ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
    assert _key_cols(sql, f"KEY `{spec.name}_by_ts`") == ["ts"]


def test_a_shard_key_outside_the_primary_key_is_refused() -> None:
    bad = TableSpec(
        "bad", EventType.LIKE, (Column("a", "INT"), Column("b", "INT")), shard_key=("a",), primary_key=("b",)
    )
    with pytest.raises(ValueError, match="subset"):
        create_table_sql(bad, "singlestore")


@pytest.mark.parametrize("spec", [*ROLLUPS, OFFSETS], ids=lambda s: s.name)
def test_rollups_and_positions_are_rowstore_tables_whose_keys_hold_the_shard_key(spec: TableSpec) -> None:
    sql = create_table_sql(spec, "singlestore")
    assert sql.startswith(f"CREATE ROWSTORE TABLE IF NOT EXISTS `{spec.name}` (")
    assert set(_key_cols(sql, "SHARD KEY")) <= set(_key_cols(sql, "PRIMARY KEY"))
    assert "SORT KEY" not in sql, "rowstore tables have no sort key"
    mysql = create_table_sql(spec, "mysql")
    assert mysql.startswith(f"CREATE TABLE IF NOT EXISTS `{spec.name}` (") and "ROWSTORE" not in mysql


def test_the_stream_keyed_rollups_have_the_partition_in_their_key() -> None:
    """Each partition's owner writes its own counter rows: workers never wait on each other's locks."""
    for spec in ROLLUPS:
        if spec.name.startswith("rollup_pin"):
            assert "part" not in spec.primary_key, "the pin rollups are written by the sealer alone"
        else:
            assert spec.primary_key[-1] == "part", spec.name
