"""``pinapp worker`` and ``pinapp archiver``: the faust workers (started by :mod:`pinapp.topology.startup`)."""

from __future__ import annotations

import click

from pinapp.cli.base import cli, settings_of

__all__ = ["archiver", "worker"]

_FAUST_ARGS = {"ignore_unknown_options": True, "allow_extra_args": True}


@cli.command(context_settings=_FAUST_ARGS)
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a faust worker (extra arguments go to `faust worker`)."""
    from pinapp.topology.startup import run_worker

    run_worker(settings_of(ctx), ctx.args)


@cli.command(context_settings=_FAUST_ARGS)
@click.pass_context
def archiver(ctx: click.Context) -> None:
    """Run the S3 archiver worker: its own consumer group (extra arguments go to `faust worker`)."""
    from pinapp.topology.startup import run_archiver

    run_archiver(settings_of(ctx), ctx.args)
