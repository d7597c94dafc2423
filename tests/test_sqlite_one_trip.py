"""The bridge's SQLite reads (one hand-off to the database thread each, or none for the
statements marked `on_the_loop`) answer exactly as mautrix's SQLite connection does: the same
rows, values, None, errors and transactions.

Every case runs on two real database files set up alike, one opened with mautrix's
connection and one with the bridge's, and the answers are compared; the bridge's runs once
with its statements on the thread and once with every statement marked to run on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite.core
import pytest
from mautrix.util.async_db import Database, UpgradeTable

from bridge.db import open_database, sqlite_conn
from bridge.db.message import MessageKind, MessageRow
from bridge.db.sqlite_conn import create_database

SETUP = [
    "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, size REAL, "
    "data BLOB, note TEXT)",
    "INSERT INTO item (name, size, data, note) VALUES ('a', 1.5, x'00ff', NULL), "
    "('b', 2, NULL, 'two'), ('c', -3, x'', 'three')",
    "CREATE TABLE doc (id INTEGER PRIMARY KEY, body TEXT)",
    # The third body is not JSON: reading it fails part-way through a query.
    """INSERT INTO doc (body) VALUES ('{"a": 1}'), ('{"a": 2}'), ('not json'), ('{"a": 4}')""",
]

Query = Callable[[Any], Awaitable[Any]]


class _Every:
    """Marks every statement `on_the_loop`."""

    def __contains__(self, query: object) -> bool:
        return True


@pytest.fixture(params=["on the thread", "on the loop"])
def where(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "on the loop":
        monkeypatch.setattr(sqlite_conn, "_ON_THE_LOOP", _Every())
    return request.param


@pytest.fixture
async def databases(tmp_path: Path, where: str) -> AsyncIterator[dict[str, Database]]:
    made = {
        "mautrix": Database.create(f"sqlite:{tmp_path / 'mautrix.db'}",
                                   upgrade_table=UpgradeTable()),
        "bridge": create_database(f"sqlite:{tmp_path / 'bridge.db'}",
                                  upgrade_table=UpgradeTable()),
    }
    for db in made.values():
        await db.start()
        for statement in SETUP:
            await db.execute(statement)
    yield made
    for db in made.values():
        await db.stop()


def _plain(value: Any) -> Any:
    """What a caller can see of a result, comparable across the two connections."""
    if isinstance(value, sqlite3.Row):
        return ("Row", tuple(value.keys()), tuple(value), dict(value))
    if isinstance(value, list):
        return ("list", [_plain(v) for v in value])
    return (type(value).__name__, value)


async def _answer(db: Database, query: Query) -> Any:
    try:
        async with db.acquire() as conn:
            return ("ok", _plain(await query(conn)))
    except Exception as e:  # the error itself is the answer to compare
        return ("error", type(e), str(e))


async def same(databases: dict[str, Database], query: Query) -> Any:
    answers = {name: await _answer(db, query) for name, db in databases.items()}
    assert answers["bridge"] == answers["mautrix"]
    return answers["bridge"]


def _run(statement: str) -> Query:
    """`execute`, whose answer (a cursor object) is not compared, only whether it failed."""
    async def run(conn: Any) -> None:
        await conn.execute(statement)
    return run


READS: dict[str, Query] = {
    "fetch rows": lambda c: c.fetch("SELECT * FROM item WHERE size > $1 ORDER BY id", -10),
    "fetch nothing": lambda c: c.fetch("SELECT * FROM item WHERE name=$1", "zz"),
    "fetch more rows than a chunk": lambda c: c.fetch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 200) "
        "SELECT i, i * $1 AS twice FROM n", 2),
    "fetchrow one": lambda c: c.fetchrow("SELECT * FROM item WHERE name=$1", "b"),
    "fetchrow first of many": lambda c: c.fetchrow("SELECT name FROM item ORDER BY id DESC"),
    "fetchrow none": lambda c: c.fetchrow("SELECT * FROM item WHERE name=$1", "zz"),
    "fetchval": lambda c: c.fetchval("SELECT size FROM item WHERE name=$1", "a"),
    "fetchval other column": lambda c: c.fetchval(
        "SELECT name, data FROM item WHERE name=$1", "a", column=1),
    "fetchval NULL": lambda c: c.fetchval("SELECT note FROM item WHERE name=$1", "a"),
    "fetchval no row": lambda c: c.fetchval("SELECT note FROM item WHERE name=$1", "zz"),
    "fetchval empty blob": lambda c: c.fetchval("SELECT data FROM item WHERE name='c'"),
    "fetchval count": lambda c: c.fetchval("SELECT COUNT(*) FROM item"),
    "a parameter used twice and out of order": lambda c: c.fetchrow(
        "SELECT $2 || $1 || $2 AS joined, $1 AS first", "x", "y"),
}

ERRORS: dict[str, Query] = {
    "syntax": lambda c: c.fetchrow("SELEC 1"),
    "no such table": lambda c: c.fetch("SELECT * FROM nothing"),
    "too few parameters": lambda c: c.fetchval("SELECT $1, $2", 1),
    "too many parameters": lambda c: c.fetchrow("SELECT $1", 1, 2),
    "unsupported parameter": lambda c: c.fetchval("SELECT $1", object()),
    "column out of range": lambda c: c.fetchval("SELECT 1", column=3),
    "failing part-way through fetch": lambda c: c.fetch(
        "SELECT json_extract(body, '$.a') FROM doc ORDER BY id"),
    "failing part-way through fetchrow": lambda c: c.fetchrow(
        "SELECT json_extract(body, '$.a') FROM doc WHERE id >= 3 ORDER BY id"),
    "unique violation with RETURNING": lambda c: c.fetchval(
        "INSERT INTO item (name) VALUES ($1) RETURNING id", "a"),
    "NOT NULL violation": lambda c: c.fetchrow("INSERT INTO item (size) VALUES (1) RETURNING *"),
}


@pytest.mark.parametrize("case", READS)
async def test_reads_answer_as_mautrix_does(databases, case):
    answer = await same(databases, READS[case])
    assert answer[0] == "ok"


async def test_rows_are_sqlite_rows_by_name_and_position(databases):
    row = await databases["bridge"].fetchrow("SELECT id, name FROM item WHERE name=$1", "b")
    assert isinstance(row, sqlite3.Row)
    assert (row["name"], row[1], dict(row)) == ("b", "b", {"id": 2, "name": "b"})


@pytest.mark.parametrize("case", ERRORS)
async def test_errors_are_the_same_errors(databases, case):
    answer = await same(databases, ERRORS[case])
    assert answer[0] == "error"
    # And the connection goes on working: nothing half-read is left open on it.
    await same(databases, lambda c: c.fetch("SELECT name FROM item ORDER BY id"))


async def test_a_failed_read_leaves_no_statement_open(databases):
    """Dropping a table fails while a read of it is unfinished: neither connection leaves one
    behind, whether the read took one row of many or failed part-way."""
    await same(databases, lambda c: c.fetchrow("SELECT * FROM item ORDER BY id"))
    await same(databases, ERRORS["failing part-way through fetch"])
    assert (await same(databases, _run("DROP TABLE doc")))[0] == "ok"
    assert (await same(databases, _run("DROP TABLE item")))[0] == "ok"


async def test_writes_returning_values(databases):
    first = await same(databases, lambda c: c.fetchval(
        "INSERT INTO item (name, size) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING "
        "RETURNING id", "d", 4))
    assert first == ("ok", ("int", 4))
    again = await same(databases, lambda c: c.fetchval(
        "INSERT INTO item (name, size) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING "
        "RETURNING id", "d", 5))
    assert again == ("ok", ("NoneType", None))  # a conflict returns nothing, as on PostgreSQL
    await same(databases, lambda c: c.fetch(
        "UPDATE item SET size = size * 2 WHERE size > $1 RETURNING name, size", 1))
    await same(databases, lambda c: c.fetchrow("DELETE FROM item WHERE name=$1 RETURNING *", "b"))
    # Only the first row is read, but every row was deleted (SQLite does the whole change at
    # the first step), on both.
    await same(databases, lambda c: c.fetchrow("DELETE FROM item WHERE size < 100 RETURNING id"))
    assert await same(databases, lambda c: c.fetchval("SELECT COUNT(*) FROM item")) == (
        "ok", ("int", 0))


async def test_transactions_commit_and_roll_back_alike(databases):
    async def committed(conn: Any) -> Any:
        async with conn.transaction():
            await conn.fetchval("INSERT INTO item (name) VALUES ('t1') RETURNING id")
            async with conn.transaction():  # nested: part of the outer one
                await conn.execute("INSERT INTO item (name) VALUES ('t2')")
        return await conn.fetch("SELECT name FROM item WHERE name LIKE 't%' ORDER BY name")

    async def rolled_back(conn: Any) -> Any:
        async with conn.transaction():
            await conn.fetchval("INSERT INTO item (name) VALUES ('t3') RETURNING id")
            # Fails: 't1' exists; the whole transaction is undone, 't3' too.
            await conn.fetchval("INSERT INTO item (name) VALUES ('t1') RETURNING id")

    assert (await same(databases, committed))[0] == "ok"
    assert (await same(databases, rolled_back))[0] == "error"
    names = await same(databases, lambda c: c.fetch(
        "SELECT name FROM item WHERE name LIKE 't%' ORDER BY name"))
    assert [row[2] for row in names[1][1]] == [("t1",), ("t2",)]


def _count_hand_offs(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The functions handed to aiosqlite's thread from here on, in order."""
    handed: list[object] = []
    original = aiosqlite.core.Connection._execute

    async def counted(conn: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        handed.append(fn)
        return await original(conn, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted)
    return handed


async def test_the_bridge_reads_in_one_hand_off(tmp_path, monkeypatch):
    """Each fetch, fetchrow and fetchval of the bridge's own SQLite database is one hand-off to
    the database thread (mautrix's takes three)."""
    handed = _count_hand_offs(monkeypatch)
    storage = await open_database(f"sqlite:{tmp_path / 'relayforge.db'}")
    mautrix = Database.create(f"sqlite:{tmp_path / 'plain.db'}", upgrade_table=UpgradeTable())
    await mautrix.start()
    try:
        for db, each in ((storage.db, 1), (mautrix, 3)):
            for read in (db.fetch("SELECT 1"), db.fetchrow("SELECT 1"),
                         db.fetchval("SELECT 1"), db.fetchrow("SELECT 1 WHERE 0")):
                handed.clear()
                await read
                assert len(handed) == each
        # And the bridge's stores read through it.
        handed.clear()
        assert await storage.portals.get("slack", "C1") is None
        assert len(handed) == 1
    finally:
        await mautrix.stop()
        await storage.close()


# ---- statements on the event loop's thread ----------------------------------------------------

def _map_row(i: int) -> MessageRow:
    return MessageRow("slack", "C1", f"m{i}", MessageKind.MESSAGE, f"$e{i}", "!room:hs",
                      "@slack_u1:hs")


async def _with_portal(tmp_path: Path) -> Any:
    storage = await open_database(f"sqlite:{tmp_path / 'relayforge.db'}")
    await storage.db.execute(
        "INSERT INTO portal (network, remote_id, mxid, name, created_at) "
        "VALUES ('slack', 'C1', '!room:hs', 'general', 0)")
    return storage


async def test_each_message_s_map_statements_need_no_hand_off(tmp_path, monkeypatch):
    """The message map's insert and lookups, the homeserver transaction's check and mark:
    done on the loop (no hand-off), with the same answers; anything else still takes one."""
    storage = await _with_portal(tmp_path)
    handed = _count_hand_offs(monkeypatch)
    try:
        assert await storage.messages.insert(_map_row(1)) is True
        assert await storage.messages.insert(_map_row(1)) is False  # already mapped
        found = await storage.messages.get_by_remote("slack", "C1", "m1")
        assert found == await storage.messages.get_by_mxid(_map_row(1).mxid)
        assert found is not None and found.sender_mxid == "@slack_u1:hs"
        assert await storage.messages.get_by_remote("slack", "C1", "m2") is None
        assert not await storage.transactions.is_handled("t1")
        await storage.transactions.mark_handled("t1")
        assert await storage.transactions.is_handled("t1")
        assert handed == []
        assert await storage.portals.get("slack", "C1") is not None
        assert len(handed) == 1
    finally:
        await storage.close()


async def test_another_process_s_lock_does_not_hold_the_loop(tmp_path):
    """Another process (an admin command, an export) holds the database's write lock: the
    bridge's insert waits for it on the thread, the loop keeps running meanwhile, and the row
    is written once the lock is gone."""
    storage = await _with_portal(tmp_path)
    # Longer than the holder below waits for the loop: a loop stuck in SQLite's busy wait
    # would stay stuck until the holder gave up.
    await storage.db.execute("PRAGMA busy_timeout = 60000")
    locked, loop_ran = threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def hold() -> None:
        other = sqlite3.connect(tmp_path / "relayforge.db", isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # the write lock, as a writing transaction has
            other.execute("INSERT INTO appservice_txn (txn_id, handled_at) VALUES ('other', 0)")
            locked.set()
            seen["loop ran while locked"] = loop_ran.wait(30)
            other.execute("COMMIT")
        finally:
            other.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        await asyncio.to_thread(locked.wait)
        insert = asyncio.create_task(storage.messages.insert(_map_row(1)))
        for _ in range(20):  # turns of the loop, the insert's among them
            await asyncio.sleep(0)
        seen["insert waiting"] = not insert.done()
        loop_ran.set()
        assert await insert is True
        await asyncio.to_thread(holder.join)
        assert seen == {"loop ran while locked": True, "insert waiting": True}
        assert await storage.messages.get_by_remote("slack", "C1", "m1") is not None
        assert await storage.transactions.is_handled("other")
    finally:
        loop_ran.set()
        holder.join()
        await storage.close()


async def test_the_write_ahead_log_is_checkpointed_on_the_thread(tmp_path):
    """Writes on the loop never run SQLite's checkpoint there (it syncs the file, which takes
    milliseconds): the thread does it, and the log stays bounded as SQLite keeps it."""
    storage = await _with_portal(tmp_path)
    checkpoints: list[tuple[int, str]] = []
    async with storage.db.acquire() as conn:
        raw = conn.wrapped._conn
    raw.set_trace_callback(lambda sql: checkpoints.append((threading.get_ident(), sql))
                           if "wal_checkpoint" in sql else None)
    wal = tmp_path / "relayforge.db-wal"
    try:
        for i in range(3000):
            await storage.messages.insert(_map_row(i))
            await asyncio.sleep(0)  # a turn for a checkpoint handed to the thread
        await storage.db.fetchval("SELECT 1")  # after any checkpoint still queued
        assert checkpoints, "the log was never checkpointed"
        assert all(thread != threading.get_ident() for thread, _ in checkpoints)
        pages = await storage.db.fetchval("PRAGMA wal_autocheckpoint")
        page_size = await storage.db.fetchval("PRAGMA page_size")
        # 3,000 rows fill far more than one log's worth; a checkpoint lets the log start over.
        assert wal.stat().st_size < 3 * pages * page_size
        assert await storage.db.fetchval("SELECT COUNT(*) FROM message") == 3000
    finally:
        raw.set_trace_callback(None)
        await storage.close()


async def test_closing_lets_a_checkpoint_handed_to_the_thread_finish(tmp_path, caplog):
    storage = await _with_portal(tmp_path)
    pages = await storage.db.fetchval("PRAGMA wal_autocheckpoint")
    # The last of these hands a checkpoint to the thread, and the bridge stops at once.
    for i in range(pages // sqlite_conn.PAGES_PER_CHANGE):
        await storage.messages.insert(_map_row(i))
    await storage.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    reopened = await open_database(f"sqlite:{tmp_path / 'relayforge.db'}")
    try:
        assert await reopened.db.fetchval("SELECT COUNT(*) FROM message") == (
            pages // sqlite_conn.PAGES_PER_CHANGE)
    finally:
        await reopened.close()
