"""``pinapp singer`` and ``pinapp singer status``: the log shipper."""

from __future__ import annotations

import time

import click
from tabulate import tabulate

from pinapp.cli.base import cli, run_until_signalled, settings_of

__all__ = ["singer"]


@cli.group(invoke_without_command=True)
@click.pass_context
def singer(ctx: click.Context) -> None:
    """Ship application log files to Kafka, at least once (`pinapp singer`; `status` to inspect)."""
    if ctx.invoked_subcommand is None:
        from pinapp.singer.shipper import Singer

        shipper = Singer(settings_of(ctx))
        run_until_signalled(shipper.run)


@singer.command("status")
@click.pass_context
def singer_status(ctx: click.Context) -> None:
    """Per stream: files, bytes not yet shipped (from the watermarks, now) and the last heartbeat's counters."""
    from pinapp.singer.shipper import Singer
    from pinapp.singer.status import last_heartbeat

    settings = settings_of(ctx)
    doc = last_heartbeat(settings)
    if doc is not None:
        state = "stopped" if doc.get("stopped") else f"pid {doc['pid']}"
        click.echo(f"last heartbeat: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(doc['at']))} ({state})")
    else:
        click.echo("no heartbeat yet (singer has not run here)")
    last = {s["name"]: s for s in doc["streams"]} if doc is not None else {}
    rows = []
    for spec, now in zip(settings.singer.streams, Singer(settings).status()["streams"], strict=True):
        s = last.get(spec.name, {})
        rows.append(
            (
                spec.name,
                now["files"],
                now["bytes_behind"],
                s.get("lines_shipped", "-"),
                s.get("dead_lettered", "-"),
                s.get("errors", "-"),
                ", ".join(spec.paths),
            )
        )
    click.echo(
        tabulate(rows, headers=["stream", "files", "bytes behind", "lines shipped", "dead-lettered", "errors", "paths"])
    )
