"""The ``pinapp`` command line: worker, archiver, alerter, archive, singer, generate, stack, db, query, audit."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from tabulate import tabulate

from config import Settings, load_settings
from pinapp.domain.experiments import Experiment
from pinapp.errors import ConfigError, PinappError
from pinapp.tools.allocator import run_on_chosen_allocator, tune_gc

if TYPE_CHECKING:
    from pinapp.domain.experiments import Experiment, SrmVerdict

__all__ = ["main"]

logger = logging.getLogger("pinapp")


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj["settings"]
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--profile",
    type=click.Choice(["local", "test", "production"]),
    default=None,
    help="Settings profile (default: $PINAPP_PROFILE or local).",
)
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
    settings = _settings(ctx)
    run_on_chosen_allocator(settings)  # may re-execute this process on jemalloc
    _make_data_dir(settings.worker.data_dir)
    asyncio.run(_ensure_topics(settings, [settings.kafka.events_topic, settings.kafka.dlq_topic]))
    options = _faust_options(settings, settings.worker.data_dir)
    from pinapp.topology.app import app

    sys.argv = ["pinapp", *options, *ctx.args]
    tune_gc(settings)
    app.main()


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def archiver(ctx: click.Context) -> None:
    """Run the S3 archiver worker: its own consumer group (extra arguments go to `faust worker`)."""
    settings = _settings(ctx)
    run_on_chosen_allocator(settings)  # may re-execute this process on jemalloc
    asyncio.run(_check_bucket(settings))  # a missing bucket or bad credentials: one clear line, now
    asyncio.run(_ensure_topics(settings, list(settings.archive_topics)))
    _make_data_dir(settings.worker.data_dir / "archiver")
    options = _faust_options(settings, settings.worker.data_dir / "archiver")
    from pinapp.topology.app import archive_app

    sys.argv = ["pinapp", *options, *ctx.args]
    tune_gc(settings)
    archive_app.main()


def _make_data_dir(path: Path) -> None:
    """``worker.data_dir`` with its parents; a folder that cannot be made fails in one line."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"worker.data_dir={str(path)!r} cannot be created ({exc.strerror}); set "
            "PINAPP_WORKER__DATA_DIR (or [worker] data_dir) to a folder this user can write"
        ) from None


def _faust_options(settings: Settings, data_dir: Path) -> list[str]:
    """faust's command line (after the program name), from pinapp's settings only.

    faust reads defaults from ``FAUST_*``/``F_*`` variables when it is imported
    (``FAUST_WORKDIR`` even changes directory, ``FAUST_DEBUG`` turns on its blocking
    detector): they are dropped from this process's environment first, with a warning.
    """
    assert "faust" not in sys.modules, "faust read its environment before pinapp could clear it"
    for name in sorted(n for n in os.environ if n.startswith(("FAUST_", "F_"))):
        logger.warning("ignoring %s: pinapp's settings configure the worker (see docs/operations.md)", name)
        del os.environ[name]
    return ["--no-debug", "--datadir", str(data_dir), "worker", "--loglevel", settings.worker.log_level]


async def _ensure_topics(settings: Settings, topics: list[str]) -> None:
    """The topics a worker consumes, made before it joins its group: a topic the group's leader
    does not know when it assigns stays unassigned until the next metadata refresh (5 minutes).
    Brokers not reachable yet: the worker goes on, and connects (and faust creates them) later."""
    from pinapp.adapters.kafka import ensure_topics

    try:
        await asyncio.wait_for(ensure_topics(settings.kafka, topics), settings.kafka.request_timeout_s * 3)
    except Exception as exc:  # noqa: BLE001 - anything: faust creates the topics itself later
        logging.getLogger("pinapp").warning("could not make sure topics %s exist now (%r); going on", topics, exc)


async def _check_bucket(settings: Settings) -> None:
    from pinapp.adapters.s3 import credential_source, s3_client
    from pinapp.archive.writer import ArchiveWriter

    logging.getLogger("pinapp.archive").info("archive: S3 credentials from %s", await credential_source(settings.s3))
    async with s3_client(settings.s3) as s3:
        archive = settings.archive
        await ArchiveWriter(
            s3, settings.s3.bucket, archive.prefix, conditional_writes=archive.conditional_writes
        ).check_bucket()


@cli.command()
@click.pass_context
def alerter(ctx: click.Context) -> None:
    """Evaluate the alert rules every alerts.interval_s; send alerts and resolutions to alerts.webhook_url."""
    from pinapp.alerting.loop import run_alerter

    settings = _settings(ctx)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_alerter(settings, stop)

    asyncio.run(main())


# -- archive -----------------------------------------------------------------------------


@cli.group()
def archive() -> None:
    """The S3 archive: list it, verify it, replay it into Kafka."""


@archive.command("ls")
@click.option("--topic", help="Topic (default: the events topic).")
@click.option("--day", type=click.DateTime(["%Y-%m-%d"]), help="Only this day (UTC).")
@click.pass_context
def archive_ls(ctx: click.Context, topic: str | None, day: Any) -> None:
    """List hour folders with their objects, records' bytes and _SUCCESS markers."""
    from pinapp.adapters.s3 import s3_client
    from pinapp.archive.listing import FolderSummary, folder_summaries

    settings = _settings(ctx)

    async def listing() -> list[FolderSummary]:
        async with s3_client(settings.s3) as s3:
            return await folder_summaries(
                s3,
                settings.s3.bucket,
                settings.archive.prefix,
                topic or settings.kafka.events_topic,
                day.date() if day else None,
            )

    rows = [(f.url, f.objects, f.bytes, "_SUCCESS" if f.complete else "") for f in asyncio.run(listing())]
    click.echo(tabulate(rows, headers=["folder", "objects", "bytes", "complete"]))


@archive.command("verify")
@click.option("--topic", help="Topic (default: the events topic).")
@click.pass_context
def archive_verify(ctx: click.Context, topic: str | None) -> None:
    """Check every offset from the topic's start to the archiver's committed offset is archived
    exactly once. Prints gaps and duplicates; exit 1 on any."""
    from pinapp.archive.verify import verify_archive

    settings = _settings(ctx)
    report, table = asyncio.run(verify_archive(settings, topic or settings.kafka.events_topic))
    click.echo(tabulate(table, headers=["partition", "start", "committed", "gaps", "duplicates"]))
    click.echo(
        f"{report.topic}: {report.records} records in {report.objects} objects; {'OK' if report.ok else 'FAILED'}"
    )
    if not report.ok:
        ctx.exit(1)


@archive.command("replay")
@click.option("--topic", help="Archived topic to read (default: the events topic).")
@click.option("--from", "first", required=True, type=click.DateTime(["%Y-%m-%d"]), help="First day (UTC).")
@click.option("--to", "last", required=True, type=click.DateTime(["%Y-%m-%d"]), help="Last day (UTC), inclusive.")
@click.option("--to-topic", help="Produce into this topic (default: the archived topic itself).")
@click.pass_context
def archive_replay(ctx: click.Context, topic: str | None, first: Any, last: Any, to_topic: str | None) -> None:
    """Produce archived events back into Kafka (a backfill); the topology dedups them by row."""
    settings = _settings(ctx)
    if last < first:
        raise click.BadParameter("--to is before --from", param_hint="--to")
    source = topic or settings.kafka.events_topic
    objects, records = asyncio.run(_archive_replay(settings, source, first.date(), last.date(), to_topic or source))
    click.echo(f"replayed {records} records from {objects} objects of {source} into {to_topic or source}")


async def _archive_replay(settings: Settings, topic: str, first: Any, last: Any, to_topic: str) -> tuple[int, int]:
    from pinapp.adapters.kafka import ensure_topics, make_producer
    from pinapp.adapters.s3 import s3_client
    from pinapp.archive.listing import keys_between
    from pinapp.archive.replay import replay

    async with s3_client(settings.s3) as s3:
        keys = await keys_between(s3, settings.s3.bucket, settings.archive.prefix, topic, first, last)
        if not keys:
            click.echo(f"no archived objects of {topic} between {first} and {last}")
            return 0, 0
        await ensure_topics(settings.kafka, [to_topic])
        producer = make_producer(settings.kafka)
        await producer.start()
        try:
            with click.progressbar(
                length=len(keys), label=f"replaying {len(keys)} objects", show_pos=True, file=sys.stderr
            ) as bar:
                report = await replay(
                    s3, producer, settings.s3.bucket, keys, to_topic, progress=lambda _n: bar.update(1)
                )
        finally:
            await producer.stop()
    return report.objects, report.records


# -- singer ------------------------------------------------------------------------------


@cli.group(invoke_without_command=True)
@click.pass_context
def singer(ctx: click.Context) -> None:
    """Ship application log files to Kafka, at least once (`pinapp singer`; `status` to inspect)."""
    if ctx.invoked_subcommand is None:
        from pinapp.singer.shipper import Singer

        settings = _settings(ctx)
        asyncio.run(_run_singer(Singer(settings)))


async def _run_singer(shipper: Any) -> None:
    import signal as signals

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signals.SIGINT, signals.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await shipper.run(stop)


@singer.command("status")
@click.pass_context
def singer_status(ctx: click.Context) -> None:
    """Per stream: files, bytes not yet shipped (from the watermarks, now) and the last heartbeat's counters."""
    import orjson

    from pinapp.singer.reader import StreamReader
    from pinapp.singer.shipper import status_path
    from pinapp.singer.watermark import Watermark

    settings = _settings(ctx)
    conf = settings.singer
    last: dict[str, Any] = {}
    path = status_path(settings)
    if path.exists():
        doc = orjson.loads(path.read_bytes())
        last = {s["name"]: s for s in doc["streams"]}
        state = "stopped" if doc.get("stopped") else f"pid {doc['pid']}"
        click.echo(f"last heartbeat: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(doc['at']))} ({state})")
    else:
        click.echo("no heartbeat yet (singer has not run here)")
    rows = []
    for spec in conf.streams:
        reader = StreamReader(
            spec,
            Watermark.load(conf.data_dir / f"{spec.name}.watermark.json"),
            max_line_bytes=1,
            keep=1,
            partial_line_grace_s=conf.partial_line_grace_s,
        )
        s = last.get(spec.name, {})
        files = reader.files()
        rows.append(
            (
                spec.name,
                len(files),
                reader.bytes_behind(files),
                s.get("lines_shipped", "-"),
                s.get("dead_lettered", "-"),
                s.get("errors", "-"),
                ", ".join(spec.paths),
            )
        )
    click.echo(
        tabulate(rows, headers=["stream", "files", "bytes behind", "lines shipped", "dead-lettered", "errors", "paths"])
    )


# -- generate ----------------------------------------------------------------------------


@cli.command()
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many records.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), help="Stop after this many seconds.")
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), help="Records per second (default: as fast as possible)."
)
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
@click.option(
    "--trend-after",
    type=click.FloatRange(min=0),
    help="Inject a developing trend this many seconds (of event time) in: a share of pin engagement goes to one pin.",
)
@click.option("--trend-share", default=0.05, show_default=True, type=click.FloatRange(0, 1, min_open=True))
@click.option("--trend-category", help="With --trend-after: the trend is this category's pins, not one pin.")
@click.option(
    "--experiment-leak",
    "leaks",
    multiple=True,
    metavar="NAME=SHARE",
    help="An allocation bug: SHARE of experiment NAME's last group is logged in its first (experiments come "
    "from experiments.definitions_file).",
)
@click.option("--rotate-bytes", type=click.IntRange(min=1), help="With --to file: rotate (rename-style) at this size.")
@click.option(
    "--rotate-keep",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rotated files kept (FILE.1 .. FILE.N).",
)
@click.pass_context
def generate(
    ctx: click.Context,
    count: int | None,
    duration: float | None,
    rate: float | None,
    duplicate_ratio: float,
    malformed_ratio: float,
    seed: int,
    users: int,
    start_ms: int | None,
    target: str,
    path: Path | None,
    topic: str | None,
    truth: Path | None,
    ids: bool | None,
    rotate_bytes: int | None,
    rotate_keep: int,
    trend_after: float | None,
    trend_share: float,
    trend_category: str | None,
    leaks: tuple[str, ...],
) -> None:
    """Generate synthetic engagement traffic into Kafka or a log file."""
    from pinapp.domain.geo import GeoLocator
    from pinapp.tools.generator import CATEGORIES, GeneratorConfig, TrafficGenerator, Trend
    from pinapp.tools.traffic import run_generator

    settings = _settings(ctx)
    if target == "file" and path is None:
        raise click.UsageError("--to file needs --file PATH")
    if trend_category is not None and trend_category not in CATEGORIES:
        raise click.BadParameter(f"one of: {', '.join(CATEGORIES)}", param_hint="--trend-category")
    if trend_category is not None and trend_after is None:
        raise click.UsageError("--trend-category needs --trend-after SECONDS")
    trend = Trend(trend_after, trend_share, trend_category) if trend_after is not None else None
    experiments = _experiments(settings)
    config = GeneratorConfig(
        seed=seed,
        users=users,
        duplicate_ratio=duplicate_ratio,
        malformed_ratio=malformed_ratio,
        start_ms=start_ms,
        step_ms=1000.0 / rate if rate else 1.0,
        max_event_bytes=settings.pipeline.max_event_bytes,
        trend=trend,
        experiments=experiments,
        leaks=_leaks(leaks, {e.name for e in experiments}),
    )
    gen = TrafficGenerator(
        config, GeoLocator(settings.pipeline.geoip_db_path), keep_ids=ids if ids is not None else count is not None
    )
    sent = asyncio.run(
        run_generator(
            gen,
            settings,
            target=target,
            path=path,
            topic=topic or settings.kafka.events_topic,
            count=count,
            duration=duration,
            rate=rate,
            truth_path=truth,
            rotate_bytes=rotate_bytes,
            rotate_keep=rotate_keep,
        )
    )
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
    from pinapp.tools.stack import Stack

    for line in Stack(_settings(ctx)).up():
        click.echo(line)


@stack.command("down")
@click.pass_context
def stack_down(ctx: click.Context) -> None:
    """Stop the services this stack started (and nothing else)."""
    from pinapp.tools.stack import Stack

    for line in Stack(_settings(ctx)).down():
        click.echo(line)


@stack.command("status")
@click.pass_context
def stack_status(ctx: click.Context) -> None:
    """Show each service, its port, pid and health. Exit 1 if any is not healthy."""
    from pinapp.tools.stack import Stack

    statuses = Stack(_settings(ctx)).status()
    click.echo(
        tabulate(
            [(s.name, s.port, s.pid or "-", s.state, s.log) for s in statuses],
            headers=["service", "port", "pid", "state", "log"],
        )
    )
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
    """Create the database and its tables if missing; bring existing tables' key collations up to date."""
    from pinapp.adapters.db import migrate
    from pinapp.domain.ddl import SCHEMA, schema_sql

    settings = _settings(ctx)
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


def _experiments(settings: Settings) -> tuple[Experiment, ...]:
    from pinapp.domain.experiments import load_experiments

    path = settings.experiments.definitions_file
    return load_experiments(path) if path is not None else ()


def _leaks(values: tuple[str, ...], names: set[str]) -> dict[str, float]:
    leaks = {}
    for value in values:
        name, _, share = value.partition("=")
        try:
            leaks[name] = float(share)
        except ValueError:
            raise click.BadParameter(
                f"{value!r}: NAME=SHARE, e.g. checkout_flow=0.1", param_hint="--experiment-leak"
            ) from None
        if name not in names:
            raise click.BadParameter(
                f"no experiment {name!r} in experiments.definitions_file", param_hint="--experiment-leak"
            )
        if not 0 <= leaks[name] <= 1:
            raise click.BadParameter(f"{value!r}: SHARE is a fraction 0..1", param_hint="--experiment-leak")
    return leaks


@cli.command()
@click.pass_context
def experiments(ctx: click.Context) -> None:
    """The experiments (experiments.definitions_file) with their live allocation and sample-ratio test."""
    settings = _settings(ctx)
    defined = _experiments(settings)
    if not defined:
        click.echo("no experiments: set experiments.definitions_file (PINAPP_EXPERIMENTS__DEFINITIONS_FILE)")
        return
    verdicts = asyncio.run(_verdicts(settings, defined))
    rows = []
    for experiment, verdict in zip(defined, verdicts, strict=True):
        rows.append(
            (
                experiment.name,
                experiment.start.isoformat().replace("+00:00", "Z"),
                ", ".join(f"{g} {s:.0%}" for g, s in experiment.shares.items()),
                ", ".join(f"{g} {n:,}" for g, n in verdict.users.items()),
                "-" if verdict.p_value is None else f"{verdict.p_value:.2g}",
                "MISMATCH" if verdict.mismatch else ("ok" if verdict.p_value is not None else "too few users"),
            )
        )
    click.echo(tabulate(rows, headers=["experiment", "start", "intended", "users", "srm p", "verdict"]))


async def _verdicts(settings: Settings, defined: tuple[Experiment, ...]) -> list[SrmVerdict]:
    from pinapp.adapters.db import create_pool
    from pinapp.adapters.queries import srm_verdict

    pool = await create_pool(settings.db, size=1, reader=True)
    try:
        return [await srm_verdict(pool, e, settings.experiments, dialect=settings.db.dialect) for e in defined]
    finally:
        pool.close()
        await pool.wait_closed()


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
    from pinapp.adapters.queries import NAMED_QUERIES, check_read_only, query_params

    settings = _settings(ctx)
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


# -- audit -------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--truth",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The generator's ground-truth file (default: expect what the events topic holds).",
)
@click.option("--no-archive", is_flag=True, help="Check the tables only, not the S3 archive.")
@click.option(
    "--wait",
    "wait_s",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Audit again until clean with nothing pending, or this many seconds have passed (a pipeline "
    "catching up); what is still pending then counts as a discrepancy.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.option(
    "--show",
    default=10,
    show_default=True,
    type=click.IntRange(min=0),
    help="How many ids to list per kind of discrepancy.",
)
@click.pass_context
def audit(ctx: click.Context, truth: Path | None, no_archive: bool, wait_s: float, as_json: bool, show: int) -> None:
    """Reconcile expected events with the SingleStore tables and the S3 archive.

    Prints per event type: expected, rows, missing ids, pending ids (in Kafka beyond the
    workers' positions: not processed yet), duplicate ids, unexpected rows and, unless
    --no-archive, events missing from the archive and archived offsets missing or doubled; then
    whether every rollup agrees with the raw rows, and every bad input has a dead letter. Exit 1
    on any discrepancy; pending is one only with --wait, once the wait is over.
    """
    import orjson

    from pinapp.tools.audit import audit as run_audit

    report = asyncio.run(run_audit(_settings(ctx), truth=truth, archive=not no_archive, wait_s=wait_s))
    if as_json:
        click.echo(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        rows = [
            (
                t.value,
                a.expected,
                a.rows,
                len(a.missing),
                len(a.pending),
                len(a.duplicates),
                len(a.unexpected),
                a.learned,
                "-" if a.archived is None else a.archived,
                len(a.archive_missing),
                "-" if a.archived is None else len(a.archive_pending),
            )
            for t, a in report.types.items()
        ]
        click.echo(f"expected: {report.source}")
        click.echo(
            tabulate(
                rows,
                headers=[
                    "type",
                    "expected",
                    "rows",
                    "missing",
                    "pending",
                    "duplicate",
                    "unexpected",
                    "learned",
                    "archived",
                    "not archived",
                    "archive pending",
                ],
            )
        )

        def ids(kind: str, t: str, found: list[str]) -> None:
            if found and show:
                more = f" (+{len(found) - show} more)" if len(found) > show else ""
                click.echo(f"  {t} {kind}: {', '.join(found[:show])}{more}")

        for t, a in report.types.items():
            ids("missing", t.value, a.missing)
            ids("pending" + (" (still, after --wait)" if report.pending_counts else ""), t.value, a.pending)
            ids("duplicate", t.value, a.duplicates)
            ids(
                "unexpected" if report.strict else "unexpected (not counted: the topic lost old records)",
                t.value,
                a.unexpected,
            )
            ids("not archived", t.value, a.archive_missing)
        if report.archive is not None:
            arch = report.archive
            click.echo(f"archive {arch.topic}: {arch.records} records in {arch.objects} objects")
            for partition, runs in sorted(arch.gaps.items()):
                click.echo(f"  partition {partition}: offsets not archived {runs}")
            for partition, runs in sorted(arch.duplicates.items()):
                click.echo(f"  partition {partition}: offsets archived twice {runs}")
        if report.rollups is not None:
            check = report.rollups
            verdict = "exact" if check.clean else f"{len(check.mismatches)} mismatches"
            click.echo(
                f"rollups: {verdict} against the raw rows ({check.minutes} minutes; "
                f"top {check.top_n} pins checked over {check.pins_checked} kept)"
            )
            for line in check.mismatches[:show]:
                click.echo(f"  {line}")
        if report.dead_letters is not None:
            dl = report.dead_letters
            click.echo(
                f"dead letters: {dl.inputs} bad inputs of {dl.expected} expected, {dl.missing} missing, "
                f"{dl.pending} pending; {dl.resent} resent (a batch processed again; one per source offset counts)"
            )
            ids("without a dead letter", "input", dl.missing_ids)
        if report.pending:
            click.echo(
                f"pending: {report.pending} events and bad inputs are in Kafka beyond the workers' positions "
                "or the archiver's commit, not processed yet"
                + (
                    ": still there after --wait (are the workers and the archiver running?)"
                    if report.pending_counts
                    else " (not counted; --wait S waits for them)"
                )
            )
        verdict = "CLEAN" if report.clean else f"{report.discrepancies} discrepancies"
        click.echo(f"audit: {verdict}" + (f", {report.pending} pending" if report.pending and report.clean else ""))
    if not report.clean:
        ctx.exit(1)


def main() -> None:
    """Console entry point: errors pinapp raises on purpose print as one clear line."""
    try:
        cli(obj={})
    except PinappError as exc:
        click.echo(f"pinapp: error: {exc}", err=True)
        sys.exit(2)
