"""The statements of one engagement write: rows, what they inserted, rollup increments, positions.

Design notes: docs/architecture.md, "pinapp/adapters/rollup_sql.py".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Any, Final, TypeVar

from pinapp.adapters.sql_values import insert_statements
from pinapp.domain.ddl import (
    EXPERIMENT_USERS,
    EXPOSURES,
    OFFSETS,
    ROLLUP_CATEGORIES,
    ROLLUP_COUNTRIES,
    ROLLUP_DIRTY,
    ROLLUP_EXPERIMENTS,
    ROLLUP_TYPES,
    TABLES,
    TableSpec,
)
from pinapp.domain.events import EventType
from pinapp.domain.positions import Claim, PartitionWrite, Stored, WrittenEvent
from pinapp.domain.rollups import ANY_TYPE, MINUTE, SEAL_LATENESS, Counts, rows_counts
from pinapp.domain.rows import ms_to_datetime

__all__ = [
    "Statements",
    "StoredKeys",
    "count",
    "move_positions",
    "read_positions",
    "write_rows",
]

Row = tuple[Any, ...]
_PIN_ENGAGEMENT: Final = frozenset(("repin", "comment", "like"))  # what rollup_pins counts
_EPOCH: Final = datetime(1970, 1, 1)
#: An event this much older than its partition's processed event time is in a minute that may be
#: sealed (its minute ends SEAL_LATENESS before that time; the minute's start is up to 60 s earlier).
_SEALABLE_MS: Final = int((MINUTE + SEAL_LATENESS).total_seconds() * 1000)


@dataclass(frozen=True, slots=True)
class Insert:
    """One table's insert: as a template (``executemany``) and as the text around pre-encoded
    rows (:mod:`pinapp.adapters.sql_values`)."""

    prefix: str  # INSERT INTO ... (cols) VALUES
    suffix: str  # ON DUPLICATE KEY UPDATE ...
    marks: str  # (%s, ...)

    @property
    def template(self) -> str:
        return f"{self.prefix} {self.marks} {self.suffix}"


def insert_sql(spec: TableSpec, *, update: str | None = None, own_pin_wins: bool = False) -> Insert:
    cols = ", ".join(f"`{c}`" for c in spec.column_names)
    marks = ", ".join(["%s"] * len(spec.column_names))
    # A no-op update of a non-key column makes a replayed row a no-op on both SingleStore
    # and MySQL (columnstore may not update unique-key columns), and keeps the first
    # ingested_at, which freshness measurements and the count of inserted rows rely on.
    update = update or "`ingested_at` = `ingested_at`"
    if own_pin_wins:
        # `pins` has one row per pin, which a repin carrying its pin may have written first
        # (a "learned" row, under the repin's event_id) when the pin's own event is late: after
        # a rebalance replays it, say. The pin's own event then replaces it, whatever the order.
        keys = set(spec.primary_key) | {"ingested_at"}
        update = ", ".join(f"`{c}` = VALUES(`{c}`)" for c in spec.column_names if c not in keys)
    return Insert(f"INSERT INTO `{spec.name}` ({cols}) VALUES", f"ON DUPLICATE KEY UPDATE {update}", f"({marks})")


def _adding(spec: TableSpec, *counters: str) -> Insert:
    return insert_sql(spec, update=", ".join(f"`{c}` = `{c}` + VALUES(`{c}`)" for c in counters))


_INSERTS: Final = {t: insert_sql(spec, own_pin_wins=t is EventType.PIN) for t, spec in TABLES.items()}
_LEARNED_PIN_INSERT: Final = insert_sql(TABLES[EventType.PIN])  # never replaces a pin row
_EXPOSURE_INSERT: Final = insert_sql(EXPOSURES)
_USERS_INSERT: Final = insert_sql(EXPERIMENT_USERS)
_TYPES_ADD: Final = _adding(ROLLUP_TYPES, "events")
_CATEGORIES_ADD: Final = _adding(ROLLUP_CATEGORIES, "events")
_COUNTRIES_ADD: Final = _adding(ROLLUP_COUNTRIES, "events")
_EXPERIMENTS_ADD: Final = _adding(ROLLUP_EXPERIMENTS, "events", "new_users")
_DIRTY_ADD: Final = _adding(ROLLUP_DIRTY, "marks")
_POSITIONS_MOVE: Final = insert_sql(
    OFFSETS,
    update="`next_offset` = GREATEST(`next_offset`, VALUES(`next_offset`)), `owner` = VALUES(`owner`), "
    "`generation` = VALUES(`generation`), "
    "`event_ts` = GREATEST(COALESCE(`event_ts`, VALUES(`event_ts`)), COALESCE(VALUES(`event_ts`), `event_ts`)), "
    "`updated_at` = VALUES(`updated_at`)",
)


class StoredKeys:
    """A bounded set of the keys stored lately (``experiment_users``'), so they are not sent again.

    Two generations of sets: when the newer holds half of ``maxsize``, the older is dropped. A key
    forgotten is sent again and found stored (the read-back), so this only saves work; and it
    costs a set lookup and a bulk update a batch, where an LRU would be a Python call a key.
    """

    __slots__ = ("_half", "_newer", "_older")

    def __init__(self, maxsize: int) -> None:
        self._half = max(1, maxsize // 2)
        self._newer: set[tuple[Any, ...]] = set()
        self._older: set[tuple[Any, ...]] = set()

    def __contains__(self, key: object) -> bool:
        return key in self._newer or key in self._older

    def __len__(self) -> int:
        return len(self._newer | self._older)

    def update(self, keys: Iterable[tuple[Any, ...]]) -> None:
        self._newer.update(keys)
        if len(self._newer) >= self._half:
            self._older, self._newer = self._newer, set()

    def clear(self) -> None:
        self._newer.clear()
        self._older.clear()


async def execute(cur: Any, encode: bool, insert: Insert, rows: Sequence[Row]) -> int:
    """Insert ``rows``; returns what the server reported (see the module's docstring)."""
    if not rows:
        return 0
    affected = 0
    if encode:  # the servers' default: rows encoded here
        for statement in insert_statements(insert.prefix, rows, insert.suffix):
            await cur.execute(statement)
            affected += cur.rowcount
    else:
        await cur.executemany(insert.template, rows)
        affected += cur.rowcount
    return affected


#: A round trip's statements stay under this many bytes (servers take 64 MiB packets by default).
_ROUND_TRIP_BYTES: Final = 8 * 1024 * 1024


class Statements:
    """Inserts sent together: one round trip, a multi-statement query (which asyncmy's connections
    allow, as PyMySQL's do), instead of one each; each insert's affected rows come from its own
    result. The server runs them in order and stops at the first that fails, whose error is raised.
    ``together=False`` (``db.multi_statements``): one statement a round trip, for a server or proxy
    that refuses multi-statement queries.
    """

    __slots__ = ("_encode", "_queued", "_together")

    def __init__(self, encode: bool, *, together: bool = True) -> None:
        self._encode = encode
        self._together = together
        self._queued: list[tuple[Insert, Sequence[Row]]] = []

    @property
    def encode(self) -> bool:
        """Whether rows are encoded here (:func:`pinapp.adapters.sql_values.backslash_escapes`)."""
        return self._encode

    def add(self, insert: Insert, rows: Sequence[Row]) -> int:
        """Queue ``rows``' insert; returns its index in what :meth:`send` returns."""
        self._queued.append((insert, rows))
        return len(self._queued) - 1

    async def send(self, cur: Any) -> list[int]:
        """Run the queued inserts, in order; returns each one's affected rows."""
        queued, self._queued = self._queued, []
        affected = [0] * len(queued)
        if not self._encode:  # executemany formats each insert itself
            for i, (insert, rows) in enumerate(queued):
                affected[i] = await execute(cur, False, insert, rows)
            return affected
        trip: list[tuple[int, bytes]] = []
        size = 0
        for i, (insert, rows) in enumerate(queued):
            for statement in insert_statements(insert.prefix, rows, insert.suffix) if rows else ():
                if trip and (not self._together or size + len(statement) > _ROUND_TRIP_BYTES):
                    await _round_trip(cur, trip, affected)
                    trip, size = [], 0
                trip.append((i, statement))
                size += len(statement) + 2
        if trip:
            await _round_trip(cur, trip, affected)
        return affected


async def _round_trip(cur: Any, trip: Sequence[tuple[int, bytes]], affected: list[int]) -> None:
    await cur.execute(b";\n".join(statement for _, statement in trip))
    counts = [cur.rowcount]
    while await cur.nextset():
        counts.append(cur.rowcount)
    if len(counts) != len(trip):
        raise RuntimeError(f"{len(trip)} statements sent together, {len(counts)} results back")
    for (i, _), n in zip(trip, counts, strict=True):
        affected[i] += n


async def read_positions(cur: Any, topic: str, partitions: Iterable[int] | None, *, lock: bool) -> dict[int, Stored]:
    """Partitions' rows of ``stream_offsets`` (``lock``: ``FOR UPDATE``, until the transaction ends)."""
    sql = "SELECT part, next_offset, owner, generation, event_ts FROM stream_offsets WHERE topic = %s"
    params: list[Any] = [topic]
    if partitions is not None:
        parts = sorted(set(partitions))
        if not parts:
            return {}
        sql += f" AND part IN ({', '.join(['%s'] * len(parts))})"
        params += parts
    await cur.execute(sql + (" FOR UPDATE" if lock else ""), params)
    return {int(p): Stored(int(n), owner, int(g), ts) for p, n, owner, g, ts in await cur.fetchall()}


def move_positions(statements: Statements, topic: str, writes: Sequence[PartitionWrite], claim: Claim) -> None:
    """Queue the partitions' moves past ``writes``."""
    now = datetime.now()
    rows = [
        (topic, w.partition, w.next_offset, claim.owner, claim.generation, w.event_ts, now)
        for w in sorted(writes, key=lambda w: w.partition)
    ]
    statements.add(_POSITIONS_MOVE, rows)


Inserted = dict[EventType, list[tuple[int, WrittenEvent]]]  # by type: the (partition, event)s whose own row is new


async def write_rows(
    cur: Any, together: Statements, fresh: Sequence[tuple[int, WrittenEvent]]
) -> tuple[Inserted, list[tuple[int, Row]]]:
    """Insert the events' rows, their learned pin rows and their exposures, in one round trip;
    returns the events whose own row is new, by type, and the exposures inserted (with their
    partition). ``together``: an empty :class:`Statements`.

    A pin's own event is new unless its pin row holds that very event: a row learned from a repin
    (under the repin's event_id) is no pin event, and the pin's own event replaces it. The learned
    rows go after the pins' own, and never replace a row.
    """
    by_type: Inserted = defaultdict(list)
    for item in fresh:
        by_type[item[1].event_type].append(item)
    pins = by_type.get(EventType.PIN)
    existing = await _pin_events(cur, [e.row[0] for _, e in pins]) if pins else {}
    sent = {t: together.add(_INSERTS[t], [e.row for _, e in items]) for t, items in by_type.items()}
    together.add(_LEARNED_PIN_INSERT, [e.learned_pin for _, e in fresh if e.learned_pin is not None])
    exposures = [(p, row) for p, e in fresh for row in e.exposures]
    exposed = together.add(_EXPOSURE_INSERT, [row for _, row in exposures])
    affected = await together.send(cur)
    inserted: Inserted = {}
    for event_type, items in by_type.items():
        if event_type is EventType.PIN:
            inserted[event_type] = [(p, e) for p, e in items if existing.get(e.row[0]) != e.row[2]]
        else:
            inserted[event_type] = await _inserted(cur, TABLES[event_type], items, affected[sent[event_type]], _ROW)
    return inserted, await _inserted(cur, EXPOSURES, exposures, affected[exposed], _ITSELF)


async def _pin_events(cur: Any, pin_ids: Sequence[str]) -> dict[str, str]:
    ids = sorted(set(pin_ids))
    await cur.execute(f"SELECT pin_id, event_id FROM pins WHERE pin_id IN ({', '.join(['%s'] * len(ids))})", ids)
    return {pin_id: event_id for pin_id, event_id in await cur.fetchall()}


def _key_of(spec: TableSpec) -> Any:
    at = [spec.column_names.index(c) for c in spec.primary_key]
    return lambda row: tuple(row[i] for i in at)


async def _inserted_keys(cur: Any, spec: TableSpec, rows: Sequence[Row]) -> set[tuple[Any, ...]]:
    """The primary keys of ``rows`` whose stored row carries the row's own ``ingested_at`` (the rows
    this statement inserted: an existing row keeps its first)."""
    key = _key_of(spec)
    when = spec.column_names.index("ingested_at")
    sent = {key(r): r[when] for r in rows}
    keys = sorted(sent)
    cols = ", ".join(f"`{c}`" for c in spec.primary_key)
    one = "(" + ", ".join(["%s"] * len(spec.primary_key)) + ")"
    sql = f"SELECT {cols}, `ingested_at` FROM `{spec.name}` WHERE ({cols}) IN ({', '.join([one] * len(keys))})"
    await cur.execute(sql, [v for k in keys for v in k])
    return {k for *k_, at in await cur.fetchall() if sent.get(k := tuple(k_)) == at}


_T = TypeVar("_T")
_ROW: Final = attrgetter("row")  # of a WrittenEvent
_ITSELF: Final = lambda row: row  # noqa: E731 - an exposure is its row


async def _inserted(
    cur: Any, spec: TableSpec, sent: list[tuple[int, _T]], affected: int, row_of: Callable[[_T], Row]
) -> list[tuple[int, _T]]:
    """The items of ``sent`` whose row (``row_of`` of the item's second part) their statement
    inserted; it reported ``affected``: all of them, none, or else the keys are read back."""
    if affected == len(sent):
        return sent
    if not affected:
        return []
    rows = [row_of(x) for _, x in sent]
    new = await _inserted_keys(cur, spec, rows)
    key = _key_of(spec)
    return [item for item, row in zip(sent, rows, strict=True) if key(row) in new]


async def count(
    cur: Any,
    statements: Statements,
    writer: int,
    inserted: Inserted,
    exposures: Sequence[tuple[int, Row]],
    stored: dict[int, Stored],
    ingested_at: datetime,
    known_users: Container[tuple[Any, ...]] = (),
) -> list[tuple[Any, ...]]:
    """Add what the transaction inserted to the exact rollups, and mark late minutes for resealing.

    ``writer``: the partition the counts are keyed by, one the writer holds (the lowest of its
    batch's): the batch's counts go to one row per key, and concurrent writers hold disjoint
    partitions, so they never have a row in common. ``known_users``: ``experiment_users`` keys
    known to be stored (not sent again). The increments are queued on ``statements`` (the caller
    sends them, with the positions); the new users are inserted here, since the counts depend on
    which are new. Returns the keys that are stored once the transaction commits (for the caller
    to remember)."""
    t, c, k = Counts(), Counts(), Counts()
    # A minute a partition's processed event time has passed may be sealed already: marked late.
    # (As epoch ms: this looks at every pin engagement written.)
    late_before = {
        p: int((s.event_ts - _EPOCH).total_seconds() * 1000) - _SEALABLE_MS
        for p, s in stored.items()
        if s.event_ts is not None
    }
    latest_late = max(late_before.values(), default=-1)
    late: set[int] = set()
    for event_type, items in inserted.items():
        times = [e.ts_ms for _, e in items]
        rows_counts(event_type, [e.row for _, e in items], t, c, k, times)
        # (looked at event by event only when one may be late)
        if event_type.value in _PIN_ENGAGEMENT and times and min(times) < latest_late:
            late.update(e.ts_ms // 60_000 for p, e in items if e.ts_ms < late_before.get(p, -1))
    statements.add(_TYPES_ADD, [(minute, kind, writer, n) for (minute, kind), n in sorted(t.items())])
    statements.add(_CATEGORIES_ADD, [(*key, writer, n) for key, n in sorted(c.items())])
    statements.add(_COUNTRIES_ADD, [(*key, writer, n) for key, n in sorted(k.items())])
    statements.add(_DIRTY_ADD, [(ms_to_datetime(minute * 60_000), 1) for minute in sorted(late)])
    return await _count_exposures(cur, statements, writer, exposures, ingested_at, known_users)


_EXPOSURE_AT: Final = {
    c: EXPOSURES.column_names.index(c) for c in ("experiment", "group_name", "event_type", "user_id", "ts")
}


async def _count_exposures(
    cur: Any,
    statements: Statements,
    part: int,
    exposures: Sequence[tuple[int, Row]],
    ingested_at: datetime,
    known: Container[tuple[Any, ...]],
) -> list[tuple[Any, ...]]:
    """Exposures per group and type (and any type), and the users they expose for the first time,
    counted under the ``part`` partition."""
    if not exposures:
        return []
    x, g, t, u, ts = (_EXPOSURE_AT[c] for c in ("experiment", "group_name", "event_type", "user_id", "ts"))
    # Per exposure only its cell (experiment, group, type, time) and its users' first times are
    # kept (this runs for every exposure written); the rollups' keys are expanded from the cells.
    cells: dict[tuple[Any, ...], int] = {}
    first: dict[tuple[Any, ...], datetime] = {}
    for _, row in exposures:
        when = row[ts]
        cell = (row[x], row[g], row[t], when)
        cells[cell] = cells.get(cell, 0) + 1
        for kind in (row[t], ANY_TYPE):
            user = (row[u], row[x], row[g], kind)
            earlier = first.get(user)
            if earlier is None or when < earlier:
                first[user] = when
    events: Counts = Counts()
    for (experiment, group, kind, when), n in cells.items():
        minute = when.replace(second=0, microsecond=0)
        hour = minute.replace(minute=0)
        for k in (kind, ANY_TYPE):
            events[(experiment, "m", minute, group, k, part)] += n
            events[(experiment, "h", hour, group, k, part)] += n
    # A user already stored is no new user: most exposures are of returning users, and a key known
    # from an earlier batch is not sent (an unknown one that is stored is found by the read-back).
    # Sorted: concurrent writers insert shared keys in one order, so never wait on each other in a cycle.
    candidates = sorted((*user, when, ingested_at) for user, when in first.items() if user not in known)
    affected = await execute(cur, statements.encode, _USERS_INSERT, candidates)
    if affected == len(candidates):
        new_users = [c[:4] for c in candidates]
    elif affected:
        new_users = list(await _inserted_keys(cur, EXPERIMENT_USERS, candidates))
    else:
        new_users = []
    users: Counts = Counts()
    for user in new_users:
        minute = first[tuple(user)].replace(second=0, microsecond=0)
        _, experiment, group, kind = user
        users[(experiment, "m", minute, group, kind, part)] += 1
        users[(experiment, "h", minute.replace(minute=0), group, kind, part)] += 1
    rows = [(*k, events[k], users.get(k, 0)) for k in sorted(events.keys() | users.keys())]
    statements.add(_EXPERIMENTS_ADD, rows)
    return [c[:4] for c in candidates]
