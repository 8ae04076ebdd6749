"""``pinapp db migrate``: SingleStore's schema."""

from __future__ import annotations

import asyncio

import click

from pinapp.cli.base import cli, settings_of

__all__ = ["db"]


@cli.group()
def db() -> None:
    """SingleStore schema."""


@db.command("migrate")
@click.option("--print", "print_only", is_flag=True, help="Print the DDL for the configured dialect; change nothing.")
@click.pass_context
def db_migrate(ctx: click.Context, print_only: bool) -> None:
    """Create the database and its tables if missing; bring existing tables' key collations up to date."""
    from pinapp.adapters.db import migrate
    from pinapp.domain.ddl import SCHEMA, schema_sql

    settings = settings_of(ctx)
    if print_only:
        click.echo(";\n\n".join(schema_sql(settings.db.dialect)) + ";")
        return
    statements = asyncio.run(migrate(settings.db))
    created = sum(s.startswith("CREATE TABLE") for s in statements)
    altered = sum(s.startswith("ALTER TABLE") for s in statements)
    click.echo(
        f"{settings.db.database} ({settings.db.dialect}): {created} tables created, {altered} altered, "
        f"{len(SCHEMA) - created} already there"
    )
