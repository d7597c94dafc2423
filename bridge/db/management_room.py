"""management_room: the DM each person uses to talk to the bot (no command prefix there)."""

from __future__ import annotations

from mautrix.types import RoomID, UserID
from mautrix.util.async_db import Database


class ManagementRoomStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, user: UserID) -> RoomID | None:
        return await self.db.fetchval(
            "SELECT room_id FROM management_room WHERE user_mxid=$1", user
        )

    async def set(self, user: UserID, room_id: RoomID) -> None:
        await self.db.execute(
            "INSERT INTO management_room (user_mxid, room_id) VALUES ($1, $2) "
            "ON CONFLICT (user_mxid) DO UPDATE SET room_id=excluded.room_id",
            user, room_id,
        )


    async def users(self) -> list[UserID]:
        """Everyone who has a management room (to find the admins among them)."""
        rows = await self.db.fetch("SELECT user_mxid FROM management_room ORDER BY user_mxid")
        return [UserID(row["user_mxid"]) for row in rows]

    async def is_management_room(self, room_id: RoomID) -> bool:
        return bool(await self.db.fetchval(
            "SELECT COUNT(*) FROM management_room WHERE room_id=$1", room_id))

    async def delete(self, user: UserID) -> None:
        await self.db.execute("DELETE FROM management_room WHERE user_mxid=$1", user)
