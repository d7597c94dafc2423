"""SQLite reads in one hand-off to the database thread instead of three.

mautrix's SQLite connection (`mautrix.util.async_db.aiosqlite.TxnConnection`) runs
`fetch`, `fetchrow` and `fetchval` as three separate hand-offs to aiosqlite's thread: execute,
fetch, close the cursor. Each hand-off is a wake-up of that thread and then of the event loop;
on a busy bridge, where every relayed message reads and writes a few rows, they were most of
the time a message spent in the database. `OneTripConnection` does the same three steps in one
function on that thread. What a caller sees is unchanged: the same `$1` -> `?1` translation,
the same `sqlite3.Row` rows (the connection's row factory), the same `None` when nothing
matched, the same exceptions, the same `transaction()`. `execute` was one hand-off already and
is inherited as it is (it returns the cursor, which mautrix never closes either).

Only the bridge's own database uses it (`create_database`): mautrix is not patched, and any
other `Database.create("sqlite:...")` in the process gets mautrix's connection.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable
from typing import Any

from mautrix.util.async_db import Database, UpgradeTable
from mautrix.util.async_db.aiosqlite import (
    POSITIONAL_PARAM_PATTERN,
    SQLiteDatabase,
    TxnConnection,
)
from yarl import URL

SQLITE_SCHEMES = ("sqlite", "sqlite3")


@functools.lru_cache(maxsize=1024)
def _translate(query: str) -> str:
    # Exactly mautrix's translation (TxnConnection.__execute). Kept per query text: the
    # bridge's statements are a few hundred fixed strings, each run on every message, and
    # the substitution cost more than the read it prepared.
    return POSITIONAL_PARAM_PATTERN.sub(r"?\1", query)


# These run on the connection's thread. The cursor is closed however the read ends, as the
# `async with` around mautrix's cursor does.
def _fetch_all(conn: sqlite3.Connection, sql: str, params: Iterable[Any]) -> list[Any]:
    cursor = conn.execute(sql, params)
    try:
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _fetch_one(conn: sqlite3.Connection, sql: str, params: Iterable[Any]) -> Any:
    cursor = conn.execute(sql, params)
    try:
        return cursor.fetchone()
    finally:
        cursor.close()


class OneTripConnection(TxnConnection):
    """mautrix's SQLite connection with each read done in one hand-off to its thread."""

    # `self._conn` is read here, on the event loop, before the hand-off: as aiosqlite's own
    # `execute` does, so a closed connection raises the same error at the same point.
    # `timeout` is mautrix's signature; SQLite ignores it there too.
    async def fetch(self, query: str, *args: Any,
                    timeout: float | None = None) -> list[sqlite3.Row]:  # noqa: ASYNC109
        return await self._execute(_fetch_all, self._conn, _translate(query), args)

    async def fetchrow(self, query: str, *args: Any,
                       timeout: float | None = None) -> sqlite3.Row | None:  # noqa: ASYNC109
        return await self._execute(_fetch_one, self._conn, _translate(query), args)

    # `fetchval` is mautrix's: it calls `fetchrow` (now one hand-off) and takes the column.


class OneTripSQLiteDatabase(SQLiteDatabase):
    """mautrix's SQLite database whose connections are `OneTripConnection`s."""

    async def start(self) -> None:
        # mautrix's start makes the pool's connections with the module's own TxnConnection
        # and, in the same call, runs the schema checks and migrations (Database.start), with
        # no hook in between. Rather than copying that method (and keeping the copy in step
        # with mautrix), the pooled connections change class once it returns: the subclass
        # adds no state, only methods, so the objects are exactly what mautrix made. The
        # migrations have run on mautrix's methods by then, which return the same results,
        # only with more hand-offs, once per start.
        await super().start()
        if self._parent is not None:
            return  # it uses another database's pool, which is not ours to change
        pooled = [self._pool.get_nowait() for _ in range(self._pool.qsize())]
        if len(pooled) != self._conns:  # nothing else has the database before start returns
            raise RuntimeError("a database connection was in use while the database started")
        for conn in pooled:
            if type(conn) is TxnConnection:
                conn.__class__ = OneTripConnection
            self._pool.put_nowait(conn)


def create_database(uri: str, *, upgrade_table: UpgradeTable,
                    db_args: dict[str, Any] | None = None) -> Database:
    """`Database.create`, with the one-hand-off reads on SQLite."""
    url = URL(uri)
    if url.scheme in SQLITE_SCHEMES:
        return OneTripSQLiteDatabase(url, upgrade_table=upgrade_table, db_args=db_args)
    return Database.create(url, upgrade_table=upgrade_table, db_args=db_args)
