"""Turning an enriched event into the row its SingleStore table takes.

Pure functions: no I/O, no faust. The column order is :data:`pinapp.domain.ddl.COLUMNS`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

from pinapp.domain.ddl import COLUMNS
from pinapp.domain.events import Event, EventType
from pinapp.domain.geo import GeoLocation
from pinapp.domain.table_values import Pin

__all__ = [
    "UNKNOWN_CATEGORY",
    "Row",
    "RowBuilder",
    "build_row",
    "exposure_rows",
    "ms_to_datetime",
    "pin_row",
    "sql_time",
]

UNKNOWN_CATEGORY: Final = "unknown"
_EPOCH: Final = datetime(1970, 1, 1)

Row = tuple[Any, ...]
#: What builds an event's row (:func:`build_row`; the fault tests inject one that raises).
RowBuilder = Callable[[Event, GeoLocation, "Pin | None", datetime], Row]


def ms_to_datetime(ms: int) -> datetime:
    """Epoch ms -> naive UTC datetime (the database stores UTC)."""
    return _EPOCH + timedelta(0, 0, 0, ms)  # (days, seconds, microseconds, milliseconds): positional is faster


_MINUTES: dict[int, str] = {}  # epoch minute -> "YYYY-MM-DD HH:MM:"
_SECONDS: Final = [f"{s:02d}" for s in range(60)]
_FRACTIONS: Final = [f".{ms:03d}000" for ms in range(1000)]


def sql_time(ms: int) -> str:
    """Epoch ms -> its naive UTC ``DATETIME(6)`` as text (``str`` of its datetime, microseconds always).

    Rows carry their event times so: built from a cached minute and two table lookups, it costs
    a fifth of making the datetime and formatting it, and it runs for every event written.
    """
    minute, rest = divmod(ms, 60_000)
    prefix = _MINUTES.get(minute)
    if prefix is None:
        if len(_MINUTES) >= 10_000:  # a replay of days: keep the cache small
            _MINUTES.clear()
        prefix = _MINUTES[minute] = str(_EPOCH + timedelta(minutes=minute))[:17]
    seconds, fraction = divmod(rest, 1000)
    return prefix + _SECONDS[seconds] + _FRACTIONS[fraction]


def _when_and_where(event: Event, geo: GeoLocation, ingested_at: datetime) -> Row:
    """The columns every table has after its ids: ts, ip, the location, ingested_at (build_row inlines them)."""
    return (
        sql_time(event.ts_ms),
        event.ip,
        geo.country,
        geo.region,
        geo.city,
        geo.latitude,
        geo.longitude,
        ingested_at,
    )


def build_row(event: Event, geo: GeoLocation, pin: Pin | None, ingested_at: datetime) -> Row:
    """The row for ``event`` in its type's table (its times as :func:`sql_time` text)."""
    # Written out, not _when_and_where(): this runs once per event, and the call costs 10% of it.
    common = (
        event.event_id,
        event.user_id,
        sql_time(event.ts_ms),
        event.ip,
        geo.country,
        geo.region,
        geo.city,
        geo.latitude,
        geo.longitude,
        ingested_at,
    )
    etype = event.event_type
    if etype is EventType.LOGIN:
        return common
    category = pin.category if pin is not None else UNKNOWN_CATEGORY
    head = (event.pin_id, category)
    if etype is EventType.PIN:
        assert pin is not None, "a pin event always carries its pin"
        return head + common + (pin.board_id, pin.title, sql_time(pin.created_at))
    if etype is EventType.REPIN:
        return head + common + (event.board_id,)
    if etype is EventType.COMMENT:
        return head + common + (event.text,)
    return head + common  # like


def pin_row(event: Event, geo: GeoLocation, pin: Pin, ingested_at: datetime) -> Row:
    """A ``pins`` row for a full pin learned from a non-pin event (e.g. a repin)."""
    row = (
        pin.pin_id,
        pin.category,
        event.event_id,
        pin.user_id,
        *_when_and_where(event, geo, ingested_at),
        pin.board_id,
        pin.title,
        sql_time(pin.created_at),
    )
    assert len(row) == len(COLUMNS[EventType.PIN])
    return row


def exposure_rows(event: Event, ingested_at: datetime) -> list[Row]:
    """``experiment_exposures`` rows: one per experiment the event carries (none without)."""
    if not event.experiments:
        return []
    ts = ms_to_datetime(event.ts_ms)
    kind = event.event_type.value
    return [
        (name, group, event.event_id, kind, event.user_id, ts, ingested_at) for name, group in event.experiments.items()
    ]
