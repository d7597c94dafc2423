"""The direct-chat portals of one persona: which of its 1:1 conversations have a Matrix room
(so a reconnect catches those up too, not only the rooms its rules map)."""

from __future__ import annotations

from mautrix.util.async_db import Database

from .portal import Portal, PortalStore


class DirectPortals:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def of_persona(self, persona_id: str, network: str) -> list[Portal]:
        """Portals with a Matrix room whose direct chat belongs to `persona_id` on `network`,
        oldest first. A portal a rule maps is not a direct chat, even if it noted a receiver."""
        rows = await self.db.fetch(
            f"SELECT {PortalStore._columns} FROM portal WHERE receiver=$1 AND network=$2 "
            "AND mxid IS NOT NULL AND rule_id IS NULL ORDER BY created_at, remote_id",
            persona_id, network)
        return [Portal(**dict(row)) for row in rows]

    async def all(self) -> list[Portal]:
        """Every direct-chat portal with a Matrix room, oldest first (catching up at start)."""
        rows = await self.db.fetch(
            f"SELECT {PortalStore._columns} FROM portal WHERE receiver IS NOT NULL "
            "AND mxid IS NOT NULL AND rule_id IS NULL ORDER BY created_at, remote_id")
        return [Portal(**dict(row)) for row in rows]
