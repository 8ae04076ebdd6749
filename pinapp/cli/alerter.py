"""``pinapp alerter``: the alert rules' loop."""

from __future__ import annotations

import click

from pinapp.cli.base import cli, run_until_signalled, settings_of

__all__ = ["alerter"]


@cli.command()
@click.pass_context
def alerter(ctx: click.Context) -> None:
    """Evaluate the alert rules every alerts.interval_s; send alerts and resolutions to alerts.webhook_url."""
    from pinapp.alerting.loop import run_alerter

    settings = settings_of(ctx)
    run_until_signalled(lambda stop: run_alerter(settings, stop))
