"""send_channel and held_send: where a persona has sent before, and first sends waiting for
the person's confirmation."""

from __future__ import annotations

import time

import attrs
from mautrix.util.async_db import Database


@attrs.frozen
class HeldSend:
    event_id: str
    room_id: str
    sender: str
    persona_id: str
    channel: str


class FirstSendStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def required(self, persona_id: str, channel: str) -> bool:
        """Does this send need confirming: the profile asks for it and it is the first?"""
        row = await self.db.fetchrow(
            "SELECT pr.confirm_first_send AS confirm FROM persona pe JOIN profile pr "
            "ON pr.id = pe.profile_id WHERE pe.id=$1", persona_id)
        if row is None or not row["confirm"]:
            return False
        seen = await self.db.fetchval(
            "SELECT 1 FROM send_channel WHERE persona_id=$1 AND channel=$2",
            persona_id, channel)
        return seen is None

    async def mark_sent(self, persona_id: str, channel: str) -> None:
        await self.db.execute(
            "INSERT INTO send_channel (persona_id, channel) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING", persona_id, channel)

    async def hold(self, held: HeldSend) -> None:
        await self.db.execute(
            "INSERT INTO held_send (event_id, room_id, sender, persona_id, channel, created_at) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            *attrs.astuple(held), int(time.time() * 1000))

    async def oldest(self, sender: str) -> HeldSend | None:
        row = await self.db.fetchrow(
            "SELECT event_id, room_id, sender, persona_id, channel FROM held_send "
            "WHERE sender=$1 ORDER BY created_at LIMIT 1", sender)
        return HeldSend(**row) if row else None

    async def release(self, event_id: str) -> None:
        await self.db.execute("DELETE FROM held_send WHERE event_id=$1", event_id)

    async def set_setting(self, profile_id: str, on: bool) -> None:
        await self.db.execute("UPDATE profile SET confirm_first_send=$2 WHERE id=$1",
                              profile_id, on)
