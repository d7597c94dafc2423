"""legal_hold: what an admin put on hold (a custodian, a room or a workspace), and when it
was released. Rows are never deleted: a released hold stays as the record of what was held."""

from __future__ import annotations

import time
from enum import StrEnum

import attrs
from mautrix.util.async_db import Database


class HoldScope(StrEnum):
    ACCOUNT = "account"      # a custodian's bridge account: all of their Matrix users and personas
    USER = "user"            # a custodian's Matrix user
    ROOM = "room"            # a portal room (remote room id or Matrix room id)
    WORKSPACE = "workspace"  # a Slack team, Discord guild, XMPP MUC service, Telegram chat


@attrs.define
class Hold:
    id: str
    name: str
    reason: str | None
    scope: HoldScope
    network: str | None
    target: str
    starts_at: int | None
    ends_at: int | None
    created_by: str
    created_at: int = attrs.field(factory=lambda: int(time.time() * 1000))
    released_by: str | None = None
    released_at: int | None = None

    @property
    def active(self) -> bool:
        return self.released_at is None

    def covers_time(self, ts_ms: int) -> bool:
        return ((self.starts_at is None or ts_ms >= self.starts_at)
                and (self.ends_at is None or ts_ms <= self.ends_at))


_COLUMNS = ("id, name, reason, scope, network, target, starts_at, ends_at, created_by, "
            "created_at, released_by, released_at")


def _hold(row: dict) -> Hold:
    return Hold(**{**dict(row), "scope": HoldScope(row["scope"])})


class HoldStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, hold: Hold) -> bool:
        """False when a hold of that name exists (released ones too: names stay unique)."""
        added = await self.db.fetchval(
            f"INSERT INTO legal_hold ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
            "$10, $11, $12) ON CONFLICT DO NOTHING RETURNING id",
            hold.id, hold.name, hold.reason, hold.scope.value, hold.network, hold.target,
            hold.starts_at, hold.ends_at, hold.created_by, hold.created_at, hold.released_by,
            hold.released_at)
        return added is not None

    async def by_name(self, name: str) -> Hold | None:
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM legal_hold WHERE name=$1", name)
        return _hold(row) if row else None

    async def all(self, *, active_only: bool = False) -> list[Hold]:
        where = " WHERE released_at IS NULL" if active_only else ""
        rows = await self.db.fetch(f"SELECT {_COLUMNS} FROM legal_hold{where} "
                                   "ORDER BY created_at, name")
        return [_hold(row) for row in rows]

    async def release(self, hold_id: str, by: str) -> bool:
        """False when it was released already."""
        done = await self.db.fetchval(
            "UPDATE legal_hold SET released_by=$2, released_at=$3 "
            "WHERE id=$1 AND released_at IS NULL RETURNING id",
            hold_id, by, int(time.time() * 1000))
        return done is not None

    async def active_for_targets(self, scopes: list[HoldScope], targets: list[str]) -> bool:
        """Whether an active hold of one of `scopes` names one of `targets`."""
        if not targets or not scopes:
            return False
        scope_marks = ", ".join(f"${i + 1}" for i in range(len(scopes)))
        target_marks = ", ".join(f"${i + 1 + len(scopes)}" for i in range(len(targets)))
        found = await self.db.fetchval(
            f"SELECT id FROM legal_hold WHERE released_at IS NULL AND scope IN ({scope_marks}) "
            f"AND target IN ({target_marks}) LIMIT 1",
            *[s.value for s in scopes], *targets)
        return found is not None
