"""``pinapp stack up|down|status``: the local stack of Kafka, MariaDB and S3."""

from __future__ import annotations

import click
from tabulate import tabulate

from pinapp.cli.base import cli, settings_of

__all__ = ["stack"]


@cli.group()
def stack() -> None:
    """The local stack: Apache Kafka (KRaft), MariaDB, moto S3 on loopback."""


@stack.command("up")
@click.pass_context
def stack_up(ctx: click.Context) -> None:
    """Start every service that is not running (harmless when all are)."""
    from pinapp.tools.stack import Stack

    for line in Stack(settings_of(ctx)).up():
        click.echo(line)


@stack.command("down")
@click.pass_context
def stack_down(ctx: click.Context) -> None:
    """Stop the services this stack started (and nothing else)."""
    from pinapp.tools.stack import Stack

    for line in Stack(settings_of(ctx)).down():
        click.echo(line)


@stack.command("status")
@click.pass_context
def stack_status(ctx: click.Context) -> None:
    """Show each service, its port, pid and health. Exit 1 if any is not healthy."""
    from pinapp.tools.stack import Stack

    statuses = Stack(settings_of(ctx)).status()
    click.echo(
        tabulate(
            [(s.name, s.port, s.pid or "-", s.state, s.log) for s in statuses],
            headers=["service", "port", "pid", "state", "log"],
        )
    )
    if not all(s.healthy for s in statuses):
        ctx.exit(1)
