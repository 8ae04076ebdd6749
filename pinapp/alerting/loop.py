"""The alerter's loop: every ``alerts.interval_s``, evaluate the rules and send what changed.

Design notes: docs/architecture.md, "pinapp/alerting/loop.py".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from prometheus_client import start_http_server

from config import Settings
from pinapp.adapters.db import create_pool
from pinapp.adapters.queries import NAMED_QUERIES, freshness, query_params, run_query, srm_verdict
from pinapp.alerting.book import AlertBook, Notification
from pinapp.alerting.notifier import DeliveryFailed, DeliveryRejected, Notifier, Post
from pinapp.alerting.rules import Finding, Scrape, health_findings, parse_scrape, srm_findings, trend_findings
from pinapp.domain.experiments import load_experiments
from pinapp.errors import DatabaseError
from pinapp.telemetry import metrics

__all__ = ["Alerter", "run_alerter", "webhook"]

logger = logging.getLogger(__name__)

#: The trend queries the trend rule reads, by the kind of item they rank.
TREND_QUERIES = {"pin": "trending-pins", "category": "trending-categories", "country": "trending-countries"}


#: 4xx answers that mean "later", not "never".
_TRY_AGAIN = frozenset({408, 425, 429})


def webhook(session: aiohttp.ClientSession, url: str, *, timeout_s: float = 10.0) -> Post:
    """POSTs a JSON document to ``url``; a non-2xx answer, a refused connection or a timeout fails
    it (:class:`DeliveryRejected`, not tried again, for a 4xx that means "never")."""

    async def post(doc: dict[str, Any]) -> None:
        try:
            async with session.post(url, json=doc, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                if response.status >= 300:
                    said = f"HTTP {response.status}: {(await response.text())[:200]}"
                    if 400 <= response.status < 500 and response.status not in _TRY_AGAIN:
                        raise DeliveryRejected(said)
                    raise DeliveryFailed(said)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryFailed(repr(exc)) from exc

    return post


def _database_down(exc: DatabaseError) -> Finding:
    return Finding("health:database", "database", "critical", f"SingleStore cannot be queried: {exc}")


class Alerter:
    """One round of rules at a time (:meth:`round`); the sources are given, so tests can drive it."""

    def __init__(
        self,
        settings: Settings,
        *,
        pool: Any,
        session: aiohttp.ClientSession,
        notifier: Notifier,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.session = session
        self.notifier = notifier
        self.clock = clock
        self.book = AlertBook.load(settings.alerts.state_file)
        self._scrapes: dict[str, Scrape] = {}
        path = settings.experiments.definitions_file
        self.experiments = load_experiments(path) if path is not None else ()

    async def round(self) -> list[Notification]:
        """Evaluate every rule once; queue and return what changed."""
        findings = [*await self._trends(), *await self._experiments(), *await self._health()]
        notifications = self.book.update(findings, self.clock())
        for notification in notifications:
            self.notifier.send(notification)
        if notifications:
            self.book.save(self.settings.alerts.state_file)
        return notifications

    async def _trends(self) -> list[Finding]:
        minutes = self.settings.alerts.trend_minutes
        params = query_params(minutes, 20, self.settings.trends)
        found: list[Finding] = []
        try:
            edges = await freshness(self.pool, self.settings.kafka.events_topic, dialect=self.settings.db.dialect)
        except DatabaseError as exc:
            return [_database_down(exc)]
        sealed = edges["pins_sealed_until"]
        for kind, name in TREND_QUERIES.items():
            try:
                _, rows = await run_query(self.pool, NAMED_QUERIES[name].sql, params, dialect=self.settings.db.dialect)
            except DatabaseError as exc:
                return [_database_down(exc)]
            judged = (
                f"complete minutes to {sealed:%H:%M}" if kind == "pin" and sealed else "the current minute included"
            )
            found += trend_findings(
                kind,
                rows,
                self.settings.trends,
                minutes,
                top=self.settings.alerts.trend_top,
                firing=self.book.firing,
                judged=judged,
            )
        return found

    async def _experiments(self) -> list[Finding]:
        found: list[Finding] = []
        for experiment in self.experiments:
            if experiment.start.timestamp() > self.clock():
                continue
            try:
                verdict = await srm_verdict(
                    self.pool, experiment, self.settings.experiments, dialect=self.settings.db.dialect
                )
            except DatabaseError as exc:
                return [_database_down(exc)]
            found += srm_findings(experiment.name, verdict)
        return found

    async def _health(self) -> list[Finding]:
        token = self.settings.worker.web_token.get_secret_value()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        found: list[Finding] = []
        for url in self.settings.alerts.worker_urls:
            try:
                async with self.session.get(
                    f"{url.rstrip('/')}/metrics", headers=headers, timeout=aiohttp.ClientTimeout(total=10)
                ) as response:
                    if response.status != 200:
                        raise DeliveryFailed(f"HTTP {response.status}")
                    text = await response.text()
                try:
                    scrape = parse_scrape(text, self.clock())
                except ValueError as exc:  # a 200 that is not Prometheus text (a proxy's page, say)
                    raise DeliveryFailed(f"its answer is not Prometheus text ({exc})") from exc
            except (aiohttp.ClientError, TimeoutError, DeliveryFailed) as exc:
                found.append(
                    Finding(
                        f"health:worker-down:{url}",
                        "worker-down",
                        "critical",
                        f"{url}: the worker's /metrics does not answer ({exc})",
                    )
                )
                self._scrapes.pop(url, None)
                continue
            found += health_findings(url, scrape, self._scrapes.get(url), self.settings.alerts)
            self._scrapes[url] = scrape
        return found


async def run_alerter(settings: Settings, stop: asyncio.Event) -> None:
    """Rounds every ``alerts.interval_s`` until ``stop`` is set; what is queued is delivered first."""
    alerts = settings.alerts
    if alerts.metrics_port:
        start_http_server(alerts.metrics_port, addr=alerts.metrics_host)
    pool = await create_pool(settings.db, size=2, reader=True)
    async with aiohttp.ClientSession() as session:
        post = webhook(session, alerts.webhook_url) if alerts.webhook_url else None
        notifier = Notifier(post, retry_max_s=alerts.retry_max_s)
        alerter = Alerter(settings, pool=pool, session=session, notifier=notifier)
        logger.info(
            "alerter: every %.0f s, workers %s, webhook %s",
            alerts.interval_s,
            ", ".join(alerts.worker_urls),
            "set" if post else "none (log only)",
        )
        try:
            while not stop.is_set():
                try:
                    await alerter.round()
                except Exception:  # the alerter must outlive anything one round meets
                    metrics.ALERT_ROUND_ERRORS.inc()
                    logger.exception("alerter round failed; the next runs in %.0f s", alerts.interval_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), alerts.interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(notifier.drain(), alerts.retry_max_s)
        finally:
            await notifier.close()
            pool.close()
            await pool.wait_closed()
