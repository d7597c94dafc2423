"""encryption_notice: the rooms already told that the bridge cannot read encrypted messages.

Kept in the database so a restart does not say it again."""

from __future__ import annotations

import time

from mautrix.types import RoomID
from mautrix.util.async_db import Database


class EncryptionNoticeStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def first_time(self, room_id: RoomID) -> bool:
        """Record that the room is being told; True only the first time for that room."""
        told = await self.db.fetchval(
            "INSERT INTO encryption_notice (room_mxid, told_at) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING RETURNING room_mxid",
            room_id, int(time.time() * 1000))
        return told is not None
