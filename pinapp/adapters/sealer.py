"""The pin rollup's sealer and the retention job: the leader worker's database chores.

Design notes: docs/architecture.md, "pinapp/adapters/sealer.py".
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any, Final

from asyncmy.errors import OperationalError

from pinapp.domain.ddl import ALL_TABLES, EXPERIMENT_USERS
from pinapp.domain.rollups import (
    HOUR,
    HOUR_TOP_K,
    MINUTE,
    MINUTE_TOP_K,
    SEAL_LATENESS,
    SEALED_THROUGH_SQL,
    WATERMARK_SQL,
    PinBucket,
    PinCount,
    floor_hour,
    floor_minute,
    merge_buckets,
    top_k,
)

__all__ = ["PinSealer", "Retention", "sealed_through", "watermark"]

logger = logging.getLogger(__name__)

#: Minutes sealed in one round at most (the next round goes on): a round stays short.
MINUTES_PER_ROUND: Final = 30
#: How far back each round checks the sealed minutes against the exact totals.
RECHECK: Final = timedelta(hours=3)

_MINUTE_PINS: Final = (
    "SELECT pin_id, CAST(SUM(r) AS SIGNED), COUNT(*) FROM ("
    + " UNION ALL ".join(
        f"SELECT pin_id, {1 if t == 'repins' else 0} AS r FROM {t} WHERE ts >= %(lo)s AND ts < %(hi)s"
        for t in ("repins", "comments", "likes")
    )
    + ") e GROUP BY pin_id"
)
_ENGAGEMENT_TYPES: Final = "('repin', 'comment', 'like')"


async def watermark(cur: Any, topic: str) -> datetime | None:
    """The stream's watermark (:data:`~pinapp.domain.rollups.WATERMARK_SQL`); ``None`` before any write."""
    await cur.execute(WATERMARK_SQL, {"topic": topic})
    row = await cur.fetchone()
    return row[0] if row else None


async def sealed_through(cur: Any) -> datetime | None:
    """The first minute the pin rollup has not sealed (``None``: nothing sealed yet)."""
    await cur.execute(SEALED_THROUGH_SQL)
    row = await cur.fetchone()
    return row[0] if row else None


class PinSealer:
    """Seals ``rollup_pins`` as the watermark moves; :meth:`run_once` is one round."""

    def __init__(self, pool: Any, topic: str) -> None:
        self._pool = pool
        self.topic = topic

    async def run_once(self) -> int:
        """Seal what the watermark allows, reseal what changed; returns the buckets (re)sealed."""
        async with self._pool.acquire() as conn:
            try:
                async with conn.cursor() as cur:
                    done = await self._round(cur, conn)
                await conn.commit()
            except OperationalError:
                conn.close()
                raise
        return done

    async def _round(self, cur: Any, conn: Any) -> int:
        mark = await watermark(cur, self.topic)
        if mark is None:
            return 0
        limit = floor_minute(mark - SEAL_LATENESS) - MINUTE  # the last minute that may be sealed
        frontier = await sealed_through(cur)
        todo: list[datetime] = []
        if frontier is None:
            await cur.execute("SELECT MIN(bucket) FROM rollup_types")
            first = (await cur.fetchone())[0]
            frontier = first
        if frontier is not None:
            await cur.execute(
                "SELECT DISTINCT bucket FROM rollup_types WHERE bucket >= %s AND bucket <= %s "
                f"AND event_type IN {_ENGAGEMENT_TYPES} ORDER BY bucket LIMIT %s",
                (frontier, limit, MINUTES_PER_ROUND),
            )
            todo = [r[0] for r in await cur.fetchall()]
        await conn.commit()
        hours: set[datetime] = set()
        for minute in todo:
            await self._seal_minute(cur, conn, minute)
            hours.add(floor_hour(minute))
        if frontier is not None and limit >= frontier:
            new_frontier = (todo[-1] + MINUTE) if len(todo) == MINUTES_PER_ROUND else limit + MINUTE
            await cur.execute("DELETE FROM rollup_pin_buckets WHERE grain = 'f'")
            await cur.execute(
                "INSERT INTO rollup_pin_buckets VALUES ('f', %s, 0, 0, 0, 0, 0, UTC_TIMESTAMP(6))", (new_frontier,)
            )
            await conn.commit()
            frontier = new_frontier
        resealed = await self._reseal_changed(cur, conn, frontier)
        hours |= {floor_hour(m) for m in resealed}
        # an hour is merged once all its minutes are sealed, and again when one of them changes
        if frontier is not None:
            await cur.execute(
                "SELECT DISTINCT bucket FROM rollup_pin_buckets WHERE grain = 'm' AND bucket >= %s AND bucket < %s",
                (floor_hour(frontier) - 2 * HOUR, floor_hour(frontier)),
            )
            minutes_hours = {floor_hour(r[0]) for r in await cur.fetchall()}
            await cur.execute(
                "SELECT bucket FROM rollup_pin_buckets WHERE grain = 'h' AND bucket >= %s",
                (floor_hour(frontier) - 2 * HOUR,),
            )
            sealed_hours = {r[0] for r in await cur.fetchall()}
            hours |= minutes_hours - sealed_hours
            for hour in sorted(h for h in hours if h + HOUR <= frontier):
                await self._seal_hour(cur, conn, hour)
        return len(todo) + len(resealed)

    async def _seal_minute(self, cur: Any, conn: Any, minute: datetime) -> None:
        await cur.execute(_MINUTE_PINS, {"lo": minute, "hi": minute + MINUTE})
        counts = [PinCount(pin, int(r), int(e)) for pin, r, e in await cur.fetchall()]
        await _replace(cur, "m", minute, top_k(counts, MINUTE_TOP_K))
        await conn.commit()

    async def _seal_hour(self, cur: Any, conn: Any, hour: datetime) -> None:
        await cur.execute(
            "SELECT bucket, repins_total, engagement_total, repins_bound, engagement_bound FROM rollup_pin_buckets "
            "WHERE grain = 'm' AND bucket >= %s AND bucket < %s",
            (hour, hour + HOUR),
        )
        heads = {b: (int(rt), int(et), int(rb), int(eb)) for b, rt, et, rb, eb in await cur.fetchall()}
        await cur.execute(
            "SELECT bucket, pin_id, repins, engagement FROM rollup_pins "
            "WHERE grain = 'm' AND bucket >= %s AND bucket < %s",
            (hour, hour + HOUR),
        )
        pins: dict[datetime, list[PinCount]] = {b: [] for b in heads}
        for bucket, pin_id, repins, engagement in await cur.fetchall():
            pins.setdefault(bucket, []).append(PinCount(pin_id, int(repins), int(engagement)))
        minutes = [PinBucket(tuple(pins.get(b, ())), rt, et, rb, eb) for b, (rt, et, rb, eb) in heads.items()]
        await _replace(cur, "h", hour, merge_buckets(minutes, HOUR_TOP_K))
        await conn.commit()

    async def _reseal_changed(self, cur: Any, conn: Any, frontier: datetime | None) -> list[datetime]:
        """Minutes marked dirty, and recent ones whose exact totals moved since their seal."""
        if frontier is None:
            return []
        await cur.execute("SELECT bucket, marks FROM rollup_dirty ORDER BY bucket LIMIT %s", (MINUTES_PER_ROUND,))
        dirty = [(b, int(n)) for b, n in await cur.fetchall()]
        await cur.execute(
            "SELECT t.bucket FROM (SELECT bucket, SUM(events) AS events FROM rollup_types "
            f"WHERE bucket >= %s AND bucket < %s AND event_type IN {_ENGAGEMENT_TYPES} GROUP BY bucket) t "
            "LEFT JOIN rollup_pin_buckets s ON s.grain = 'm' AND s.bucket = t.bucket "
            "WHERE s.engagement_total IS NULL OR s.engagement_total <> t.events ORDER BY t.bucket LIMIT %s",
            (floor_minute(frontier) - RECHECK, frontier, MINUTES_PER_ROUND),
        )
        changed = {r[0] for r in await cur.fetchall()}
        await conn.commit()
        todo = sorted(changed | {b for b, _ in dirty if b < frontier})
        for minute in todo:
            await self._seal_minute(cur, conn, minute)
        for bucket, marks in dirty:  # a mark made while sealing stays for the next round
            await cur.execute("DELETE FROM rollup_dirty WHERE bucket = %s AND marks = %s", (bucket, marks))
        await conn.commit()
        if todo:
            logger.info("pin rollup: sealed %d minutes again (late events), from %s", len(todo), todo[0])
        return todo


async def _replace(cur: Any, grain: str, bucket: datetime, sealed: PinBucket) -> None:
    """A bucket's rows replaced by ``sealed`` (within the caller's transaction)."""
    await cur.execute("DELETE FROM rollup_pins WHERE grain = %s AND bucket = %s", (grain, bucket))
    if sealed.pins:
        await cur.executemany(
            "INSERT INTO rollup_pins (grain, bucket, pin_id, repins, engagement) VALUES (%s, %s, %s, %s, %s)",
            [(grain, bucket, c.pin_id, c.repins, c.engagement) for c in sealed.pins],
        )
    await cur.execute(
        "INSERT INTO rollup_pin_buckets VALUES (%s, %s, %s, %s, %s, %s, %s, UTC_TIMESTAMP(6)) "
        "ON DUPLICATE KEY UPDATE repins_total = VALUES(repins_total), engagement_total = VALUES(engagement_total), "
        "repins_bound = VALUES(repins_bound), engagement_bound = VALUES(engagement_bound), "
        "pins_kept = VALUES(pins_kept), sealed_at = VALUES(sealed_at)",
        (
            grain,
            bucket,
            sealed.repins_total,
            sealed.engagement_total,
            sealed.repins_bound,
            sealed.engagement_bound,
            len(sealed.pins),
        ),
    )


class Retention:
    """Deletes raw rows past ``raw_days`` (0: never) and minute rollups past ``minute_days``, in
    bounded DELETEs (each its own transaction), at most ``budget_s`` a round."""

    def __init__(self, pool: Any, *, raw_days: int, minute_days: int, batch_rows: int, budget_s: float = 10.0) -> None:
        self._pool = pool
        self.raw_days = raw_days
        self.minute_days = minute_days
        self.batch_rows = batch_rows
        self.budget_s = budget_s

    def statements(self) -> list[tuple[str, timedelta]]:
        """(DELETE ... WHERE <older than %s> LIMIT n, age) for each table with a retention."""
        n = self.batch_rows
        out: list[tuple[str, timedelta]] = []
        if self.raw_days:
            raw = timedelta(days=self.raw_days)
            out += [(f"DELETE FROM `{spec.name}` WHERE ts < %s LIMIT {n}", raw) for spec in ALL_TABLES]
            out.append((f"DELETE FROM `{EXPERIMENT_USERS.name}` WHERE first_ts < %s LIMIT {n}", raw))
        minutes = timedelta(days=self.minute_days)
        out.append((f"DELETE FROM rollup_types WHERE bucket < %s LIMIT {n}", minutes))
        for table in (
            "rollup_categories",
            "rollup_countries",
            "rollup_experiments",
            "rollup_pins",
            "rollup_pin_buckets",
        ):
            out.append((f"DELETE FROM {table} WHERE grain = 'm' AND bucket < %s LIMIT {n}", minutes))
        return out

    async def run_once(self, now: datetime) -> int:
        """One round; returns the rows deleted."""
        deadline = time.monotonic() + self.budget_s
        deleted = 0
        async with self._pool.acquire() as conn:
            try:
                async with conn.cursor() as cur:
                    for sql, age in self.statements():
                        while time.monotonic() < deadline:
                            await cur.execute(sql, (now - age,))
                            await conn.commit()
                            deleted += cur.rowcount
                            if cur.rowcount < self.batch_rows:
                                break
            except OperationalError:
                conn.close()
                raise
        if deleted:
            logger.info("retention: deleted %d rows", deleted)
        return deleted
