"""held_message and its children: what a legal hold keeps of a message (every version, its
deletion, reactions, attachments). Content columns hold only ciphertext, sealed by
`bridge.compliance.archive`; this module never sees plaintext."""

from __future__ import annotations

import time

import attrs
from mautrix.util.async_db import Database

#: True for a row of the `message` map (the table named `message`, unaliased) whose message or
#: reaction an ACTIVE hold keeps: retention must leave those rows, or later edits and deletions
#: of held messages could not be matched. Use as `... AND NOT (MESSAGE_ROW_HELD)`.
MESSAGE_ROW_HELD = (
    "EXISTS (SELECT 1 FROM held_message h JOIN held_message_hold c ON c.message_id = h.id "
    "JOIN legal_hold l ON l.id = c.hold_id WHERE l.released_at IS NULL "
    "AND h.network = message.network AND h.remote_room = message.remote_room "
    "AND (h.remote_id = message.remote_id OR h.mxid = message.mxid)) "
    "OR EXISTS (SELECT 1 FROM held_reaction r JOIN held_message_hold c "
    "ON c.message_id = r.message_id JOIN legal_hold l ON l.id = c.hold_id "
    "WHERE l.released_at IS NULL AND r.network = message.network "
    "AND r.remote_room = message.remote_room "
    "AND (r.remote_id = message.remote_id OR r.mxid = message.mxid))")


@attrs.define
class HeldMessage:
    id: str
    network: str
    remote_room: str
    remote_id: str
    room_ref: str | None
    room_mxid: str | None
    mxid: str | None
    workspace: str | None
    side: str
    sender_remote: str | None
    sender_name: str | None
    sender_mxid: str | None
    persona_id: str | None
    reply_to: str | None
    thread_root: str | None
    remote_ts: int | None
    matrix_ts: int | None
    captured_at: int = attrs.field(factory=lambda: int(time.time() * 1000))
    deleted_at: int | None = None
    deleted_by: str | None = None
    deleted_side: str | None = None
    deletion_mxid: str | None = None


@attrs.define
class HeldVersion:
    message_id: str
    seq: int
    remote_id: str | None
    mxid: str | None
    side: str
    remote_ts: int | None
    matrix_ts: int | None
    nonce: bytes
    ciphertext: bytes


@attrs.define
class HeldReaction:
    id: str
    message_id: str
    network: str
    remote_room: str
    remote_id: str | None
    mxid: str | None
    side: str
    sender_remote: str | None
    sender_mxid: str | None
    remote_ts: int | None
    matrix_ts: int | None
    nonce: bytes
    ciphertext: bytes
    removed_at: int | None = None
    removed_by: str | None = None
    removed_side: str | None = None


@attrs.define
class HeldAttachment:
    message_id: str
    sha256: str
    size: int
    nonce: bytes
    ciphertext: bytes


_MESSAGE = ", ".join(a.name for a in attrs.fields(HeldMessage))
_VERSION = ", ".join(a.name for a in attrs.fields(HeldVersion))
_REACTION = ", ".join(a.name for a in attrs.fields(HeldReaction))
_ATTACHMENT = ", ".join(a.name for a in attrs.fields(HeldAttachment))


def _marks(count: int) -> str:
    return ", ".join(f"${i}" for i in range(1, count + 1))


def _bytes(row: dict) -> dict:
    # PostgreSQL gives bytes, SQLite may give memoryview-like values.
    return {k: bytes(v) if isinstance(v, bytes | bytearray | memoryview) else v
            for k, v in dict(row).items()}


class HeldStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- messages ---------------------------------------------------------------------------

    async def add_message(self, message: HeldMessage, hold_ids: list[str]) -> HeldMessage:
        """Record a message (or find the one already recorded) and link it to `hold_ids`."""
        async with self.db.acquire() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO held_message ({_MESSAGE}) VALUES ({_marks(22)}) "
                "ON CONFLICT DO NOTHING", *attrs.astuple(message))
            row = await conn.fetchrow(
                f"SELECT {_MESSAGE} FROM held_message WHERE network=$1 AND remote_room=$2 "
                "AND remote_id=$3", message.network, message.remote_room, message.remote_id)
            held = HeldMessage(**row)
            for hold_id in hold_ids:
                await conn.execute("INSERT INTO held_message_hold (message_id, hold_id) "
                                   "VALUES ($1, $2) ON CONFLICT DO NOTHING", held.id, hold_id)
        return held

    async def find(self, network: str, remote_room: str, ref: str | None,
                   mxid: str | None = None) -> HeldMessage | None:
        """The held message a network id (its own or the room's), or a Matrix event id, names."""
        if ref:
            row = await self.db.fetchrow(
                f"SELECT {_MESSAGE} FROM held_message WHERE network=$1 AND remote_room=$2 "
                "AND (room_ref=$3 OR remote_id=$3) "
                "ORDER BY CASE WHEN room_ref=$3 THEN 0 ELSE 1 END LIMIT 1",
                network, remote_room, ref)
            if row:
                return HeldMessage(**row)
        if mxid:
            row = await self.db.fetchrow(f"SELECT {_MESSAGE} FROM held_message WHERE mxid=$1",
                                         mxid)
            if row:
                return HeldMessage(**row)
        return None

    async def mark_deleted(self, message_id: str, at: int, by: str | None, side: str,
                           deletion_mxid: str | None) -> None:
        """The first deletion counts; a second one (its echo from the other side) is ignored."""
        await self.db.execute(
            "UPDATE held_message SET deleted_at=$2, deleted_by=$3, deleted_side=$4, "
            "deletion_mxid=$5 WHERE id=$1 AND deleted_at IS NULL",
            message_id, at, by, side, deletion_mxid)

    async def of_hold(self, hold_id: str) -> list[HeldMessage]:
        rows = await self.db.fetch(
            f"SELECT {', '.join('h.' + c for c in _MESSAGE.split(', '))} FROM held_message h "
            "JOIN held_message_hold c ON c.message_id = h.id WHERE c.hold_id=$1 "
            "ORDER BY COALESCE(h.remote_ts, h.matrix_ts, h.captured_at), h.id", hold_id)
        return [HeldMessage(**row) for row in rows]

    async def count_of_hold(self, hold_id: str) -> int:
        return await self.db.fetchval(
            "SELECT COUNT(*) FROM held_message_hold WHERE hold_id=$1", hold_id) or 0

    async def holds_of(self, message_id: str) -> list[str]:
        rows = await self.db.fetch("SELECT hold_id FROM held_message_hold WHERE message_id=$1",
                                   message_id)
        return [row["hold_id"] for row in rows]

    # ---- versions ---------------------------------------------------------------------------

    async def add_version(self, version: HeldVersion) -> int:
        """Append a version; its `seq` is chosen here (the next one). Returns it."""
        async with self.db.acquire() as conn, conn.transaction():
            seq = await conn.fetchval(
                "SELECT COALESCE(MAX(seq), -1) + 1 FROM held_version WHERE message_id=$1",
                version.message_id)
            version = attrs.evolve(version, seq=seq)
            await conn.execute(f"INSERT INTO held_version ({_VERSION}) VALUES ({_marks(9)})",
                               *attrs.astuple(version))
        return seq

    async def versions(self, message_id: str) -> list[HeldVersion]:
        rows = await self.db.fetch(
            f"SELECT {_VERSION} FROM held_version WHERE message_id=$1 ORDER BY seq", message_id)
        return [HeldVersion(**_bytes(row)) for row in rows]

    async def has_version(self, message_id: str, remote_id: str | None,
                          mxid: str | None) -> bool:
        """Whether this edit is recorded already (the same edit seen from both sides)."""
        found = await self.db.fetchval(
            "SELECT seq FROM held_version WHERE message_id=$1 AND ((remote_id IS NOT NULL AND "
            "remote_id=$2) OR (mxid IS NOT NULL AND mxid=$3)) LIMIT 1",
            message_id, remote_id, mxid)
        return found is not None

    # ---- reactions --------------------------------------------------------------------------

    async def add_reaction(self, reaction: HeldReaction) -> None:
        await self.db.execute(f"INSERT INTO held_reaction ({_REACTION}) VALUES ({_marks(16)}) "
                              "ON CONFLICT DO NOTHING", *attrs.astuple(reaction))

    async def find_reaction(self, network: str, remote_room: str, ref: str | None,
                            mxid: str | None) -> HeldReaction | None:
        row = await self.db.fetchrow(
            f"SELECT {_REACTION} FROM held_reaction WHERE network=$1 AND remote_room=$2 AND "
            "((remote_id IS NOT NULL AND remote_id=$3) OR (mxid IS NOT NULL AND mxid=$4)) "
            "LIMIT 1", network, remote_room, ref, mxid)
        return HeldReaction(**_bytes(row)) if row else None

    async def mark_reaction_removed(self, reaction_id: str, at: int, by: str | None,
                                    side: str) -> None:
        await self.db.execute(
            "UPDATE held_reaction SET removed_at=$2, removed_by=$3, removed_side=$4 "
            "WHERE id=$1 AND removed_at IS NULL", reaction_id, at, by, side)

    async def reactions(self, message_id: str) -> list[HeldReaction]:
        rows = await self.db.fetch(
            f"SELECT {_REACTION} FROM held_reaction WHERE message_id=$1 "
            "ORDER BY COALESCE(remote_ts, matrix_ts), id", message_id)
        return [HeldReaction(**_bytes(row)) for row in rows]

    # ---- attachments ------------------------------------------------------------------------

    async def add_attachment(self, attachment: HeldAttachment) -> None:
        await self.db.execute(
            f"INSERT INTO held_attachment ({_ATTACHMENT}) VALUES ({_marks(5)}) "
            "ON CONFLICT DO NOTHING", *attrs.astuple(attachment))

    async def attachment(self, message_id: str, sha256: str) -> HeldAttachment | None:
        row = await self.db.fetchrow(
            f"SELECT {_ATTACHMENT} FROM held_attachment WHERE message_id=$1 AND sha256=$2",
            message_id, sha256)
        return HeldAttachment(**_bytes(row)) if row else None

    # ---- retention --------------------------------------------------------------------------

    async def purge_unheld(self, before_ms: int) -> int:
        """Delete held messages captured before `before_ms` that no active hold covers (with
        their versions, reactions and attachments); returns how many messages went."""
        async with self.db.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id FROM held_message h WHERE captured_at < $1 AND NOT EXISTS ("
                "SELECT 1 FROM held_message_hold c JOIN legal_hold l ON l.id = c.hold_id "
                "WHERE c.message_id = h.id AND l.released_at IS NULL)", before_ms)
            ids = [row["id"] for row in rows]
            for message_id in ids:
                for table in ("held_version", "held_reaction", "held_attachment",
                              "held_message_hold"):
                    await conn.execute(f"DELETE FROM {table} WHERE message_id=$1", message_id)
                await conn.execute("DELETE FROM held_message WHERE id=$1", message_id)
        return len(ids)
