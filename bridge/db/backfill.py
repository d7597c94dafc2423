"""backfill_state: how far each portal's history has been brought into Matrix.

One row per portal: the cursor of the newest remote event the history path sent (where a
catch-up after downtime starts), and, while a backfill runs, how many messages it may still
send, so a bridge that crashed in the middle resumes it instead of starting over."""

from __future__ import annotations

import fnmatch
import re
import time

import attrs
from mautrix.util.async_db import Database

RUNNING = "running"
DONE = "done"


@attrs.frozen
class BackfillState:
    network: str
    remote_room: str
    persona_id: str
    status: str
    # The history cursor: the original time (ms) of the newest event sent, and the
    # network's own position of it, when it has one.
    cursor_ts: int | None
    cursor_token: str | None
    # Messages this run may still send, and how many it has sent.
    remaining: int
    sent: int
    # "initial" (a new portal) or "catch_up" (after downtime).
    kind: str
    updated_at: int = 0


class BackfillStore:
    _columns = ("network, remote_room, persona_id, status, cursor_ts, cursor_token, "
                "remaining, sent, kind, updated_at")

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, network: str, remote_room: str) -> BackfillState | None:
        row = await self.db.fetchrow(
            f"SELECT {self._columns} FROM backfill_state WHERE network=$1 AND remote_room=$2",
            network, remote_room)
        return BackfillState(**dict(row)) if row else None

    async def running(self) -> list[BackfillState]:
        """Backfills a crash or a stop interrupted, oldest first."""
        rows = await self.db.fetch(
            f"SELECT {self._columns} FROM backfill_state WHERE status=$1 ORDER BY updated_at",
            RUNNING)
        return [BackfillState(**dict(row)) for row in rows]

    async def put(self, state: BackfillState) -> None:
        await self.db.execute(
            f"INSERT INTO backfill_state ({self._columns}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
            "ON CONFLICT (network, remote_room) DO UPDATE SET persona_id=excluded.persona_id, "
            "status=excluded.status, cursor_ts=excluded.cursor_ts, "
            "cursor_token=excluded.cursor_token, remaining=excluded.remaining, "
            "sent=excluded.sent, kind=excluded.kind, updated_at=excluded.updated_at",
            state.network, state.remote_room, state.persona_id, state.status, state.cursor_ts,
            state.cursor_token, state.remaining, state.sent, state.kind,
            int(time.time() * 1000))

    async def pattern_portals(self, network: str, pattern: str, rule_id: str,
                              persona_id: str) -> list[tuple[str, str | None]]:
        """(remote id, name) of the portals of `network` with a Matrix room that a pattern
        rule covers: brought in by it, or with a remote id `pattern` (fnmatch) matches;
        shared rooms, or direct chats of `persona_id` only."""
        prefix = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
        like = re.sub(r"([\\%_])", r"\\\1", prefix) + "%"
        rows = await self.db.fetch(
            "SELECT remote_id, name, rule_id FROM portal WHERE network=$1 AND mxid IS NOT NULL "
            "AND (receiver IS NULL OR receiver=$4) "
            "AND (rule_id=$2 OR remote_id LIKE $3 ESCAPE '\\') "
            "ORDER BY remote_id", network, rule_id, like, persona_id)
        return [(row["remote_id"], row["name"]) for row in rows
                if row["rule_id"] == rule_id or fnmatch.fnmatchcase(row["remote_id"], pattern)]

    async def forget_persona(self, persona_id: str) -> None:
        await self.db.execute("DELETE FROM backfill_state WHERE persona_id=$1", persona_id)
