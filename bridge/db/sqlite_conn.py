"""SQLite reads in one hand-off to the database thread instead of three, and the statements
of every relayed message in none.

mautrix's SQLite connection (`mautrix.util.async_db.aiosqlite.TxnConnection`) runs
`fetch`, `fetchrow` and `fetchval` as three separate hand-offs to aiosqlite's thread: execute,
fetch, close the cursor. Each hand-off is a wake-up of that thread and then of the event loop;
on a busy bridge, where every relayed message reads and writes a few rows, they were most of
the time a message spent in the database. `OneTripConnection` does the same three steps in one
function on that thread. What a caller sees is unchanged: the same `$1` -> `?1` translation,
the same `sqlite3.Row` rows (the connection's row factory), the same `None` when nothing
matched, the same exceptions, the same `transaction()`. `execute` was one hand-off already and
is mautrix's (it returns the cursor, which mautrix never closes either).

A few statements skip the hand-off altogether (`on_the_loop`): the indexed reads and writes
of a row that every relayed message makes (its map row, its queue row, the homeserver's
transaction). SQLite does each in microseconds, in this process; the hand-off to the thread
and back costs ten to thirty times that, and more when the homeserver keeps the other core
busy. They run on the event loop's thread, with the same function, so the same rows and
errors, and only when they cannot meet anything: the bridge keeps one SQLite connection
(`open_database`), the statement runs only while nothing is queued on that connection's
thread, and it never waits for another process's lock (it goes to the thread instead, which
waits as usual), so the loop is never held for longer than the statement itself.

Only the bridge's own database uses it (`create_database`): mautrix is not patched, and any
other `Database.create("sqlite:...")` in the process gets mautrix's connection.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import aiosqlite
from mautrix.util.async_db import Database, UpgradeTable
from mautrix.util.async_db.aiosqlite import (
    POSITIONAL_PARAM_PATTERN,
    SQLiteDatabase,
    TxnConnection,
)
from yarl import URL

SQLITE_SCHEMES = ("sqlite", "sqlite3")

#: About how many pages of the write-ahead log one changed row fills: its table's page and
#: one per index (the message map's row has four).
PAGES_PER_CHANGE = 5

log = logging.getLogger("relayforge.db")


@functools.lru_cache(maxsize=1024)
def _translate(query: str) -> str:
    # Exactly mautrix's translation (TxnConnection.__execute). Kept per query text: the
    # bridge's statements are a few hundred fixed strings, each run on every message, and
    # the substitution cost more than the read it prepared.
    return POSITIONAL_PARAM_PATTERN.sub(r"?\1", query)


T = TypeVar("T")

#: The statements `on_the_loop` marked, as the stores write them (before translation).
_ON_THE_LOOP: set[str] = set()


def on_the_loop(query: str) -> str:
    """Mark `query` to run on the event loop's thread on SQLite, and return it unchanged.

    Only for a statement whose cost cannot grow with the data: one that finds its row or two
    through an index (a primary key or a unique or ordered index whose first rows answer), and
    changes at most those. The loop does nothing else while it runs."""
    _ON_THE_LOOP.add(query)
    return query


# These run on the connection's thread, or on the loop's for the marked statements. The
# cursor is closed however the read ends, as the `async with` around mautrix's cursor does.
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


def _fetch_one_found(conn: sqlite3.Connection, sql: str, params: Iterable[Any]
                     ) -> tuple[Any]:
    # In a tuple, so that "no row" (None) is told apart from "not done here" (None).
    return (_fetch_one(conn, sql, params),)


def _run(conn: sqlite3.Connection, sql: str, params: Iterable[Any]) -> sqlite3.Cursor:
    return conn.execute(sql, params)


def _passive_checkpoint(conn: sqlite3.Connection) -> None:
    # PASSIVE: copies what no reader still needs and never waits for one (SQLite's automatic
    # checkpoint is PASSIVE too).
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _busy(error: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused because another connection holds a lock (SQLITE_BUSY and its
    extended codes), which waiting would have got past."""
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


class OneTripConnection(TxnConnection):
    """mautrix's SQLite connection with each read done in one hand-off to its thread, and the
    statements marked `on_the_loop` done on the event loop's thread when nothing waits there."""

    # Instances become this class after mautrix made them (`OneTripSQLiteDatabase.start`), so
    # these start as class attributes rather than in an `__init__` that never runs.
    #: Calls handed to this connection's thread and not yet answered.
    _on_thread = 0
    #: The connection's own settings that a statement on the loop suspends, as
    #: (busy timeout ms, autocheckpoint pages), read at its first statement there.
    _settings: tuple[int, int] | None = None
    #: Changes made on the loop since the write-ahead log was last checkpointed.
    _unchecked = 0
    _checkpoint: asyncio.Task[Any] | None = None

    async def _execute(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # Every call to the thread goes through here (aiosqlite's cursors too), so while the
        # count is above zero the thread may be using the connection, and the loop must not.
        self._on_thread += 1
        try:
            return await super()._execute(fn, *args, **kwargs)
        finally:
            self._on_thread -= 1

    def _on_loop(self, fn: Callable[[sqlite3.Connection, str, Iterable[Any]], T],
                 query: str, args: tuple[Any, ...]) -> T | None:
        """`fn` done here and now, or None when it belongs on the thread: the statement is not
        marked, the thread has calls queued, or another process holds a lock it needs.

        What could make a statement wait is turned off while it runs: SQLite's busy wait (the
        thread waits that out with the connection's busy timeout instead) and its automatic
        checkpoint, which copies the write-ahead log into the database file and syncs it at
        the commit that fills the log (milliseconds; `_checkpoint_later` hands it to the
        thread)."""
        if query not in _ON_THE_LOOP or self._on_thread:
            return None
        conn = self._conn
        if self._settings is None:
            self._settings = (int(conn.execute("PRAGMA busy_timeout").fetchone()[0]),
                              int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]))
        busy_ms, pages = self._settings
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        changes = conn.total_changes
        try:
            return fn(conn, _translate(query), args)
        except sqlite3.OperationalError as e:
            if _busy(e):
                return None  # nothing was done: SQLite refused before changing anything
            raise
        finally:
            conn.execute(f"PRAGMA wal_autocheckpoint = {pages}")
            conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
            if conn.total_changes != changes:
                self._checkpoint_later(pages)

    def _checkpoint_later(self, pages: int) -> None:
        """Count a change made on the loop; after as many as fill about `pages` pages of the
        log (a changed row dirties a few: its table's and each index's), checkpoint on the
        thread, as SQLite would have at that commit."""
        self._unchecked += 1
        if pages <= 0 or self._unchecked * PAGES_PER_CHANGE < pages or self._checkpoint:
            return
        self._unchecked = 0
        self._checkpoint = asyncio.get_running_loop().create_task(
            self._execute(_passive_checkpoint, self._conn))
        self._checkpoint.add_done_callback(self._checkpointed)

    async def close(self) -> None:
        if self._checkpoint is not None:
            # Handed to the thread but maybe not started: it runs before the connection goes.
            await asyncio.wait([self._checkpoint])
        await super().close()

    def _checkpointed(self, task: asyncio.Task[Any]) -> None:
        self._checkpoint = None
        if not task.cancelled() and task.exception() is not None:
            # Nothing is lost: the log keeps every change, and the next checkpoint (ours or
            # SQLite's own, at a write on the thread) copies it.
            log.warning("SQLite checkpoint failed: %s", task.exception())

    # `self._conn` is read here, on the event loop, before the hand-off: as aiosqlite's own
    # `execute` does, so a closed connection raises the same error at the same point.
    # `timeout` is mautrix's signature; SQLite ignores it there too.
    async def fetch(self, query: str, *args: Any,
                    timeout: float | None = None) -> list[sqlite3.Row]:  # noqa: ASYNC109
        rows = self._on_loop(_fetch_all, query, args)
        if rows is not None:
            return rows
        return await self._execute(_fetch_all, self._conn, _translate(query), args)

    async def fetchrow(self, query: str, *args: Any,
                       timeout: float | None = None) -> sqlite3.Row | None:  # noqa: ASYNC109
        found = self._on_loop(_fetch_one_found, query, args)
        if found is not None:
            return found[0]
        return await self._execute(_fetch_one, self._conn, _translate(query), args)

    # `fetchval` is mautrix's: it calls `fetchrow` and takes the column.

    async def execute(self, query: str, *args: Any,
                      timeout: float | None = None) -> aiosqlite.Cursor:  # noqa: ASYNC109
        cursor = self._on_loop(_run, query, args)
        if cursor is not None:
            return aiosqlite.Cursor(self, cursor)  # what aiosqlite's `execute` returns
        return await super().execute(query, *args, timeout=timeout)


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
        # The marked statements run on the loop's thread, not the one that opened the
        # connection; `_on_loop` makes sure the two never use it at once.
        db_args = {**(db_args or {}), "check_same_thread": False}
        return OneTripSQLiteDatabase(url, upgrade_table=upgrade_table, db_args=db_args)
    return Database.create(url, upgrade_table=upgrade_table, db_args=db_args)
