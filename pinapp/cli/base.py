"""The root of the ``pinapp`` command and what every command uses: its settings, a clean stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from config import Settings, load_settings

__all__ = ["cli", "run_until_signalled", "settings_of"]

T = TypeVar("T")


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


def settings_of(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj["settings"]
    return settings


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """Run ``main(stop)`` in a new event loop; SIGINT and SIGTERM set ``stop``."""

    async def run() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await main(stop)

    return asyncio.run(run())
