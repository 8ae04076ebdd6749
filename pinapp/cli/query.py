"""``pinapp query``: a named engagement query, or read-only SQL, as a table."""

from __future__ import annotations

import asyncio
from typing import Any

import click
from tabulate import tabulate

from config import Settings
from pinapp.cli.base import cli, settings_of
from pinapp.errors import ConfigError

__all__ = ["query"]


@cli.command()
@click.argument("name", required=False)
@click.option("--sql", help="Ad-hoc read-only SQL instead of a named query.")
@click.option("--minutes", default=60, show_default=True, type=click.IntRange(min=1), help="Look back this far.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--list", "list_", is_flag=True, help="List the named queries.")
@click.pass_context
def query(ctx: click.Context, name: str | None, sql: str | None, minutes: int, limit: int, list_: bool) -> None:
    """Run a named engagement query (or --sql) on SingleStore and print a table."""
    from pinapp.adapters.queries import NAMED_QUERIES, check_read_only, query_params

    settings = settings_of(ctx)
    if list_ or (name is None and sql is None):
        click.echo(tabulate([(q.name, q.description) for q in NAMED_QUERIES.values()], headers=["name", "what"]))
        return
    if name is not None and sql is not None:
        raise click.UsageError("give a query NAME or --sql, not both")
    params: dict[str, Any] | None
    if sql is not None:
        if settings.profile == "production" and not settings.db.query_user:
            raise ConfigError(
                "db.query_user is not set: the production profile runs ad-hoc SQL only as a SELECT-only account "
                "(set PINAPP_DB__QUERY_USER and PINAPP_DB__QUERY_PASSWORD; docs/operations.md shows how to make one)"
            )
        statement, params = check_read_only(sql), None
    elif name in NAMED_QUERIES:
        statement, params = NAMED_QUERIES[name].sql, query_params(minutes, limit, settings.trends)
    else:
        raise click.UsageError(f"unknown query {name!r}; one of: {', '.join(NAMED_QUERIES)}")
    columns, rows = asyncio.run(_run_query(settings, statement, params))
    click.echo(tabulate(rows, headers=columns))


async def _run_query(settings: Settings, sql: str, params: dict[str, Any] | None) -> tuple[list[str], list[Any]]:
    from pinapp.adapters.db import create_pool
    from pinapp.adapters.queries import run_query

    timeout = None if params is None else settings.db.read_timeout_s
    pool = await create_pool(settings.db, size=1, read_timeout=timeout, reader=True)
    try:
        return await run_query(pool, sql, params, dialect=settings.db.dialect)
    finally:
        pool.close()
        await pool.wait_closed()
