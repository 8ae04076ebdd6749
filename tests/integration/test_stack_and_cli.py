"""The stack commands and the CLI's error reporting, as a user runs them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from config import Settings
from pinapp.adapters.db import create_pool
from pinapp.adapters.queries import run_query
from pinapp.errors import DatabaseError
from pinapp.tools.harness import REPO, free_port


def _pinapp(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from pinapp.cli import main; main()", "--profile", "test", *args],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_status_shows_every_service_healthy(test_stack: Settings) -> None:
    result = _pinapp("stack", "status")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines()[2:]}
    assert set(lines) == {"kafka", "mariadb", "s3"}
    assert lines["kafka"][1] == str(test_stack.stack.kafka_port)
    assert all(cols[3] == "healthy" for cols in lines.values())


def test_up_twice_is_harmless(test_stack: Settings) -> None:
    result = _pinapp("stack", "up")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("already running") == 3


def test_a_port_held_by_someone_else_is_a_clear_error(test_stack: Settings) -> None:
    # Point a second stack at the test stack's Kafka port: not ours, so `up` refuses.
    result = _pinapp(
        "stack",
        "up",
        env={
            "PINAPP_STACK__DATA_DIR": str(REPO / ".stack" / "other"),
            "PINAPP_STACK__KAFKA_PORT": str(test_stack.stack.kafka_port),
        },
    )
    assert result.returncode == 2
    assert "in use by a process this stack did not start" in result.stderr
    assert "PINAPP_STACK__KAFKA_PORT" in result.stderr


def test_config_errors_name_the_setting() -> None:
    result = _pinapp("stack", "status", env={"PINAPP_KAFKA__PARTITIONS": "zero"})
    assert result.returncode == 2
    assert "kafka.partitions" in result.stderr and "PINAPP_KAFKA__PARTITIONS" in result.stderr


def test_query_refuses_writes_and_runs_named_queries(test_stack: Settings) -> None:
    refused = _pinapp("query", "--sql", "DROP DATABASE mysql")
    assert refused.returncode == 2 and "only SELECT" in refused.stderr
    listed = _pinapp("query", "--list")
    assert listed.returncode == 0 and "most-repinned" in listed.stdout


def test_peoples_queries_run_as_a_select_only_account_with_a_time_limit(test_stack: Settings) -> None:
    """The regex is the friendly first check; the account is the defence: past the check, a
    DUMPFILE or a CREATE is still refused, and every statement is bounded in time."""

    async def as_reader() -> None:
        pool = await create_pool(test_stack.db, size=1, reader=True, with_database=False)
        try:
            _, [(user, limit)] = await run_query(pool, "SELECT CURRENT_USER(), @@max_statement_time")
            assert user.startswith(f"{test_stack.db.query_user}@") and float(limit) == 60
            for statement in ("SELECT 1 INTO DUMPFILE '/tmp/pinapp-reader-test'", "CREATE DATABASE pinapp_reader_x"):
                with pytest.raises(DatabaseError, match="denied"):
                    await run_query(pool, statement)
        finally:
            pool.close()
            await pool.wait_closed()

    asyncio.run(as_reader())
    assert not Path("/tmp/pinapp-reader-test").exists()


def test_database_problems_are_one_clear_line(test_stack: Settings) -> None:
    missing = _pinapp("query", "top-countries", env={"PINAPP_DB__DATABASE": "no_such_db"})
    assert missing.returncode == 2, missing.stderr
    assert "Unknown database" in missing.stderr and "pinapp db migrate" in missing.stderr
    assert "Traceback" not in missing.stderr
    wrong = _pinapp("query", "--sql", "SELECT no_such_column FROM pins", env={"PINAPP_DB__DATABASE": "mysql"})
    assert wrong.returncode == 2 and "query failed" in wrong.stderr and "Traceback" not in wrong.stderr


def test_a_service_that_cannot_start_fails_with_its_log_tail(tmp_path: Path) -> None:
    # A corrupt KRaft meta.properties: storage looks formatted, so the broker starts and dies.
    data = tmp_path / "stack" / "kafka" / "data"
    data.mkdir(parents=True)
    (data / "meta.properties").write_text("this is not a kafka meta.properties\n")
    env = {
        "PINAPP_STACK__DATA_DIR": str(tmp_path / "stack"),
        "PINAPP_STACK__KAFKA_PORT": str(free_port()),
        "PINAPP_STACK__KAFKA_CONTROLLER_PORT": str(free_port()),
        "PINAPP_STACK__KAFKA_SASL_SSL_PORT": str(free_port()),
    }
    result = _pinapp("stack", "up", env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "kafka exited during start-up; log tail:" in result.stderr
    assert "Exiting Kafka due to fatal exception" in result.stderr.split("log tail:", 1)[1]  # its own words
    status = _pinapp("stack", "status", env=env)
    assert status.returncode == 1 and "stopped" in status.stdout
