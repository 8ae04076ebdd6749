"""SingleStore access: connection pools, schema migration, the idempotent sink, pin lookup.

SingleStore speaks the MySQL protocol; asyncmy is the client. Locally MariaDB stands in.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import repeat
from operator import attrgetter
from typing import Any, Final

import asyncmy
from asyncmy.errors import Error as MySQLError
from asyncmy.errors import OperationalError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from config import DatabaseSettings
from pinapp.adapters.db_errors import classify
from pinapp.adapters.rollup_sql import Statements, StoredKeys, count, move_positions, read_positions, write_rows
from pinapp.adapters.sql_values import backslash_escapes
from pinapp.domain.ddl import SCHEMA, TableSpec, collation_of, column_sql, create_database_sql, create_table_sql
from pinapp.domain.positions import Claim, PartitionWrite, WriteOutcome, WrittenEvent, may_write
from pinapp.domain.table_values import Pin
from pinapp.errors import DatabaseError, SinkError
from pinapp.telemetry import health

__all__ = ["EngagementStore", "create_pool", "migrate", "ssl_context"]

logger = logging.getLogger(__name__)

_OFFSET: Final = attrgetter("offset")  # of a WrittenEvent


_DEFAULT: Any = object()


async def create_pool(
    db: DatabaseSettings,
    *,
    with_database: bool = True,
    size: int | None = None,
    read_timeout: Any = _DEFAULT,
    reader: bool = False,
) -> Any:
    """A pool of asyncmy connections (UTC session time zone, autocommit off), whose statements
    wait ``read_timeout`` seconds at most for a reply (``db.read_timeout_s`` by default; ``None``:
    no limit, for an analyst's ad-hoc query). ``reader``: as ``db.query_user`` when set (the
    queries people send), else as the writer.

    Raises:
        DatabaseError: naming the server and the settings, when no connection can be made.
    """
    timeout = db.read_timeout_s if read_timeout is _DEFAULT else read_timeout
    if reader and db.query_user:
        db = db.model_copy(update={"user": db.query_user, "password": db.query_password})
    try:
        return await _create_pool(db, with_database=with_database, size=size, read_timeout=timeout)
    except (MySQLError, OSError) as exc:
        hint = " (run `pinapp db migrate`, or start a worker, to create it)" if "Unknown database" in str(exc) else ""
        raise DatabaseError(
            f"cannot connect to SingleStore at {db.host}:{db.port}, database {db.database!r}, as "
            f"{db.user!r}: {exc}{hint}; check the db.* settings (PINAPP_DB__HOST, PINAPP_DB__PORT, ...)"
        ) from exc


def ssl_context(db: DatabaseSettings) -> ssl.SSLContext | None:
    """The TLS context of ``db.tls`` (the MySQL client's ssl-mode), or ``None`` for DISABLED."""
    if db.tls == "DISABLED":
        return None
    context = ssl.create_default_context(cafile=db.ssl_ca_file)
    if db.tls == "REQUIRED":  # encrypted, the server's certificate unchecked (as the MySQL client)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.check_hostname = db.tls == "VERIFY_IDENTITY"
    if db.ssl_cert_file is not None:
        context.load_cert_chain(db.ssl_cert_file, db.ssl_key_file)
    return context


async def _create_pool(db: DatabaseSettings, *, with_database: bool, size: int | None, read_timeout: Any) -> Any:
    return await asyncmy.create_pool(
        read_timeout=read_timeout,
        ssl=ssl_context(db),
        host=db.host,
        port=db.port,
        user=db.user,
        password=db.password.get_secret_value(),
        db=db.database if with_database else None,
        minsize=1,
        maxsize=size or db.pool_size,
        autocommit=False,
        init_command="SET time_zone = '+00:00'",
        connect_timeout=5,
    )


async def migrate(db: DatabaseSettings) -> list[str]:
    """Create the database and every table that does not exist yet, and bring the collation of an
    existing table's string columns to the schema's (:func:`pinapp.domain.ddl.collation_of`: ids
    compare as bytes). Returns the DDL run.

    Only what is missing or different is run, so a re-run is silent (``IF NOT EXISTS`` on an
    existing table makes the server send a warning that reads like a problem).

    Raises:
        DatabaseError: a column's collation could not be changed (naming the table and the fix).
    """
    pool = await create_pool(db, with_database=False, size=1)
    statements: list[str] = []
    try:
        async with pool.acquire() as conn:
            async with conn.cursor() as cur:
                await cur.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (db.database,)
                )
                existing = {row[0] for row in await cur.fetchall()}
                await cur.execute("SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (db.database,))
                if not await cur.fetchall():
                    statements.append(create_database_sql(db.database))
                    with _quiet_if_made_meanwhile():
                        await cur.execute(statements[-1])
                await cur.execute(f"USE `{db.database}`")
                with _quiet_if_made_meanwhile():
                    for spec in SCHEMA:
                        if spec.name not in existing:
                            statements.append(create_table_sql(spec, db.dialect))
                            await cur.execute(statements[-1])
                await cur.execute(
                    "SELECT table_name, column_name, collation_name FROM information_schema.columns "
                    "WHERE table_schema = %s AND collation_name IS NOT NULL",
                    (db.database,),
                )
                collations = {(t, c): collation for t, c, collation in await cur.fetchall()}
                for spec in SCHEMA:
                    if spec.name in existing and (alter := _collation_alter(spec, collations)):
                        statements.append(alter)
                        try:
                            await cur.execute(alter)
                        except MySQLError as exc:
                            raise DatabaseError(
                                f"`{spec.name}`: its id columns compare case-insensitively and could not be altered "
                                f"({exc}); copy it into a table made by this version's DDL (pinapp db migrate --print)"
                            ) from exc
            await conn.commit()
    finally:
        pool.close()
        await pool.wait_closed()
    return statements


class _MadeMeanwhile(logging.Filter):
    """Drops the server's note that a database or table this ``CREATE ... IF NOT EXISTS`` found
    missing was there after all: another worker, migrating at the same moment, made it (notes
    1007 and 1050). asyncmy logs every note as a WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        table = message.startswith("Table '") and message.endswith("' already exists")
        return not (table or (message.startswith("Can't create database '") and message.endswith("; database exists")))


@contextmanager
def _quiet_if_made_meanwhile() -> Iterator[None]:
    asyncmy_log, made_meanwhile = logging.getLogger("asyncmy"), _MadeMeanwhile()
    asyncmy_log.addFilter(made_meanwhile)
    try:
        yield
    finally:
        asyncmy_log.removeFilter(made_meanwhile)


def _collation_alter(spec: TableSpec, collations: dict[tuple[str, str], str]) -> str | None:
    """``ALTER TABLE`` for the columns of an existing table whose collation is not the schema's."""
    changes = [
        f"MODIFY {column_sql(c)}"
        for c in spec.columns
        if (wanted := collation_of(c)) is not None and collations.get((spec.name, c.name), wanted) != wanted
    ]
    return f"ALTER TABLE `{spec.name}` {', '.join(changes)}" if changes else None


class EngagementStore:
    """Writes engagement rows with their rollups and positions, exactly once; reads pins.

    :mod:`pinapp.domain.positions` gives the protocol: each write is one transaction that locks
    its partitions' ``stream_offsets`` rows, drops the partitions another worker owns now and the
    records already written, inserts the rest, counts what it inserted into the rollups
    (:mod:`pinapp.domain.rollups`), and moves the positions past the batch. Retried while the
    database is down; a retry after a lost COMMIT reply finds its records written and writes none.
    """

    def __init__(
        self,
        pool: Any,
        *,
        retry_max_s: float = 30.0,
        topic: str = "events",
        known_users: int = 200_000,
        multi_statements: bool = True,
    ) -> None:
        self._pool = pool
        self._together = multi_statements  # db.multi_statements
        self._retry_max_s = retry_max_s
        self.topic = topic
        # experiment_users keys stored (committed), so a returning user's exposure sends nothing
        self._known_users = StoredKeys(known_users)

    def _retrying(self, what: str) -> AsyncRetrying:
        def log_retry(state: Any) -> None:
            health.sink("singlestore").failed(state.outcome.exception())
            logger.warning(
                "database %s failed (attempt %d): %r; retrying, offsets stay uncommitted",
                what,
                state.attempt_number,
                state.outcome.exception(),
            )

        return AsyncRetrying(
            retry=retry_if_exception_type((MySQLError, OSError)),
            wait=wait_exponential_jitter(multiplier=0.1, max=self._retry_max_s),
            before_sleep=log_retry,
            reraise=True,
        )

    async def write(self, writes: Sequence[PartitionWrite], claim: Claim) -> WriteOutcome:
        """Write the batch's rows, rollups and positions in one transaction, retrying until it commits.

        A learned pin row (``WrittenEvent.learned_pin``: the pin a non-pin event carried) fills a
        missing pin row but never replaces one, while a pin's own event always does. While the
        database is down this waits (the agent's partitions stop being consumed: backpressure).

        Raises:
            SinkError: the database refused a row (a row fault): write the batch row by row.
        """
        if not writes:
            return WriteOutcome()
        ingested_at = datetime.now(UTC).replace(tzinfo=None)
        async for attempt in self._retrying("write"):
            with attempt:
                outcome = await self._write_once(writes, claim, ingested_at)
        health.sink("singlestore").succeeded()
        return outcome

    async def _write_once(self, writes: Sequence[PartitionWrite], claim: Claim, ingested_at: datetime) -> WriteOutcome:
        async with self._pool.acquire() as conn:
            try:
                async with conn.cursor() as cur:
                    outcome, users = await self._transaction(cur, conn, writes, claim, ingested_at)
                await conn.commit()
                self._known_users.update(users)  # stored now: not sent again
            except MySQLError as exc:
                if isinstance(exc, OperationalError):
                    conn.close()  # a broken connection must not go back to the pool
                else:
                    await conn.rollback()
                if classify(exc) == "row_fault":
                    raise SinkError(f"database rejected a batch: {exc!r}") from exc
                raise  # an outage (a missing table too: every row would fail alike): retried
            except BaseException:
                await conn.rollback()
                raise
        return outcome

    async def _transaction(
        self, cur: Any, conn: Any, writes: Sequence[PartitionWrite], claim: Claim, ingested_at: datetime
    ) -> tuple[WriteOutcome, list[tuple[Any, ...]]]:
        """The write's statements; returns its outcome and the experiment_users keys stored once it commits."""
        stored = await read_positions(cur, self.topic, [w.partition for w in writes], lock=True)
        lost = frozenset(w.partition for w in writes if not may_write(stored.get(w.partition), claim))
        fresh: list[tuple[int, WrittenEvent]] = []
        already = 0
        for w in writes:
            if w.partition in lost or not w.events:
                continue
            position = stored.get(w.partition)
            floor = position.next_offset if position is not None else -1
            if min(map(_OFFSET, w.events)) >= floor:  # the usual case: none written yet
                fresh.extend(zip(repeat(w.partition), w.events))
                continue
            for event in w.events:
                if event.offset < floor:
                    already += 1
                else:
                    fresh.append((w.partition, event))
        encode = backslash_escapes(conn)
        inserted, exposures = await write_rows(cur, Statements(encode, together=self._together), fresh)
        held = [w for w in writes if w.partition not in lost]
        users: list[tuple[Any, ...]] = []
        last = Statements(encode, together=self._together)  # the rollups' increments and the positions
        if held:
            writer = min(w.partition for w in held)
            users = await count(cur, last, writer, inserted, exposures, stored, ingested_at, self._known_users)
        move_positions(last, self.topic, held, claim)
        await last.send(cur)
        written = sum(map(len, inserted.values()))
        return WriteOutcome(lost=lost, already_written=already, inserted=written), users

    async def fetch_pins(self, pin_ids: Iterable[str]) -> dict[str, Pin]:
        """Pins known to SingleStore, by id (cache misses are looked up here)."""
        ids = sorted(set(pin_ids))
        if not ids:
            return {}
        sql = (
            "SELECT pin_id, board_id, user_id, title, category, ROUND(UNIX_TIMESTAMP(created_at) * 1000) FROM pins "  # noqa: S608 - placeholders only; the ids are parameters
            f"WHERE pin_id IN ({', '.join(['%s'] * len(ids))})"
        )
        found: dict[str, Pin] = {}
        async for attempt in self._retrying("pin lookup"):
            with attempt:
                async with self._pool.acquire() as conn:
                    try:
                        async with conn.cursor() as cur:
                            await cur.execute(sql, ids)
                            for pin_id, board_id, user_id, title, category, created_ms in await cur.fetchall():
                                found[pin_id] = Pin(
                                    pin_id=pin_id,
                                    board_id=board_id,
                                    user_id=user_id,
                                    title=title,
                                    category=category,
                                    created_at=int(created_ms),
                                )
                        await conn.commit()
                    except OperationalError:
                        conn.close()
                        raise
        return found
