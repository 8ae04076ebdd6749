"""SingleStore access: connection pools, schema migration, the idempotent sink, pin lookup.

SingleStore speaks the MySQL protocol; asyncmy is the client. Locally MariaDB stands in.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncmy
from asyncmy.errors import Error as MySQLError
from asyncmy.errors import OperationalError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from config import DatabaseSettings
from pinapp.adapters.sql_values import backslash_escapes, insert_statements
from pinapp.domain.ddl import ALL_TABLES, EXPOSURES, TABLES, TableSpec, create_database_sql, create_table_sql
from pinapp.domain.events import EventType
from pinapp.domain.rows import Row
from pinapp.domain.table_values import Pin
from pinapp.errors import DatabaseError, SinkError
from pinapp.telemetry import health

__all__ = ["EngagementStore", "create_pool", "migrate", "ssl_context"]

logger = logging.getLogger(__name__)


async def create_pool(db: DatabaseSettings, *, with_database: bool = True, size: int | None = None) -> Any:
    """A pool of asyncmy connections (UTC session time zone, autocommit off).

    Raises:
        DatabaseError: naming the server and the settings, when no connection can be made.
    """
    try:
        return await _create_pool(db, with_database=with_database, size=size)
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


async def _create_pool(db: DatabaseSettings, *, with_database: bool, size: int | None) -> Any:
    return await asyncmy.create_pool(
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
    """Create the database and every table that does not exist yet. Returns the DDL run.

    Only what is missing is created, so a re-run is silent (``IF NOT EXISTS`` on an existing
    table makes the server send a warning that reads like a problem).
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
                    await cur.execute(statements[-1])
                await cur.execute(f"USE `{db.database}`")
                for spec in ALL_TABLES:
                    if spec.name not in existing:
                        statements.append(create_table_sql(spec, db.dialect))
                        await cur.execute(statements[-1])
            await conn.commit()
    finally:
        pool.close()
        await pool.wait_closed()
    return statements


@dataclass(frozen=True, slots=True)
class _Insert:
    """One table's idempotent insert: as a template (``executemany``) and as the text around
    pre-encoded rows (:mod:`pinapp.adapters.sql_values`)."""

    prefix: str  # INSERT INTO ... (cols) VALUES
    suffix: str  # ON DUPLICATE KEY UPDATE ...
    marks: str  # (%s, ...)

    @property
    def template(self) -> str:
        return f"{self.prefix} {self.marks} {self.suffix}"


def _insert_sql(spec: TableSpec, *, own_pin_wins: bool = False) -> _Insert:
    cols = ", ".join(f"`{c}`" for c in spec.column_names)
    marks = ", ".join(["%s"] * len(spec.column_names))
    # A no-op update of a non-key column makes a replayed row a no-op on both SingleStore
    # and MySQL (columnstore may not update unique-key columns), and keeps the first
    # ingested_at, which freshness measurements rely on.
    update = "`ingested_at` = `ingested_at`"
    if own_pin_wins:
        # `pins` has one row per pin, which a repin carrying its pin may have written first
        # (a "learned" row, under the repin's event_id) when the pin's own event is late: after
        # a rebalance replays it, say. The pin's own event then replaces it, whatever the order.
        keys = set(spec.primary_key) | {"ingested_at"}
        update = ", ".join(f"`{c}` = VALUES(`{c}`)" for c in spec.column_names if c not in keys)
    return _Insert(f"INSERT INTO `{spec.name}` ({cols}) VALUES", f"ON DUPLICATE KEY UPDATE {update}", f"({marks})")


_INSERTS = {t: _insert_sql(spec, own_pin_wins=t is EventType.PIN) for t, spec in TABLES.items()}
#: Pin rows learned from other events: never replace a row that is there.
_LEARNED_PIN_INSERT = _insert_sql(TABLES[EventType.PIN])
_EXPOSURE_INSERT = _insert_sql(EXPOSURES)


class EngagementStore:
    """Writes engagement rows and reads pins. Safe to retry: every write is idempotent."""

    def __init__(self, pool: Any, *, retry_max_s: float = 30.0) -> None:
        self._pool = pool
        self._retry_max_s = retry_max_s

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

    async def write(
        self, rows: Mapping[EventType, Sequence[Row]], learned_pins: Sequence[Row] = (), exposures: Sequence[Row] = ()
    ) -> int:
        """Write every row in one transaction, retrying until it commits.

        ``learned_pins`` are ``pins`` rows built from the pin a non-pin event carried: they
        fill a missing pin row but never replace one, while a pin's own event always does.

        Returns the number of rows sent. While the database is down this waits (the
        agent's partitions stop being consumed: backpressure, not memory growth).
        """
        todo = [(_INSERTS[t], r) for t, r in rows.items() if r]
        if learned_pins:
            todo.append((_LEARNED_PIN_INSERT, learned_pins))
        if exposures:
            todo.append((_EXPOSURE_INSERT, exposures))
        if not todo:
            return 0
        async for attempt in self._retrying("write"):
            with attempt:
                await self._write_once(todo)
        health.sink("singlestore").succeeded()
        return sum(len(r) for _, r in todo)

    async def _write_once(self, todo: Iterable[tuple[_Insert, Sequence[Row]]]) -> None:
        async with self._pool.acquire() as conn:
            try:
                async with conn.cursor() as cur:
                    if backslash_escapes(conn):  # the servers' default: rows encoded here
                        for insert, batch in todo:
                            for statement in insert_statements(insert.prefix, batch, insert.suffix):
                                await cur.execute(statement)
                    else:
                        for insert, batch in todo:
                            await cur.executemany(insert.template, batch)
                await conn.commit()
            except OperationalError:
                conn.close()  # a broken connection must not go back to the pool
                raise
            except MySQLError as exc:
                await conn.rollback()
                raise SinkError(f"database rejected a batch: {exc!r}") from exc

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
