"""A worker's own PostgreSQL connection: it holds the worker's name, so two processes cannot run
as the same worker, and it listens for what the other workers announce (LISTEN/NOTIFY).

The name is a session-level advisory lock: PostgreSQL drops it the moment the connection
ends, however the process ended, so a worker restarted after a crash gets its name back at
once while a second process with the same name is refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from mautrix.util.async_db import Database, Scheme

from .lease import advisory_key

log = logging.getLogger("relayforge.workers")

CHANNEL = "relayforge_workers"
MAX_PAYLOAD = 7000  # PostgreSQL's NOTIFY takes at most 8000 bytes


class WorkerLink:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._conn: asyncpg.Connection | None = None
        self._name: str | None = None
        self._on_message: Callable[[str], None] | None = None
        self.on_lost: Callable[[], None] | None = None

    async def open(self, worker_id: str, on_message: Callable[[str], None]) -> bool:
        """Connect, take the worker's name and listen; False if a live process has the name."""
        self._name, self._on_message = worker_id, on_message
        self._conn = await asyncpg.connect(str(self.db.url))
        if not await self._conn.fetchval("SELECT pg_try_advisory_lock($1)",
                                         advisory_key(f"worker:{worker_id}")):
            await self._conn.close()
            self._conn = None
            return False
        await self._conn.add_listener(CHANNEL, self._received)
        self._conn.add_termination_listener(self._terminated)
        return True

    def _received(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if self._on_message is not None:
            self._on_message(payload)

    def _terminated(self, _conn: Any) -> None:
        if self._conn is not None:  # not closed by us
            log.warning("The worker's own connection to PostgreSQL ended")
            if self.on_lost is not None:
                self.on_lost()

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def reopen(self) -> bool:
        """After the connection was lost (a database restart): connect and listen again."""
        if self._conn is not None and not self._conn.is_closed():
            return True
        self._conn = None
        assert self._name is not None and self._on_message is not None
        return await self.open(self._name, self._on_message)

    async def publish(self, payload: str) -> None:
        if len(payload.encode()) > MAX_PAYLOAD:
            raise ValueError("worker announcement too long")
        await self.db.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 5)
            except (TimeoutError, OSError, asyncpg.PostgresError):
                conn.terminate()


@asynccontextmanager
async def one_migration_at_a_time(db: Database) -> AsyncIterator[None]:
    """Workers started together on one PostgreSQL database upgrade its schema one after the
    other: the first migrates, the rest find it done (SQLite has one process: no-op)."""
    if db.scheme == Scheme.SQLITE:
        yield
        return
    conn = await asyncpg.connect(str(db.url))
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", advisory_key("relayforge:migrate"))
        yield
    finally:
        await conn.close()  # ends the session, and with it the lock
