"""portal: a remote room and the Matrix room that mirrors it, and whose conversation it is.

A direct chat is one persona's conversation: its `receiver` is that persona, and only that
persona acts in it (mautrix's portal key with a receiver). Connectors name a direct chat so
that its remote id differs per receiving account (XMPP "own jid|contact", Slack "team/D..."),
so the row's key stays `(network, remote_id)` and the receiver says who owns it. A room a
mapping rule brought in records that rule (`rule_id`); its persona is the rule's.
"""

from __future__ import annotations

import time

import attrs
from mautrix.types import RoomID
from mautrix.util.async_db import Database


@attrs.define
class Portal:
    network: str
    remote_id: str
    mxid: RoomID | None
    name: str | None
    created_at: int
    # The persona whose direct chat this is; None for shared rooms.
    receiver: str | None = None
    # The mapping rule that brought the room in; None for direct chats.
    rule_id: str | None = None


class PortalStore:
    _columns = "network, remote_id, mxid, name, created_at, receiver, rule_id"

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, network: str, remote_id: str) -> Portal | None:
        row = await self.db.fetchrow(
            f"SELECT {self._columns} FROM portal WHERE network=$1 AND remote_id=$2",
            network, remote_id,
        )
        return Portal(**row) if row else None

    async def get_by_mxid(self, mxid: RoomID) -> Portal | None:
        row = await self.db.fetchrow(
            f"SELECT {self._columns} FROM portal WHERE mxid=$1", mxid
        )
        return Portal(**row) if row else None

    async def insert(self, network: str, remote_id: str, mxid: RoomID, name: str | None,
                     *, receiver: str | None = None, rule_id: str | None = None) -> Portal:
        portal = Portal(network, remote_id, mxid, name, int(time.time() * 1000),
                        receiver, rule_id)
        await self.db.execute(
            f"INSERT INTO portal ({self._columns}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            *attrs.astuple(portal),
        )
        return portal

    async def set_name(self, network: str, remote_id: str, name: str | None) -> None:
        await self.db.execute(
            "UPDATE portal SET name=$3 WHERE network=$1 AND remote_id=$2", network, remote_id, name
        )

    async def claim_receiver(self, network: str, remote_id: str, persona_id: str) -> bool:
        """Record the persona of a direct chat that has none yet (rows from before receivers
        were recorded); False when the row already belongs to someone or to a rule."""
        done = await self.db.fetchval(
            "UPDATE portal SET receiver=$3 WHERE network=$1 AND remote_id=$2 "
            "AND receiver IS NULL AND rule_id IS NULL RETURNING remote_id",
            network, remote_id, persona_id)
        return done is not None

    async def set_rule(self, network: str, remote_id: str, rule_id: str) -> None:
        """A rule maps a room that has no mapping rule yet: the room is now the rule's."""
        await self.db.execute(
            "UPDATE portal SET rule_id=$3 WHERE network=$1 AND remote_id=$2 AND rule_id IS NULL",
            network, remote_id, rule_id)
