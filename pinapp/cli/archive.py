"""``pinapp archive ls|verify|replay``: the S3 archive."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

import click
from tabulate import tabulate

from config import Settings
from pinapp.cli.base import cli, settings_of

__all__ = ["archive"]


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

    settings = settings_of(ctx)

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

    settings = settings_of(ctx)
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
@click.option(
    "--rollups-lost",
    is_flag=True,
    help="Days past rollups.raw_retention_days have lost their rollups too (a restored database): count them again.",
)
@click.pass_context
def archive_replay(
    ctx: click.Context, topic: str | None, first: Any, last: Any, to_topic: str | None, rollups_lost: bool
) -> None:
    """Produce archived events back into Kafka (a backfill); the topology dedups them by row."""
    from pinapp.archive.replay import retention_conflict

    settings = settings_of(ctx)
    if last < first:
        raise click.BadParameter("--to is before --from", param_hint="--to")
    conflict = retention_conflict(
        first.date(), settings.rollups.raw_retention_days, datetime.now(UTC).replace(tzinfo=None)
    )
    if conflict and not rollups_lost:
        raise click.UsageError(conflict)
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
