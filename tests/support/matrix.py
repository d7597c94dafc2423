"""A Matrix user for tests: a real account on the test Synapse, driven through mautrix's client."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

from mautrix.client import ClientAPI
from mautrix.types import (
    Event,
    EventID,
    EventType,
    MessageType,
    PaginationDirection,
    RoomCreatePreset,
    RoomID,
    TextMessageEventContent,
    UserID,
)

from bridge.sandbox.synapse import LocalSynapse

# How long to wait for something a person would see before the test gives up. This is a
# deadline for failing, not a speed target: the usual wait is a few hundred milliseconds, but
# a homeserver backing off after a bridge restarted (its appservice retry back-off) can hold
# events for tens of seconds on a loaded machine.
DEADLINE = 60.0


#: `after=` default of the waits: only events newer than this user's own last message in the
#: room, so an answer is never confused with an older one of the same kind.
LAST_SENT = EventID("$last-sent")


class MatrixUser:
    def __init__(self, client: ClientAPI) -> None:
        self.client = client
        self.mxid: UserID = client.mxid
        self._last_sent: dict[RoomID, EventID] = {}

    @classmethod
    async def register(cls, synapse: LocalSynapse, prefix: str = "user") -> MatrixUser:
        name = f"{prefix}{secrets.token_hex(4)}"
        info = await asyncio.to_thread(synapse.register_user, name, secrets.token_urlsafe(12))
        client = ClientAPI(UserID(info["user_id"]), base_url=synapse.url,
                           token=info["access_token"])
        return cls(client)

    async def close(self) -> None:
        await self.client.api.session.close()

    async def open_dm(self, other: UserID) -> RoomID:
        # Like Element: a trusted private chat gives both sides moderator rights, so the bot
        # can redact a password sent to it.
        return await self.client.create_room(is_direct=True, invitees=[other],
                                             preset=RoomCreatePreset.TRUSTED_PRIVATE)

    async def open_management_room(self, bot: UserID) -> RoomID:
        """DM the bot and wait for its welcome: the room is then this user's management room."""
        room = await self.open_dm(bot)
        await self.wait_for_notice(room, bot, "management room")
        return room

    async def send_text(self, room_id: RoomID, text: str, **relations: Any) -> EventID:
        content = TextMessageEventContent(msgtype=MessageType.TEXT, body=text)
        if "reply_to" in relations:
            content.set_reply(relations["reply_to"])
        if "edit_of" in relations:
            content.set_edit(relations["edit_of"])
        event_id = await self.client.send_message(room_id, content)
        self._last_sent[room_id] = event_id
        return event_id

    async def mark(self, room_id: RoomID) -> EventID | None:
        """The newest event in the room now: pass it as `after=` to wait only for what an
        action that is not this user's message (a remote event, an API call) causes."""
        events = await self.room_events(room_id, limit=1)
        return events[-1].event_id if events else None

    async def room_events(self, room_id: RoomID, limit: int = 100) -> list[Event]:
        """The room's recent timeline, oldest first."""
        page = await self.client.get_messages(room_id, PaginationDirection.BACKWARD, limit=limit)
        return list(reversed(page.events))

    async def wait_for_event(self, room_id: RoomID, matches: Callable[[Event], bool],
                             what: str, after: EventID | None = LAST_SENT) -> Event:
        """The oldest event matching `matches` newer than `after` (by default this user's own
        last message in the room; None: anything in the recent timeline)."""
        if after == LAST_SENT:
            after = self._last_sent.get(room_id)
        deadline = time.monotonic() + DEADLINE
        while True:
            events = await self.room_events(room_id)
            ids = [event.event_id for event in events]
            # When `after` has scrolled out of the page, everything on it is newer.
            if after in ids:
                events = events[ids.index(after) + 1:]
            for event in events:
                if matches(event):
                    return event
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.mxid} never saw {what} in {room_id}")
            await asyncio.sleep(0.1)

    async def wait_for_notice(self, room_id: RoomID, sender: UserID, contains: str,
                              after: EventID | None = LAST_SENT) -> str:
        event = await self.wait_for_event(
            room_id,
            lambda e: e.type == EventType.ROOM_MESSAGE and e.sender == sender
            and contains in (getattr(e.content, "body", "") or ""),
            f"a message from {sender} containing {contains!r}",
            after=after,
        )
        return event.content.body

    async def notices_from(self, room_id: RoomID, sender: UserID) -> list[str]:
        return [e.content.body for e in await self.room_events(room_id)
                if e.type == EventType.ROOM_MESSAGE and e.sender == sender]

    async def wait_for_invite(self) -> RoomID:
        """Wait for an invite to a room (profile spaces do not count), join it, return its
        id."""
        deadline = time.monotonic() + DEADLINE
        since = None
        joined = set(await self.client.get_joined_rooms())
        while time.monotonic() < deadline:
            response = await self.client.sync(since=since, timeout=2000)
            since = response.get("next_batch")
            for room_id, room in response.get("rooms", {}).get("invite", {}).items():
                if room_id in joined:
                    continue  # a stale invite in a sync that raced our own join
                kinds = [e["content"].get("type") for e in room["invite_state"]["events"]
                         if e["type"] == "m.room.create"]
                if "m.space" in kinds:
                    continue
                await self.client.join_room_by_id(RoomID(room_id))
                return RoomID(room_id)
        raise AssertionError(f"{self.mxid} was never invited to a room")
