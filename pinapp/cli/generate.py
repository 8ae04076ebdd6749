"""``pinapp generate``: synthetic engagement traffic into Kafka or a log file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from pinapp.cli.base import cli, settings_of
from pinapp.cli.experiments import defined_experiments

__all__ = ["generate"]


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

    settings = settings_of(ctx)
    if target == "file" and path is None:
        raise click.UsageError("--to file needs --file PATH")
    if trend_category is not None and trend_category not in CATEGORIES:
        raise click.BadParameter(f"one of: {', '.join(CATEGORIES)}", param_hint="--trend-category")
    if trend_category is not None and trend_after is None:
        raise click.UsageError("--trend-category needs --trend-after SECONDS")
    trend = Trend(trend_after, trend_share, trend_category) if trend_after is not None else None
    experiments = defined_experiments(settings)
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
