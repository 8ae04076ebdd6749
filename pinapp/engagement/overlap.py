"""Batch N+1 prepared while batch N commits; each batch acknowledged only once committed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from pinapp.engagement.ports import SourceRecord
from pinapp.errors import StateStoreError, StateStoreLost
from pinapp.telemetry import health, metrics

__all__ = ["OverlappedBatches", "Stages"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class Stages(Protocol):
    """What is overlapped (:class:`pinapp.engagement.stages.EngagementStages`): ``prepare`` returns
    a batch with its ``batch`` of records and its ``accepted`` events, which ``commit`` takes."""

    async def prepare(self, batch: Sequence[SourceRecord], *, in_flight: Mapping[str, tuple[int, int]]) -> Any: ...
    async def commit(self, prepared: Any) -> None: ...
    async def process_one_by_one(self, batch: Sequence[SourceRecord]) -> None: ...


class OverlappedBatches:
    """Batch N+1 is prepared while batch N commits; a batch is acknowledged once committed.

    The database works on one core while the worker's thread prepares the next batch on the
    other. Commits run one at a time, in the order batches were taken (the dedup marks and
    the pins rule assume it). A batch whose preparation or commit raises is processed again
    event by event (:meth:`Stages.process_one_by_one`) before anything after it
    commits. ``done`` is called with each batch once it is committed, before its ack.
    """

    def __init__(
        self,
        stages: Stages,
        ack: Callable[[Sequence[Any]], None],
        done: Callable[[Sequence[Any]], None] | None = None,
        *,
        state_retry_max_s: float = 300.0,
        data_dir: str = "worker.data_dir",
    ) -> None:
        self.stages = stages
        self._ack = ack
        self._done = done
        self._committing: asyncio.Future[None] | None = None
        self._committing_ids: dict[str, tuple[int, int]] = {}
        self._state_retry_max_s = state_retry_max_s
        self._data_dir = data_dir

    async def _store_retrying(self, what: Callable[[], Awaitable[_T]]) -> _T:
        """``what()``, tried again while the local table store fails (an outage: the partitions
        wait, ``/health`` says so); :class:`StateStoreLost` once it has failed for
        ``state_retry_max_s``. Trying again is safe: the database write is exactly once."""
        state = health.sink("state")
        started = time.monotonic()
        delay = 0.2
        while True:
            try:
                result = await what()
            except StateStoreError as exc:
                state.failed(exc)
                if time.monotonic() - started > self._state_retry_max_s:
                    raise StateStoreLost(
                        f"the local table store under {self._data_dir} failed for "
                        f"{self._state_retry_max_s:.0f} s ({exc}); free space or replace the disk, or delete the "
                        "folder (the tables are rebuilt from their changelogs), then restart the worker"
                    ) from exc
                logger.warning("%s; the batch waits and is tried again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if not state.ok:
                state.succeeded()
            return result

    async def submit(self, batch: Sequence[SourceRecord]) -> None:
        """Prepare ``batch`` (while the previous one commits), then start its commit."""
        metrics.EVENTS_IN.inc(len(batch))
        try:
            prepared = await self._store_retrying(lambda: self.stages.prepare(batch, in_flight=self._committing_ids))
        except StateStoreLost:
            raise
        except Exception:
            logger.exception("a batch of %d events failed; retrying its events one by one", len(batch))
            await self.drain()
            await self._store_retrying(lambda: self.stages.process_one_by_one(batch))
            self._committed(batch)
            return
        await self.drain()
        self._committing_ids = {a.event.event_id: (a.source.partition, a.source.offset) for a in prepared.accepted}
        self._committing = asyncio.ensure_future(self._commit(prepared))

    async def drain(self) -> None:
        """Wait for the batch being committed (its failure, isolated, included)."""
        committing, self._committing = self._committing, None
        if committing is not None:
            await committing
        self._committing_ids = {}

    async def cancel(self) -> None:
        """Stop: a batch still being committed is not acknowledged (it is fetched again)."""
        committing, self._committing = self._committing, None
        if committing is not None and not committing.done():
            committing.cancel()
            await asyncio.gather(committing, return_exceptions=True)

    async def _commit(self, prepared: Any) -> None:
        await self._store_retrying(lambda: self._commit_or_isolate(prepared))
        # Its ids are marked seen now, and the dedup table decides from here on: kept in
        # flight, they would make a resend look like a duplicate past the horizon.
        self._committing_ids = {}
        self._committed(prepared.batch)

    async def _commit_or_isolate(self, prepared: Any) -> None:
        try:
            await self.stages.commit(prepared)
        except StateStoreError:
            raise
        except Exception:
            logger.exception("a batch of %d events failed; retrying its events one by one", len(prepared.batch))
            await self.stages.process_one_by_one(prepared.batch)

    def _committed(self, batch: Sequence[SourceRecord]) -> None:
        if self._done is not None:
            self._done(batch)
        self._ack(batch)
