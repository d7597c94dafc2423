"""message: remote message id <-> Matrix event id, per portal."""

from __future__ import annotations

import time
from enum import StrEnum

import attrs
from mautrix.types import EventID, RoomID, UserID
from mautrix.util.async_db import Database

from .sqlite_conn import on_the_loop

#: `MessageStore.before_relaying` as columns of a query whose `$1` is the event id, so a
#: statement written anyway (the event's outbound row) can answer it in the same round trip.
BEFORE_RELAYING = ("EXISTS (SELECT 1 FROM message WHERE mxid=$1) AS relayed, "
                   "(SELECT grant_id FROM agent_act WHERE event_id=$1) AS grant_id")


class MessageKind(StrEnum):
    MESSAGE = "message"
    REACTION = "reaction"


@attrs.define
class MessageRow:
    network: str
    remote_room: str
    remote_id: str
    kind: MessageKind
    mxid: EventID
    room_mxid: RoomID
    sender_mxid: UserID
    timestamp: int = attrs.field(factory=lambda: int(time.time() * 1000))
    # The id the remote room gave the message apart from `remote_id` (an XMPP MUC's
    # stanza-id): what replies, reactions and retractions there name.
    room_ref: str | None = None

    @classmethod
    def from_row(cls, row: dict) -> MessageRow:
        return cls(**{**dict(row), "kind": MessageKind(row["kind"])})


_COLUMNS = ("network, remote_room, remote_id, kind, mxid, room_mxid, sender_mxid, timestamp, "
            "room_ref")

# Each relayed message makes some of these; each finds its row by a key or a unique index.
_INSERT = on_the_loop(
    f"INSERT INTO message ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
    "ON CONFLICT DO NOTHING RETURNING mxid")
# Each arm uses its own index (an OR would scan the room's rows), and the room's own id wins.
_BY_REMOTE = on_the_loop(
    f"SELECT {_COLUMNS} FROM ("
    f"SELECT 0 AS pick, {_COLUMNS} FROM message "
    "WHERE network=$1 AND remote_room=$2 AND room_ref=$3 UNION ALL "
    f"SELECT 1 AS pick, {_COLUMNS} FROM message "
    "WHERE network=$1 AND remote_room=$2 AND remote_id=$3) AS found "
    "ORDER BY pick LIMIT 1")
_BY_MXID = on_the_loop(f"SELECT {_COLUMNS} FROM message WHERE mxid=$1")
_BEFORE_RELAYING = on_the_loop(f"SELECT {BEFORE_RELAYING}")


class MessageStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, row: MessageRow) -> bool:
        """Record a mapping; False if either side was already mapped (a duplicate delivery)."""
        result = await self.db.fetchval(
            _INSERT, row.network, row.remote_room, row.remote_id, row.kind.value, row.mxid,
            row.room_mxid, row.sender_mxid, row.timestamp, row.room_ref,
        )
        return result is not None

    async def get_by_remote(self, network: str, remote_room: str, remote_id: str
                            ) -> MessageRow | None:
        """The message the room knows by `remote_id`: its own id for it (`room_ref`) first,
        since a sender chooses their message ids and could reuse one the room gave."""
        # One round trip, on every new message.
        row = await self.db.fetchrow(_BY_REMOTE, network, remote_room, remote_id)
        return MessageRow.from_row(row) if row else None

    async def get_by_mxid(self, mxid: EventID) -> MessageRow | None:
        row = await self.db.fetchrow(_BY_MXID, mxid)
        return MessageRow.from_row(row) if row else None

    async def before_relaying(self, mxid: EventID) -> tuple[bool, str | None]:
        """What relaying a Matrix event first needs to know, in one round trip (it is on the
        way of every message a person sends): whether it was relayed before (its
        transaction came again), and which of the person's agents asked for it (agent_act's
        grant), if one did."""
        row = await self.db.fetchrow(_BEFORE_RELAYING, mxid)
        return bool(row["relayed"]), row["grant_id"]

    async def latest_timestamp(self, network: str, remote_room: str) -> int | None:
        """When the newest message known from a remote room was bridged (ms)."""
        return await self.db.fetchval(
            "SELECT MAX(timestamp) FROM message WHERE network=$1 AND remote_room=$2",
            network, remote_room)

    async def delete(self, mxid: EventID) -> None:
        await self.db.execute("DELETE FROM message WHERE mxid=$1", mxid)
