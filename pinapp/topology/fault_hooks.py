"""The faults pinapp's own tests inject (the ``[testing]`` settings), built once at start-up.

Each hook is wired in by the agent that owns the code it breaks, and only when its setting is
set: the production path holds no test-only check (the production profile refuses them all).
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from config import TestingSettings
from pinapp.domain.events import Event
from pinapp.domain.geo import GeoLocation
from pinapp.domain.rows import Row, RowBuilder, build_row
from pinapp.domain.table_values import Pin
from pinapp.errors import EnrichmentFault

__all__ = ["archive_crash", "processed_log", "row_builder"]

logger = logging.getLogger(__name__)


def row_builder(testing: TestingSettings) -> RowBuilder:
    """``build_row``, or with ``testing.poison_user_id`` one that raises for that user's events."""
    poison = testing.poison_user_id
    if poison is None:
        return build_row

    def poisoned(event: Event, geo: GeoLocation, pin: Pin | None, ingested_at: datetime) -> Row:
        if event.user_id == poison:
            raise EnrichmentFault(f"testing.poison_user_id={poison!r} (fault injection)")
        return build_row(event, geo, pin, ingested_at)

    return poisoned


def archive_crash(testing: TestingSettings) -> Callable[[str, int], None] | None:
    """With ``testing.archive_crash_at``: SIGKILL the archiver at that step of its Nth cut."""
    step_at, cut = testing.archive_crash_at, testing.archive_crash_on_cut
    if not step_at:
        return None

    def crash(step: str, number: int) -> None:
        if step == step_at and number == cut:
            logger.warning("testing.archive_crash_at=%s: SIGKILL on cut %d", step, number)
            os.kill(os.getpid(), signal.SIGKILL)

    return crash


def processed_log(path: Path | None) -> Callable[[Sequence[Any]], None] | None:
    """With ``testing.processed_log``: append each processed record's 'partition offset' there,
    before its batch is acked (a kill after it reprocesses, never skips)."""
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    trace = path.open("a", encoding="ascii")

    def log(batch: Sequence[Any]) -> None:
        trace.write("".join(f"{m.partition} {m.offset}\n" for m in batch))
        trace.flush()

    return log
