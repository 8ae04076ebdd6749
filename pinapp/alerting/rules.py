"""The alert rules: what is wrong right now, as findings, from the trend queries and the workers' metrics.

Pure functions: the loop (:mod:`.loop`) fetches the inputs, these decide. A finding's ``key``
names its condition (``trend:pin:p42``, ``health:lag:<worker>``); the same condition keeps the
same key while it lasts, which is what makes one alert per condition (:class:`.book.AlertBook`).

Design notes: docs/architecture.md, "pinapp/alerting/rules.py".
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from config import AlertSettings, TrendSettings
from pinapp.domain.experiments import SrmVerdict

__all__ = ["Finding", "Scrape", "health_findings", "parse_scrape", "srm_findings", "trend_findings"]


@dataclass(frozen=True)
class Finding:
    """One condition that holds now."""

    key: str  # stable while the condition lasts
    rule: str  # trend, srm, lag, freshness, dead-letters, commit-guards, sink, worker-down, database
    severity: str  # warning or critical
    summary: str  # one line for a person
    value: float | None = None


@dataclass(frozen=True)
class Scrape:
    """One read of a worker's /metrics: each sample summed over its labels, at ``at`` (seconds)."""

    at: float
    totals: Mapping[str, float]
    by_label: Mapping[tuple[str, str], float]  # (sample name, one label value) -> value, e.g. the sink's


def parse_scrape(text: str, at: float) -> Scrape:
    """The samples of a Prometheus exposition (prometheus_client's own parser)."""
    totals: dict[str, float] = {}
    by_label: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
            for value in sample.labels.values():
                by_label[(sample.name, value)] = by_label.get((sample.name, value), 0.0) + sample.value
    return Scrape(at, totals, by_label)


def trend_findings(
    kind: str,
    rows: Iterable[Sequence[Any]],
    trends: TrendSettings,
    minutes: int,
    *,
    top: int = 3,
    firing: Collection[str] = (),
    judged: str = "",
) -> list[Finding]:
    """Trending ``kind`` (pin, category, country) past ``trends.alert_score``: the ``top`` rows of
    its trend query (best first), and any row still past it whose alert is ``firing`` already, so
    an item that slips down the ranking stays one alert until its score falls. ``judged`` says
    which minutes the score saw (complete ones only, or the current one too)."""
    found: list[Finding] = []
    new = 0
    for item, recent, baseline, score in rows:
        key = f"trend:{kind}:{item}"
        if score is None or float(score) < trends.alert_score:
            continue
        if key not in firing:
            if new >= top:
                continue
            new += 1
        before = minutes * trends.baseline_factor
        found.append(
            Finding(
                key=key,
                rule="trend",
                severity="warning",
                summary=(
                    f"trending {kind} {item}: score {float(score):.1f} ({recent} events in the last {minutes} min, "
                    f"{baseline} in the {before} min before{'; ' + judged if judged else ''})"
                ),
                value=float(score),
            )
        )
    return found


def srm_findings(experiment: str, verdict: SrmVerdict) -> list[Finding]:
    """A sample ratio mismatch of ``experiment`` (its allocation is broken: its metrics are suspect)."""
    if not verdict.mismatch:
        return []
    return [
        Finding(f"srm:{experiment}", "srm", "critical", f"experiment {experiment}: {verdict.reason}", verdict.p_value)
    ]


def health_findings(worker: str, now: Scrape, before: Scrape | None, alerts: AlertSettings) -> list[Finding]:
    """A worker's health from its metrics now and at the previous scrape."""
    found = []
    lag = now.totals.get("pinapp_consumer_lag", 0.0)
    if lag > alerts.lag_max_events:
        found.append(
            Finding(
                f"health:lag:{worker}", "lag", "warning", f"{worker}: {lag:,.0f} events in Kafka not yet written", lag
            )
        )
    for (name, sink), failing in now.by_label.items():
        if name == "pinapp_sink_failing" and failing >= 1:
            found.append(
                Finding(
                    f"health:sink:{sink}:{worker}",
                    "sink",
                    "critical",
                    f"{worker}: the {sink} sink is failing and retrying",
                )
            )
        if (
            name == "pinapp_sink_last_success_timestamp_seconds"
            and lag > 0
            and now.at - failing > alerts.freshness_max_s
        ):
            found.append(
                Finding(
                    f"health:freshness:{worker}",
                    "freshness",
                    "critical",
                    f"{worker}: nothing written to {sink} for {now.at - failing:.0f} s while {lag:,.0f} events wait",
                    now.at - failing,
                )
            )
    if before is not None and now.at > before.at:
        seconds = now.at - before.at
        dead = now.totals.get("pinapp_dead_lettered_total", 0.0) - before.totals.get("pinapp_dead_lettered_total", 0.0)
        if dead / seconds > alerts.dead_letter_rate_max:
            found.append(
                Finding(
                    f"health:dead-letters:{worker}",
                    "dead-letters",
                    "warning",
                    f"{worker}: {dead / seconds:.1f} inputs a second dead-lettered",
                    dead / seconds,
                )
            )
        fired = sum(
            now.totals.get(name, 0.0) - before.totals.get(name, 0.0)
            for name in ("pinapp_commit_holes_total", "pinapp_fetch_gaps_total")
        )
        if fired > 0:
            found.append(
                Finding(
                    f"health:commit-guards:{worker}",
                    "commit-guards",
                    "warning",
                    f"{worker}: the commit guards fired {fired:.0f} times (records faust dropped, fetched again)",
                    fired,
                )
            )
    return found
