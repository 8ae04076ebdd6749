"""Delivering alerts to the webhook: in order, each until the receiver takes it or refuses it for good.

Design notes: docs/architecture.md, "pinapp/alerting/notifier.py".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception_type, retry_if_not_exception_type, wait_random_exponential

from pinapp.alerting.book import Notification, payload
from pinapp.errors import PinappError
from pinapp.telemetry import metrics

__all__ = ["DeliveryFailed", "DeliveryRejected", "Notifier"]

logger = logging.getLogger(__name__)

#: Posts one JSON document; raises :class:`DeliveryFailed` when the receiver did not take it.
Post = Callable[[dict[str, Any]], Awaitable[None]]


class DeliveryFailed(PinappError):
    """The webhook did not take a notification (status, connection or timeout): tried again."""


class DeliveryRejected(DeliveryFailed):
    """The webhook refused a notification for good (a 4xx other than 408 and 429): check
    ``alerts.webhook_url`` and the receiver's logs; the notification is not tried again."""


class Notifier:
    """Sends notifications through ``post``, in order, retrying each until it is taken."""

    def __init__(self, post: Post | None, *, retry_max_s: float) -> None:
        self._post = post
        self._retry_max_s = retry_max_s
        self._queue: asyncio.Queue[Notification] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def send(self, notification: Notification) -> None:
        status = notification.status
        metrics.ALERTS_FIRING.labels(rule=notification.finding.rule).inc(1 if status == "firing" else -1)
        level = logging.WARNING if status == "firing" else logging.INFO
        logger.log(level, "alert %s: %s", status, notification.finding.summary)
        if self._post is not None:
            self._queue.put_nowait(notification)
            if self._task is None:
                self._task = asyncio.ensure_future(self._deliver_all())

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def drain(self) -> None:
        """Wait until every queued notification is delivered."""
        await self._queue.join()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _deliver_all(self) -> None:
        while True:
            notification = await self._queue.get()
            try:
                await self._deliver(notification)
            finally:
                self._queue.task_done()

    async def _deliver(self, notification: Notification) -> None:
        assert self._post is not None
        doc = payload(notification)

        def retrying(state: Any) -> None:
            metrics.ALERT_NOTIFICATIONS.labels(status=notification.status, outcome="failed").inc()
            logger.warning(
                "webhook refused %s %s (try %d): %s; retrying",
                notification.status,
                notification.finding.key,
                state.attempt_number,
                state.outcome.exception(),
            )

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(DeliveryFailed) & retry_if_not_exception_type(DeliveryRejected),
                wait=wait_random_exponential(multiplier=0.5, max=self._retry_max_s),
                before_sleep=retrying,
            ):
                with attempt:
                    await self._post(doc)
        except DeliveryRejected as exc:
            metrics.ALERT_NOTIFICATIONS.labels(status=notification.status, outcome="rejected").inc()
            logger.error(
                "webhook refused %s %s for good: %s; not sent (check alerts.webhook_url and the receiver)",
                notification.status,
                notification.finding.key,
                exc,
            )
            return
        metrics.ALERT_NOTIFICATIONS.labels(status=notification.status, outcome="sent").inc()
