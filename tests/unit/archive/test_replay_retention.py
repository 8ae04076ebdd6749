"""A replay of days whose raw rows retention deleted would count their rollups twice: refused."""

from __future__ import annotations

from datetime import date, datetime

from click.testing import CliRunner

from pinapp.archive.replay import retention_conflict
from pinapp.cli import cli

NOW = datetime(2026, 12, 7, 10, 30)


def test_days_within_the_raw_retention_replay() -> None:
    assert retention_conflict(date(2026, 12, 1), 7, NOW) is None
    assert retention_conflict(date(2026, 11, 1), 0, NOW) is None, "0 keeps raw rows for ever"


def test_a_day_partly_past_the_raw_retention_is_refused_with_the_way_out() -> None:
    why = retention_conflict(date(2026, 11, 30), 7, NOW)  # raw rows before 2026-11-30 10:30 are gone
    assert why is not None
    assert "rollups.raw_retention_days (7)" in why
    assert "2026-11-30 10:30 UTC" in why
    assert "replay from 2026-12-01 on" in why
    assert "--rollups-lost" in why


def test_the_cli_refuses_it_in_one_line_before_touching_anything() -> None:
    args = ["--profile", "test", "archive", "replay", "--from", "2020-01-01", "--to", "2020-01-02"]
    result = CliRunner().invoke(cli, args, env={"PINAPP_ROLLUPS__RAW_RETENTION_DAYS": "7"})
    assert result.exit_code == 2, result.output
    assert "--from 2020-01-01 is older than rollups.raw_retention_days (7)" in result.output
    assert "Traceback" not in result.output
