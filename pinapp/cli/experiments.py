"""``pinapp experiments``: each experiment's live allocation and sample-ratio test."""

from __future__ import annotations

import asyncio

import click
from tabulate import tabulate

from config import Settings
from pinapp.cli.base import cli, settings_of
from pinapp.domain.experiments import Experiment, SrmVerdict, load_experiments

__all__ = ["defined_experiments", "experiments"]


def defined_experiments(settings: Settings) -> tuple[Experiment, ...]:
    path = settings.experiments.definitions_file
    return load_experiments(path) if path is not None else ()


@cli.command()
@click.pass_context
def experiments(ctx: click.Context) -> None:
    """The experiments (experiments.definitions_file) with their live allocation and sample-ratio test."""
    settings = settings_of(ctx)
    defined = defined_experiments(settings)
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
