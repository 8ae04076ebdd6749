"""The leader worker's database chores: sealing the pin rollup, and retention (pinapp.adapters.sealer).

faust runs an ``on_leader`` timer on one worker of the group at a time, so one sealer writes
``rollup_pins`` whatever the number of workers; a failed round is logged and tried again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pinapp.adapters.db import create_pool
from pinapp.adapters.sealer import PinSealer, Retention
from pinapp.topology.app import app, settings
from pinapp.topology.topics import events_topic

__all__ = ["apply_retention", "seal_pin_rollup"]

logger = logging.getLogger(__name__)
_pool: list[Any] = []  # one small pool for both chores, made on first use


async def _shared_pool() -> Any:
    if not _pool:
        _pool.append(await create_pool(settings.db, size=1))
    return _pool[0]


@app.timer(interval=settings.rollups.seal_interval_s, on_leader=True)
async def seal_pin_rollup() -> None:
    """Seal the minutes every partition is past (and reseal those late events changed)."""
    try:
        await PinSealer(await _shared_pool(), events_topic.get_topic_name()).run_once()
    except Exception:  # the next round tries again; the rollup's frontier says how far it got
        logger.exception("sealing the pin rollup failed; retrying next round")


@app.timer(interval=settings.rollups.retention_interval_s, on_leader=True)
async def apply_retention() -> None:
    """Delete raw rows and minute rollups past their retention, in bounded batches."""
    cfg = settings.rollups
    retention = Retention(
        await _shared_pool(),
        raw_days=cfg.raw_retention_days,
        minute_days=cfg.minute_retention_days,
        batch_rows=cfg.delete_batch_rows,
    )
    try:
        await retention.run_once(datetime.now(UTC).replace(tzinfo=None))
    except Exception:
        logger.exception("the retention job failed; retrying next round")
