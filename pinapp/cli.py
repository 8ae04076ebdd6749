"""The ``pinapp`` command line: worker, generate, stack, db, query."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click
from tabulate import tabulate

from config import Settings, load_settings
from pinapp.errors import PinappError

__all__ = ["main"]

logger = logging.getLogger("pinapp")


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj["settings"]
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--profile", type=click.Choice(["local", "test", "production"]), default=None,
              help="Settings profile (default: $PINAPP_PROFILE or local).")
@click.pass_context
def cli(ctx: click.Context, profile: str | None) -> None:
    """pinapp: real-time engagement analytics on Kafka, faust and SingleStore."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if profile:
        # The worker's app module reads its settings from the environment at import.
        os.environ["PINAPP_PROFILE"] = profile
    ctx.ensure_object(dict)
    ctx.obj["settings"] = load_settings(profile)


# -- worker ------------------------------------------------------------------------------


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a faust worker (extra arguments go to `faust worker`)."""
    from pinapp.app import app

    level = _settings(ctx).worker.log_level
    sys.argv = ["pinapp", "worker", "--loglevel", level, *ctx.args]
    app.main()


# -- generate ----------------------------------------------------------------------------


@cli.command()
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many records.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), help="Stop after this many seconds.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Records per second (default: as fast as possible).")
@click.option("--duplicate-ratio", default=0.02, show_default=True, type=click.FloatRange(0, 1))
@click.option("--malformed-ratio", default=0.01, show_default=True, type=click.FloatRange(0, 1))
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--users", default=5000, show_default=True, type=click.IntRange(min=1))
@click.option("--start-ms", type=int, help="Event time of the first event, epoch ms (default: now).")
@click.option("--to", "target", type=click.Choice(["kafka", "file"]), default="kafka", show_default=True)
@click.option("--file", "path", type=click.Path(dir_okay=False, path_type=Path), help="JSON-lines file for --to file.")
@click.option("--topic", help="Topic for --to kafka (default: kafka.events_topic).")
@click.option("--truth", type=click.Path(dir_okay=False, path_type=Path), help="Write the ground truth here.")
@click.option("--ids/--no-ids", default=None, help="Keep every event id in the ground truth (default: with --count).")
@click.pass_context
def generate(ctx: click.Context, count: int | None, duration: float | None, rate: float | None,
             duplicate_ratio: float, malformed_ratio: float, seed: int, users: int, start_ms: int | None,
             target: str, path: Path | None, topic: str | None, truth: Path | None, ids: bool | None) -> None:
    """Generate synthetic engagement traffic into Kafka or a log file."""
    from pinapp.generator import GeneratorConfig, TrafficGenerator
    from pinapp.geo import GeoLocator
    from pinapp.producing import run_generator

    settings = _settings(ctx)
    if target == "file" and path is None:
        raise click.UsageError("--to file needs --file PATH")
    config = GeneratorConfig(
        seed=seed, users=users, duplicate_ratio=duplicate_ratio, malformed_ratio=malformed_ratio,
        start_ms=start_ms, step_ms=1000.0 / rate if rate else 1.0,
        max_event_bytes=settings.pipeline.max_event_bytes,
    )
    gen = TrafficGenerator(config, GeoLocator(settings.pipeline.geoip_db_path),
                           keep_ids=ids if ids is not None else count is not None)
    sent = asyncio.run(run_generator(
        gen, settings, target=target, path=path, topic=topic or settings.kafka.events_topic,
        count=count, duration=duration, rate=rate, truth_path=truth,
    ))
    doc = gen.truth.to_json()
    doc.pop("event_ids", None)
    click.echo(f"sent {sent} records; ground truth: {doc}")


# -- stack -------------------------------------------------------------------------------


@cli.group()
def stack() -> None:
    """The local stack: Apache Kafka (KRaft), MariaDB, moto S3 on loopback."""


@stack.command("up")
@click.pass_context
def stack_up(ctx: click.Context) -> None:
    """Start every service that is not running (harmless when all are)."""
    from pinapp.stack import Stack

    for line in Stack(_settings(ctx)).up():
        click.echo(line)


@stack.command("down")
@click.pass_context
def stack_down(ctx: click.Context) -> None:
    """Stop the services this stack started (and nothing else)."""
    from pinapp.stack import Stack

    for line in Stack(_settings(ctx)).down():
        click.echo(line)


@stack.command("status")
@click.pass_context
def stack_status(ctx: click.Context) -> None:
    """Show each service, its port, pid and health. Exit 1 if any is not healthy."""
    from pinapp.stack import Stack

    statuses = Stack(_settings(ctx)).status()
    click.echo(tabulate([(s.name, s.port, s.pid or "-", s.state, s.log) for s in statuses],
                        headers=["service", "port", "pid", "state", "log"]))
    if not all(s.healthy for s in statuses):
        ctx.exit(1)


# -- db ----------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """SingleStore schema."""


@db.command("migrate")
@click.option("--print", "print_only", is_flag=True, help="Print the DDL for the configured dialect; change nothing.")
@click.pass_context
def db_migrate(ctx: click.Context, print_only: bool) -> None:
    """Create the database and the five event tables if missing."""
    from pinapp.db import migrate
    from pinapp.ddl import TABLES, schema_sql

    settings = _settings(ctx)
    if print_only:
        click.echo(";\n\n".join(schema_sql(settings.db.dialect)) + ";")
        return
    statements = asyncio.run(migrate(settings.db))
    created = sum(s.startswith("CREATE TABLE") for s in statements)
    click.echo(f"{settings.db.database} ({settings.db.dialect}): {created} tables created, "
               f"{len(TABLES) - created} already there")


# -- query -------------------------------------------------------------------------------


@cli.command()
@click.argument("name", required=False)
@click.option("--sql", help="Ad-hoc read-only SQL instead of a named query.")
@click.option("--minutes", default=60, show_default=True, type=click.IntRange(min=1), help="Look back this far.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--list", "list_", is_flag=True, help="List the named queries.")
@click.pass_context
def query(ctx: click.Context, name: str | None, sql: str | None, minutes: int, limit: int, list_: bool) -> None:
    """Run a named engagement query (or --sql) on SingleStore and print a table."""
    from pinapp.queries import NAMED_QUERIES, check_read_only

    if list_ or (name is None and sql is None):
        click.echo(tabulate([(q.name, q.description) for q in NAMED_QUERIES.values()], headers=["name", "what"]))
        return
    if name is not None and sql is not None:
        raise click.UsageError("give a query NAME or --sql, not both")
    params: dict[str, Any] | None
    if sql is not None:
        statement, params = check_read_only(sql), None
    elif name in NAMED_QUERIES:
        statement, params = NAMED_QUERIES[name].sql, {"minutes": minutes, "limit": limit}
    else:
        raise click.UsageError(f"unknown query {name!r}; one of: {', '.join(NAMED_QUERIES)}")
    columns, rows = asyncio.run(_run_query(_settings(ctx), statement, params))
    click.echo(tabulate(rows, headers=columns))


async def _run_query(settings: Settings, sql: str, params: dict[str, Any] | None) -> tuple[list[str], list[Any]]:
    from pinapp.db import create_pool
    from pinapp.queries import run_query

    pool = await create_pool(settings.db, size=1)
    try:
        return await run_query(pool, sql, params, dialect=settings.db.dialect)
    finally:
        pool.close()
        await pool.wait_closed()


def main() -> None:
    """Console entry point: errors pinapp raises on purpose print as one clear line."""
    try:
        cli(obj={})
    except PinappError as exc:
        click.echo(f"pinapp: error: {exc}", err=True)
        sys.exit(2)
