"""bridge_worker and lease: which bridge process ("worker") owns what, when several share one
PostgreSQL database (core/workers.py).

A worker row carries a heartbeat: the worker is alive while `expires_at` is in the future. A
lease names a resource ("room:!abc:example.org", "persona:...") and the worker that owns it;
it is valid while its owner is alive, so one heartbeat renews every lease a worker holds, and
a worker that dies loses them all at once, to whoever claims them next. Times come from the
database's clock, so the workers' own clocks need not agree.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
from mautrix.util.async_db import Database, Scheme

from .outbound import OutboundState

QUEUED = OutboundState.QUEUED.value

_PG_NOW = "(extract(epoch from clock_timestamp()) * 1000)::bigint"
_SQLITE_NOW = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"

ROOM = "room:"
PERSONA = "persona:"
NETWORK = "network:"


@attrs.frozen
class WorkerRow:
    worker_id: str
    mode: str  # "single" (the only process) or "shared" (one of several)
    started_at: int
    heartbeat_at: int
    expires_at: int


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for PostgreSQL's advisory locks."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class LeaseStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.now = _SQLITE_NOW if db.scheme == Scheme.SQLITE else _PG_NOW
        # A lease is valid while a live worker owns it.
        self._owner_alive = (f"EXISTS (SELECT 1 FROM bridge_worker w WHERE "
                             f"w.worker_id = lease.owner AND w.expires_at > {self.now})")

    # ---- workers ------------------------------------------------------------------------------

    async def heartbeat(self, worker_id: str, lease_ms: int, mode: str) -> bool:
        """Renew the worker's life for `lease_ms`; False when it had lapsed (others may have
        taken over some of its leases meanwhile) or it is new."""
        async with self.db.acquire() as conn, conn.transaction():
            alive = await conn.fetchval(
                f"SELECT expires_at > {self.now} FROM bridge_worker WHERE worker_id=$1",
                worker_id)
            await conn.execute(
                f"INSERT INTO bridge_worker (worker_id, mode, started_at, heartbeat_at, "
                f"expires_at) VALUES ($1, $3, {self.now}, {self.now}, {self.now} + $2) "
                f"ON CONFLICT (worker_id) DO UPDATE SET mode=excluded.mode, "
                f"heartbeat_at=excluded.heartbeat_at, expires_at=excluded.expires_at",
                worker_id, lease_ms, mode)
        return bool(alive)

    async def alive_workers(self) -> list[WorkerRow]:
        rows = await self.db.fetch(
            f"SELECT worker_id, mode, started_at, heartbeat_at, expires_at FROM bridge_worker "
            f"WHERE expires_at > {self.now} ORDER BY worker_id")
        return [WorkerRow(**r) for r in rows]

    async def retire(self, worker_id: str) -> None:
        """An orderly stop: give up every lease at once, for the others to take."""
        async with self.db.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM lease WHERE owner=$1", worker_id)
            await conn.execute("DELETE FROM bridge_worker WHERE worker_id=$1", worker_id)

    async def prune_dead(self, older_than_ms: int) -> int:
        """Forget workers dead for longer than `older_than_ms`, and their leases, so the
        tables do not grow with every worker that ever ran."""
        async with self.db.acquire() as conn, conn.transaction():
            dead = [r["worker_id"] for r in await conn.fetch(
                f"SELECT worker_id FROM bridge_worker WHERE expires_at < {self.now} - $1",
                older_than_ms)]
            for worker_id in dead:
                await conn.execute("DELETE FROM lease WHERE owner=$1", worker_id)
                await conn.execute("DELETE FROM bridge_worker WHERE worker_id=$1", worker_id)
        return len(dead)

    # ---- leases -------------------------------------------------------------------------------

    async def claim(self, resource: str, worker_id: str) -> bool:
        """Own `resource` if it is free, already ours, or its owner is dead. Race-free: two
        workers claiming together both go through the row's conflict, and only one of them
        finds it claimable."""
        owner = await self.db.fetchval(
            f"INSERT INTO lease (resource, owner, taken_at) VALUES ($1, $2, {self.now}) "
            f"ON CONFLICT (resource) DO UPDATE SET owner=excluded.owner, "
            f"taken_at=excluded.taken_at WHERE lease.owner = excluded.owner "
            f"OR NOT {self._owner_alive} RETURNING owner", resource, worker_id)
        return owner == worker_id

    async def owner(self, resource: str) -> str | None:
        """The live worker that owns `resource`, if any."""
        return await self.db.fetchval(
            f"SELECT owner FROM lease WHERE resource=$1 AND {self._owner_alive}", resource)

    async def release(self, resource: str, worker_id: str) -> None:
        await self.db.execute("DELETE FROM lease WHERE resource=$1 AND owner=$2",
                              resource, worker_id)

    async def held_by(self, worker_id: str, prefix: str) -> list[str]:
        rows = await self.db.fetch(
            "SELECT resource FROM lease WHERE owner=$1 AND resource LIKE $2 ORDER BY resource",
            worker_id, prefix + "%")
        return [r["resource"][len(prefix):] for r in rows]

    async def count_held(self, prefix: str) -> dict[str, int]:
        """How many live leases of a kind each live worker holds (for a fair share)."""
        rows = await self.db.fetch(
            f"SELECT owner, COUNT(*) AS n FROM lease WHERE resource LIKE $1 AND "
            f"{self._owner_alive} GROUP BY owner", prefix + "%")
        return {r["owner"]: r["n"] for r in rows}

    async def unowned_rooms_waiting(self) -> list[tuple[str, str]]:
        """(room, network) of rooms with events waiting in the outbound queue and no live
        worker holding the room: a dead worker's rooms, or rooms nobody has claimed yet."""
        rows = await self.db.fetch(
            f"SELECT DISTINCT room_mxid, network FROM outbound WHERE state='{QUEUED}' AND "
            f"NOT EXISTS (SELECT 1 FROM lease WHERE lease.resource = '{ROOM}' || "
            f"outbound.room_mxid AND {self._owner_alive})")
        return [(r["room_mxid"], r["network"]) for r in rows]

    # ---- one at a time across workers (PostgreSQL) --------------------------------------------

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[None]:
        """Hold `name` against every other worker (a PostgreSQL advisory lock on a connection
        of its own, released however the holder ends). SQLite has one worker: no-op."""
        if self.db.scheme == Scheme.SQLITE:
            yield
            return
        key = advisory_key(name)
        async with self.db.acquire_direct() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", key)
            try:
                yield
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", key)
