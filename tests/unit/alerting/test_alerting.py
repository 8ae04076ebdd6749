"""The alerter's rules, its one-alert-per-condition book, the webhook's payload and retries, and the
Prometheus rules shipped for users who alert through Prometheus."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from config import AlertSettings, TrendSettings
from pinapp.alerting.book import AlertBook, payload
from pinapp.alerting.notifier import DeliveryFailed, DeliveryRejected, Notifier
from pinapp.alerting.rules import Finding, health_findings, parse_scrape, trend_findings
from pinapp.telemetry import metrics
from tests.paths import REPO

ALERTS = AlertSettings(lag_max_events=1000, dead_letter_rate_max=5, freshness_max_s=60)


def _finding(key: str) -> Finding:
    return Finding(key, "trend", "warning", f"{key} is up")


def test_one_alert_per_condition_then_one_resolution() -> None:
    book = AlertBook()
    assert [(n.status, n.finding.key) for n in book.update([_finding("a")], 10)] == [("firing", "a")]
    assert book.update([_finding("a")], 20) == [], "still holding: nothing new"
    both = book.update([_finding("a"), _finding("b")], 30)
    assert [(n.status, n.finding.key) for n in both] == [("firing", "b")]
    [resolved] = book.update([_finding("b")], 40)
    assert (resolved.status, resolved.finding.key, resolved.started_at, resolved.ended_at) == ("resolved", "a", 10, 40)
    assert [(n.status, n.finding.key) for n in book.update([_finding("a"), _finding("b")], 50)] == [("firing", "a")]


def test_the_payload_suits_slack_and_generic_receivers() -> None:
    [firing] = AlertBook().update([Finding("trend:pin:p1", "trend", "warning", "trending pin p1", 12.5)], 1_700_000_000)
    doc = payload(firing)
    assert doc["text"] == "[pinapp FIRING] trending pin p1"
    assert (doc["status"], doc["alert"], doc["rule"], doc["value"]) == ("firing", "trend:pin:p1", "trend", 12.5)
    assert doc["started_at"] == "2023-11-14T22:13:20Z" and doc["ended_at"] is None


def test_trend_rows_past_the_alert_score_are_findings() -> None:
    rows = [("p1", 80, 6, 24.0), ("p2", 26, 120, 1.2), ("p3", 10, 0, None)]
    [found] = trend_findings("pin", rows, TrendSettings(alert_score=8), 10)
    assert found.key == "trend:pin:p1"
    assert found.summary == "trending pin p1: score 24.0 (80 events in the last 10 min, 6 in the 60 min before)"


def test_at_most_top_new_trend_alerts_and_a_firing_one_stays_while_past_the_score() -> None:
    trends = TrendSettings(alert_score=8)
    rows = [(f"p{n}", 100, 0, 50.0 - n) for n in range(6)]
    assert [f.key for f in trend_findings("pin", rows, trends, 5, top=2)] == ["trend:pin:p0", "trend:pin:p1"]
    kept = trend_findings("pin", rows, trends, 5, top=2, firing={"trend:pin:p4"})
    assert [f.key for f in kept] == ["trend:pin:p0", "trend:pin:p1", "trend:pin:p4"], "p4 slipped but still trends"
    fallen = trend_findings("pin", [("p4", 10, 9, 1.0)], trends, 5, top=2, firing={"trend:pin:p4"})
    assert fallen == [], "below the score it resolves"


EXPOSITION = """\
# TYPE pinapp_consumer_lag gauge
pinapp_consumer_lag{{topic="events",partition="0"}} {lag0}
pinapp_consumer_lag{{topic="events",partition="1"}} 10
# TYPE pinapp_dead_lettered counter
pinapp_dead_lettered_total{{kind="schema"}} {dead}
# TYPE pinapp_commit_holes counter
pinapp_commit_holes_total{{topic="events",partition="0"}} {holes}
# TYPE pinapp_sink_failing gauge
pinapp_sink_failing{{sink="singlestore"}} {failing}
# TYPE pinapp_sink_last_success_timestamp_seconds gauge
pinapp_sink_last_success_timestamp_seconds{{sink="singlestore"}} {last}
"""


def _scrape(at: float, *, lag0: int = 0, dead: int = 0, holes: int = 0, failing: int = 0, last: float = 0) -> object:
    return parse_scrape(EXPOSITION.format(lag0=lag0, dead=dead, holes=holes, failing=failing, last=last or at), at)


def test_a_healthy_worker_has_no_findings() -> None:
    assert health_findings("w", _scrape(100, dead=3), _scrape(90, dead=2), ALERTS) == []  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("now", "rule"),
    [
        ({"lag0": 5000}, "lag"),
        ({"dead": 102}, "dead-letters"),  # 100 in 10 s: 10 a second
        ({"holes": 1}, "commit-guards"),
        ({"failing": 1}, "sink"),
        ({"lag0": 5, "last": 30}, "freshness"),  # 70 s without a write while 15 events wait
    ],
)
def test_each_health_rule(now: dict[str, int], rule: str) -> None:
    found = health_findings("w", _scrape(100, **now), _scrape(90, dead=2), ALERTS)  # type: ignore[arg-type]
    assert [f.rule for f in found] == [rule]
    assert found[0].key.startswith("health:") and found[0].key.endswith(":w")


async def test_a_failing_receiver_gets_every_notification_once_in_order() -> None:
    received: list[tuple[str, str]] = []
    failures = [3]

    async def post(doc: dict[str, object]) -> None:
        if failures[0]:
            failures[0] -= 1
            raise DeliveryFailed("HTTP 503")
        received.append((str(doc["status"]), str(doc["alert"])))

    notifier = Notifier(post, retry_max_s=0.05)
    book = AlertBook()
    for n in [*book.update([_finding("a")], 1), *book.update([], 2)]:
        notifier.send(n)
    await asyncio.wait_for(notifier.drain(), 30)
    await notifier.close()
    assert received == [("firing", "a"), ("resolved", "a")]


async def test_a_notification_refused_for_good_is_counted_and_the_next_one_sent() -> None:
    """A 410 (a revoked hook) is not retried forever, blocking every later alert behind it."""
    received: list[str] = []
    tries: list[str] = []

    async def post(doc: dict[str, object]) -> None:
        tries.append(str(doc["alert"]))
        if doc["alert"] == "gone":
            raise DeliveryRejected("HTTP 410: gone")
        received.append(str(doc["alert"]))

    before = metrics.ALERT_NOTIFICATIONS.labels(status="firing", outcome="rejected")._value.get()
    notifier = Notifier(post, retry_max_s=0.05)
    for n in AlertBook().update([_finding("gone"), _finding("next")], 1):
        notifier.send(n)
    await asyncio.wait_for(notifier.drain(), 30)
    await notifier.close()
    assert received == ["next"] and tries == ["gone", "next"]
    assert metrics.ALERT_NOTIFICATIONS.labels(status="firing", outcome="rejected")._value.get() == before + 1


def test_a_restarted_alerter_resolves_what_cleared_and_does_not_repeat_what_holds(tmp_path: Path) -> None:
    state = tmp_path / "alerter-state.json"
    book = AlertBook.load(state)
    assert [n.status for n in book.update([_finding("holds"), _finding("clears")], 100)] == ["firing", "firing"]
    book.save(state)

    restarted = AlertBook.load(state)
    [resolved] = restarted.update([_finding("holds")], 200)
    assert (resolved.status, resolved.finding.key, resolved.started_at) == ("resolved", "clears", 100)
    assert list(restarted.firing) == ["holds"]


def test_an_unreadable_state_file_starts_with_nothing_firing(tmp_path: Path) -> None:
    state = tmp_path / "alerter-state.json"
    state.write_text("{not json")
    assert AlertBook.load(state).firing == {}


def test_the_prometheus_rules_name_only_metrics_pinapp_exports() -> None:
    doc = yaml.safe_load((REPO / "deploy" / "prometheus" / "pinapp-alerts.yml").read_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert {r["alert"] for r in rules} >= {
        "PinappConsumerLag",
        "PinappDeadLetters",
        "PinappSinkFailing",
        "PinappCommitGuardsFired",
        "PinappNotFresh",
        "PinappWorkerDown",
    }
    metrics.SINK_FAILING.labels(sink="singlestore")  # so the labelled families show samples
    exported = set(re.findall(r"^# TYPE (\w+)", generate_latest().decode(), re.M))
    exported |= {f"{name}_total" for name in exported}
    for rule in rules:
        named = set(re.findall(r"\bpinapp_\w+", rule["expr"]))
        assert named <= exported, (rule["alert"], named - exported)
        assert rule["labels"]["severity"] in {"warning", "critical"} and rule["annotations"]["summary"]
