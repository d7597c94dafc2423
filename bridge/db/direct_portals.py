"""The direct-chat portals of one persona: which of its 1:1 conversations have a Matrix room
(so a reconnect catches those up too, not only the rooms its rules map), and of every
persona that receives (caught up at start)."""

from __future__ import annotations

from collections.abc import Iterable

from mautrix.util.async_db import Database

from .persona import PersonaStatus
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

    async def receiving(self, statuses: Iterable[PersonaStatus]
                        ) -> list[tuple[Portal, str]]:
        """Every direct-chat portal with a Matrix room whose persona (still there) has one of
        `statuses`, with that persona's id, oldest first (catching up at start): one query,
        the persona joined in."""
        wanted = [s.value for s in statuses]
        if not wanted:
            return []
        columns = ", ".join(f"portal.{c}" for c in PortalStore._columns.split(", "))
        marks = ", ".join(f"${i}" for i in range(1, len(wanted) + 1))
        rows = await self.db.fetch(
            f"SELECT {columns} FROM portal JOIN persona ON persona.id = portal.receiver "
            "WHERE portal.mxid IS NOT NULL AND portal.rule_id IS NULL "
            f"AND persona.status IN ({marks}) "
            "ORDER BY portal.created_at, portal.remote_id", *wanted)
        return [(Portal(**dict(row)), row["receiver"]) for row in rows]
