"""``pinapp audit``: reconcile what was sent with the tables, the rollups and the archive."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from pinapp.cli.base import cli, settings_of

__all__ = ["audit"]


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

    report = asyncio.run(run_audit(settings_of(ctx), truth=truth, archive=not no_archive, wait_s=wait_s))
    if as_json:
        click.echo(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        for line in report.render(show):
            click.echo(line)
    if not report.clean:
        ctx.exit(1)
